"""How errors answer: every :mod:`mrlkit.errors` error, HTTP error, validation error and
crash as one JSON body (OpenAI's shape) with a status that says what to do.

Example::

    >>> STATUS[0][1]
    404
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from .. import errors
from .guard import ApiError, error_body

log = logging.getLogger("mrlkit.serve")

STATUS = [(errors.SetNotFoundError, 404, "not_found_error", "set_not_found"),
          (errors.UnknownModelError, 404, "invalid_request_error", "model_not_found"),
          (errors.SetExistsError, 409, "invalid_request_error", "set_exists"),
          (errors.ReembedRequiredError, 409, "invalid_request_error", "reembed_required"),
          (errors.DimensionError, 400, "invalid_request_error", "invalid_dimensions"),
          (errors.InvalidInputError, 400, "invalid_request_error", None),
          (errors.InvalidVectorError, 400, "invalid_request_error", None),
          (errors.StoreError, 503, "server_error", "store_error"),
          (errors.ProviderError, 502, "server_error", "provider_error"),
          (errors.MrlkitError, 400, "invalid_request_error", None)]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), exc.type, exc.param, exc.code),
                            exc.status, headers=exc.headers)

    @app.exception_handler(errors.MrlkitError)
    async def mrlkit_error(request: Request, exc: errors.MrlkitError) -> JSONResponse:
        for kind, status, etype, code in STATUS:
            if isinstance(exc, kind):
                return JSONResponse(error_body(str(exc), etype, None, code), status)
        raise AssertionError("unreachable: MrlkitError is the last row")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        etype = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only one route's
            allowed = {m for r in request.app.router.routes
                       if isinstance(r, APIRoute) and r.matches(request.scope)[0] != Match.NONE
                       for m in r.methods or ()}
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse(error_body(str(exc.detail), etype, None, None), exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = str(first.get("msg", "invalid"))
        if "unicode string" in msg:  # pydantic's words for a lone surrogate
            msg = "holds a lone surrogate: text must be valid Unicode without NUL"
        elif first.get("type") == "string_pattern_mismatch" and \
                "x00" in str(first.get("ctx", {}).get("pattern", "")):
            got = first.get("input")
            msg = ("holds a NUL character (U+0000): text must be valid Unicode without NUL"
                   if isinstance(got, str) and "\x00" in got else
                   "is empty or only whitespace: give a text to embed")
        return JSONResponse(error_body(f"{where or 'request'}: {msg}",
                                       "invalid_request_error", where or None, None), 400)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error (logged on the server)",
                                       "server_error", None, "internal_error"), 500)
