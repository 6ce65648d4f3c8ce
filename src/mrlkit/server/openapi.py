"""The OpenAPI document states this server's own limits.

Example::

    >>> document_limits.__name__
    'document_limits'
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .config import ServerConfig


def document_limits(app: FastAPI, config: ServerConfig) -> None:
    """The OpenAPI document states this server's own limits (``--max-k``, ``--max-inputs``,
    ``--max-chars``…), so that a request the document allows is one the server takes."""
    made = app.openapi
    lim = config.limits

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = made()
        comps = schema["components"]["schemas"]

        def texts(prop: dict[str, Any], most: int) -> None:
            for alt in prop.get("anyOf", [prop]):
                if alt.get("type") == "string":
                    alt["maxLength"] = lim.chars
                elif alt.get("type") == "array":
                    alt["maxItems"] = most
                    alt["items"]["maxLength"] = lim.chars
        texts(comps["EmbeddingsRequest"]["properties"]["input"], lim.inputs)
        search = comps["SearchRequest"]["properties"]
        texts(search["query"], min(lim.queries, lim.inputs))
        search["k"]["maximum"] = lim.k
        for alt in search["vector"]["anyOf"]:
            if alt["items"].get("type") == "array":
                alt["maxItems"] = lim.queries
        comps["AddDocuments"]["properties"]["documents"]["maxItems"] = lim.documents
        comps["DeleteDocuments"]["properties"]["ids"]["maxItems"] = lim.documents
        for alt in comps["DocumentIn"]["properties"]["text"]["anyOf"]:
            if alt.get("type") == "string":
                alt["maxLength"] = lim.chars
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
