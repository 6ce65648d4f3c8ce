"""OpenAI and OpenAI-compatible servers (TEI, vLLM, LM Studio): ``POST {base}/embeddings``.

Sends ``model``, ``input`` (batched by count), ``dimensions`` when the model shortens
server-side, and ``encoding_format``. Key from ``OPENAI_API_KEY``, base URL from
``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``). The returned dimension is
checked against what was asked.

Example::

    >>> OpenAIProvider(get_spec("text-embedding-3-small")).embed(["hi"], dim=256)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import os
from typing import Any
from collections.abc import Sequence

import numpy as np

from .. import vectors
from ..errors import BadResponseError, DimensionError
from ..registry import ModelSpec, get_spec  # noqa: F401
from ._http import JSONClient
from .base import Kind, batches, check_texts, with_prompts

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _decode(item: object, fmt: str) -> list[float] | np.ndarray:
    emb = item.get("embedding") if isinstance(item, dict) else None
    if fmt == "base64" and isinstance(emb, str):
        try:
            return np.frombuffer(base64.b64decode(emb), dtype="<f4")
        except ValueError:
            raise BadResponseError("embedding is not valid base64 float32") from None
    if not isinstance(emb, list):
        raise BadResponseError("response item has no 'embedding' list; expected "
                               "{\"data\": [{\"embedding\": [...], \"index\": i}]}")
    return emb


class OpenAIProvider:
    """Provider for the OpenAI embeddings API and servers that speak it."""

    def __init__(self, spec: ModelSpec, *, base_url: str | None = None,
                 api_key: str | None = None, batch_size: int = 512,
                 encoding_format: str = "float", timeout: float = 60.0,
                 max_retries: int = 5, backoff: float = 0.5) -> None:
        if encoding_format not in ("float", "base64"):
            raise ValueError("encoding_format must be 'float' or 'base64'")
        self.spec = spec
        self.batch_size = batch_size
        self.encoding_format = encoding_format
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.client = JSONClient(base, service="OpenAI embeddings API", headers=headers,
                                 timeout=timeout, max_retries=max_retries, backoff=backoff)

    def embed(self, texts: Sequence[str], *, kind: Kind = "document",
              dim: int | None = None) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.empty((0, dim or self.spec.native_dim), np.float32)
        server_dim = dim if (self.spec.server_side_dims and dim is not None
                             and dim != self.spec.native_dim) else None
        expected = server_dim or self.spec.native_dim
        parts = []
        for batch in batches(with_prompts(self.spec, texts, kind), self.batch_size):
            payload: dict[str, Any] = {"model": self.spec.model_id, "input": batch,
                       "encoding_format": self.encoding_format}
            if server_dim is not None:
                payload["dimensions"] = server_dim
            body = self.client.post("/embeddings", payload)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list) or len(data) != len(batch):
                raise BadResponseError(
                    f"expected {len(batch)} embeddings in 'data', got "
                    f"{'none' if data is None else len(data)}")
            # the API documents an 'index' per item; order by it, not by arrival
            if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
                data = sorted(data, key=lambda d: d["index"])
            rows = [_decode(d, self.encoding_format) for d in data]
            lengths = {len(r) for r in rows}
            if lengths != {expected}:
                got = ", ".join(str(n) for n in sorted(lengths))
                raise DimensionError(f"the server returned {got}-d vectors for "
                                     f"{self.spec.name}; expected {expected}")
            try:
                raw = np.asarray(rows, dtype=np.float32)
            except (TypeError, ValueError):
                raise BadResponseError("embeddings are not lists of numbers") from None
            parts.append(vectors.prepare(raw, dim, self.spec.transform))
        return np.concatenate(parts)
