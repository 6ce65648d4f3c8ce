"""Ollama: ``POST {host}/api/embed`` with ``{"model", "input": [...]}``.

Host from ``OLLAMA_HOST`` (default ``http://127.0.0.1:11434``). Ollama returns full
vectors; the model's transform, truncation and re-normalisation happen here, client-side.

Example::

    >>> OllamaProvider(get_spec("nomic-embed-text")).embed(["hi"], dim=256)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .. import vectors
from ..errors import BadResponseError, DimensionError
from ..registry import ModelSpec, get_spec  # noqa: F401
from ._http import JSONClient
from .base import Kind, batches, check_texts, with_prompts

DEFAULT_HOST = "http://127.0.0.1:11434"


def _host(host: str | None) -> str:
    host = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    # OLLAMA_HOST is often given as host:port without a scheme
    return host if "://" in host else f"http://{host}"


class OllamaProvider:
    """Provider for models served by Ollama."""

    def __init__(self, spec: ModelSpec, *, host: str | None = None, batch_size: int = 256,
                 timeout: float = 120.0, max_retries: int = 5, backoff: float = 0.5) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.client = JSONClient(_host(host), service="Ollama", timeout=timeout,
                                 max_retries=max_retries, backoff=backoff)

    def embed(self, texts: Sequence[str], *, kind: Kind = "document",
              dim: int | None = None) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.empty((0, dim or self.spec.native_dim), np.float32)
        parts = []
        for batch in batches(with_prompts(self.spec, texts, kind), self.batch_size):
            body = self.client.post("/api/embed", {"model": self.spec.model_id,
                                                   "input": batch})
            embeddings = body.get("embeddings") if isinstance(body, dict) else None
            if not isinstance(embeddings, list) or len(embeddings) != len(batch):
                raise BadResponseError(
                    f"Ollama answered without {len(batch)} embeddings (got "
                    f"{'none' if embeddings is None else len(embeddings)}); "
                    "expected {\"embeddings\": [[...], ...]}")
            try:
                raw = np.asarray(embeddings, dtype=np.float32)
            except (TypeError, ValueError):
                raise BadResponseError("Ollama's embeddings are not lists of numbers") from None
            if raw.ndim != 2 or raw.shape[1] != self.spec.native_dim:
                raise DimensionError(f"Ollama returned {raw.shape[-1] if raw.ndim else 0}-d "
                                     f"vectors for {self.spec.name}; expected "
                                     f"{self.spec.native_dim}")
            parts.append(vectors.prepare(raw, dim, self.spec.transform))
        return np.concatenate(parts)
