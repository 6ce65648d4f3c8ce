"""An on-disk cache of embeddings, keyed by model, settings and the texts' hash, so that
evaluations and benchmarks never embed the same corpus twice.

Location: ``MRLKIT_CACHE`` or ``~/.cache/mrlkit/embeddings``.

Example::

    >>> from mrlkit.cache import cached_embed
    >>> x = cached_embed("all-MiniLM-L6-v2", ["a", "b"], kind="document")  # doctest: +SKIP
    >>> x.shape                                                            # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from .providers import Kind, get_provider
from .registry import ModelSpec, get_spec


def cache_dir() -> Path:
    """Where cached embeddings live."""
    base = os.environ.get("MRLKIT_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "mrlkit" / "embeddings"


def cache_key(spec: ModelSpec, texts: Sequence[str], kind: str, dim: int | None) -> str:
    """A key that changes when the model, its prompts or transform, the kind, the
    dimension or any text changes.

    Example::

        >>> len(cache_key(get_spec("all-MiniLM-L6-v2"), ["a"], "query", None))
        64
    """
    h = hashlib.sha256()
    h.update(json.dumps([spec.name, spec.model_id, spec.provider, spec.prompt(kind),
                         spec.transform, kind, dim]).encode())
    weights = Path(spec.model_id) / "model.safetensors"
    if spec.provider == "sentence-transformers" and weights.is_file():
        # a model folder on disk (e.g. from `mrlkit train`) can be trained again in place
        st = weights.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def cached_embed(model: str | ModelSpec, texts: Sequence[str], *, kind: Kind = "document",
                 dim: int | None = None, **provider_options: Any) -> np.ndarray:
    """Embed ``texts`` through the cache: the model is called only on a miss."""
    spec = get_spec(model)
    texts = list(texts)
    from .providers import backend_of

    backend = backend_of(spec, provider_options)
    key = cache_key(spec, texts, kind, dim)[:32]
    # vectors of a faster encoder never stand in for the model's own (torch keeps its keys)
    tag = "" if backend == "torch" else f"-{backend}"
    path = cache_dir() / f"{spec.name}-{kind}{tag}-{key}.npy"
    if path.exists():
        out = np.asarray(np.load(path))
        if out.shape[0] == len(texts):
            return out
    out = get_provider(spec, **provider_options).embed(texts, kind=kind, dim=dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # one per process: no clash
    np.save(tmp, out)
    os.replace(tmp, path)
    return out
