"""An on-disk cache of embeddings, keyed by model, settings and each text's hash, so that
evaluations, benchmarks and ``mrlkit add`` never embed the same text twice: a corpus
added to a set is not embedded again by ``eval`` or ``advise`` on the same texts.

Two layers: one file per whole list of texts (one read for a corpus seen before), and
per text a row in a SQLite file per model and settings (``texts/*.sqlite``), which any
list containing that text reads. Vectors are kept at the model's native dimension (a
prefix is cut from them, as the provider would); a model the server cuts itself
(``server_side_dims``) is kept per dimension.

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
import sqlite3
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from . import vectors
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
                 dim: int | None = None, whole: bool = True,
                 **provider_options: Any) -> np.ndarray:
    """Embed ``texts`` through the cache: the model is called only for texts it has
    not seen (``whole``: also keep the list's own file, for a corpus read again whole)."""
    spec = get_spec(model)
    texts = list(texts)
    from .providers import backend_of

    backend = backend_of(spec, provider_options)
    # vectors of a faster encoder never stand in for the model's own (torch keeps its keys)
    tag = "" if backend == "torch" else f"-{backend}"
    path = cache_dir() / f"{spec.name}-{kind}{tag}-{cache_key(spec, texts, kind, dim)[:32]}.npy"
    try:  # a damaged file is a miss
        out = np.asarray(np.load(path)) if path.exists() else None
    except (OSError, ValueError):
        out = None
    if out is not None and out.shape[0] == len(texts):
        return out
    kept_dim = dim if spec.server_side_dims else None  # per text: native, cut on the way out
    out = _per_text(spec, texts, kind, tag, kept_dim, provider_options)
    if dim is not None and kept_dim is None and dim != out.shape[1]:
        out = vectors.truncate(out, dim)
    if whole:
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # one per process: no clash
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp, out)
            os.replace(tmp, path)
        except OSError:  # a cache that cannot be written costs a later call, nothing else
            if tmp.parent.is_dir():
                tmp.unlink(missing_ok=True)
    return out


def _per_text(spec: ModelSpec, texts: list[str], kind: Kind, tag: str, dim: int | None,
              options: dict[str, Any]) -> np.ndarray:
    """Each text's vector from the per-text file, the misses (each distinct text once)
    embedded in one call. A row of the wrong size (a damaged file) is a miss."""
    db_path = (cache_dir() / "texts" /
               f"{spec.name}-{kind}{tag}-{cache_key(spec, [], kind, dim)[:16]}.sqlite")
    width = spec.native_dim if dim is None else dim
    keys = [hashlib.sha256(t.encode()).digest() for t in texts]
    wanted = list(dict.fromkeys(keys))
    found: dict[bytes, np.ndarray] = {}
    db = None
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(db_path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS v (h BLOB PRIMARY KEY, x BLOB NOT NULL)")
        for start in range(0, len(wanted), 900):
            chunk = wanted[start:start + 900]
            for h, x in db.execute(f"SELECT h, x FROM v WHERE h IN "
                                   f"({','.join('?' * len(chunk))})", chunk):
                if isinstance(x, bytes) and len(x) == 4 * width:
                    found[h] = np.frombuffer(x, np.float32)
    except (OSError, sqlite3.Error):  # a cache that cannot be read is a miss, not an error
        if db is not None:
            db.close()
        db = None
    text_of = dict(zip(keys, texts))
    miss = [h for h in wanted if h not in found]
    if miss:
        got = np.asarray(get_provider(spec, **options).embed(
            [text_of[h] for h in miss], kind=kind, dim=dim), np.float32)
        fresh = dict(zip(miss, got))
        found.update(fresh)
        if db is not None:
            try:
                db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?)",
                               [(h, x.tobytes()) for h, x in fresh.items()])
            except sqlite3.Error:
                pass
    if db is not None:
        db.close()
    if not texts:
        return np.empty((0, width), np.float32)
    return np.stack([found[h] for h in keys])
