"""The ``chroma`` backend: embedding sets in ChromaDB, the funnel's first stage on Chroma's
HNSW, the rerank in mrlkit.

Chroma holds one dimension per collection and has no quantisation or multi-stage search,
so each set is two collections:

* ``mrlkit-s-<hash>`` — the first-stage prefix (cosine HNSW, ``ef_search`` /
  ``ef_construction`` / ``max_neighbors`` raised above Chroma's defaults, whose recall@10
  was 0.76 here), with the documents' texts and metadata; its collection metadata holds
  the set's description (model, ``truncate_dim``, stored dim…);
* ``mrlkit-f-<hash>`` — every full stored vector, once, read for the rerank stages.

A funnel whose first stage is that prefix in float32 runs as Chroma query → mrlkit
rerank. Any other funnel, and every search of a set below ``exact_below`` rows, runs in
mrlkit over the stored vectors (exact, like the embedded store). Collection names come
from a hash of the set's name, so any set name fits Chroma's rules. Chroma's default
embedding function (which downloads a model) is never used, and telemetry is off.

Example::

    >>> store = ChromaStore("chroma:/tmp/mrlkit-chroma")           # doctest: +SKIP
    >>> store.create_set("docs", "all-MiniLM-L6-v2")               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from .. import vectors
from ..errors import (InvalidInputError, ReembedRequiredError, SetExistsError,
                      SetNotFoundError, StoreError)
from ..funnel import Funnel, MatrixSource, default_funnel, execute, rerank
from ..registry import get_spec, validate_dim
from ..vectors import Int8Calibration
from .base import (STORAGE_PRECISIONS, Document, Hit, SearchResult, SetInfo, StageTiming,
                   apply_transform, check_batch, compose_transform, crash_point,
                   refuse_adapted_reindex, transform_fields)

EXACT_BELOW = 10_000
HNSW = {"space": "cosine", "ef_search": 200, "ef_construction": 200, "max_neighbors": 32}
# the full-vector collection is never searched, only read back by id; Chroma indexes every
# collection, so its graph is kept as small as Chroma allows to spare ingest time
FULL_HNSW = {"space": "cosine", "ef_construction": 8, "max_neighbors": 2}
_BATCH = 5_000  # rows per Chroma call (below its max batch size)


def _names(set_name: str, *, staging: bool = False) -> tuple[str, str]:
    """The set's (documents, full vectors) collections; ``staging``: where a rebuild
    writes before it swaps them in."""
    h = hashlib.sha1(set_name.encode()).hexdigest()[:20]
    return (f"mrlkit-t-{h}", f"mrlkit-g-{h}") if staging else \
        (f"mrlkit-s-{h}", f"mrlkit-f-{h}")


def _where(filters: Mapping[str, Any]) -> dict:
    parts = [{str(k): v} for k, v in filters.items()]
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _check_metadata(ids: Sequence[str], metas: Sequence[dict]) -> None:
    for i, m in zip(ids, metas):
        for k, v in m.items():
            if not isinstance(v, (str, int, float, bool)):
                raise InvalidInputError(
                    f"document {i!r}: metadata {k!r} is {type(v).__name__}; Chroma keeps "
                    "only str, int, float and bool values")


class ChromaStore:
    """Embedding sets in ChromaDB (see module docs): ``chroma:PATH`` opens a persistent
    client, ``chroma+http://host:port`` a server."""

    def __init__(self, location: str, *, exact_below: int | None = None) -> None:
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError:
            raise StoreError("the chroma backend needs chromadb: pip install 'mrlkit[chroma]'"
                             ) from None
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        self.location = location
        self.exact_below = EXACT_BELOW if exact_below is None else exact_below
        settings = Settings(anonymized_telemetry=False)
        try:
            if location.startswith("chroma+http"):
                url = location.split("+", 1)[1]
                host, _, port = url.split("://", 1)[1].rstrip("/").partition(":")
                self._client = chromadb.HttpClient(host=host, port=int(port or 8000),
                                                   ssl=url.startswith("https"),
                                                   settings=settings)
            else:
                path = location.split(":", 1)[1]
                if not path:
                    raise InvalidInputError("chroma: needs a folder, e.g. chroma:./chroma-data")
                self._client = chromadb.PersistentClient(path=os.path.expanduser(path),
                                                         settings=settings)
        except (ValueError, OSError) as exc:
            raise StoreError(f"cannot open Chroma at {location}: {exc}") from None
        self._lock = threading.RLock()
        self._calibrations: dict[tuple, Int8Calibration] = {}

    def close(self) -> None:
        pass  # the client holds no connection to release

    # --- catalogue --------------------------------------------------------------------
    def _get(self, col: str):
        try:
            return self._client.get_collection(col, embedding_function=None)
        except Exception:  # Chroma raises NotFoundError/ValueError by version
            return None

    def _drop(self, *cols: str) -> None:
        """Delete those of ``cols`` that exist."""
        for col in cols:
            if self._get(col) is not None:
                self._client.delete_collection(col)

    def _collections(self, name: str):
        docs, full = (self._get(c) for c in _names(name))
        if docs is None:
            docs, full = self._finish_swap(name)
        if docs is None or full is None:
            known = sorted(s.name for s in self.list_sets())
            raise SetNotFoundError(f"no embedding set named {name!r} in {self.location}"
                                   + (f"; sets: {', '.join(known)}" if known else
                                      "; create one with `mrlkit sets create`")) from None
        return docs, full

    @staticmethod
    def _info(meta: Mapping[str, Any], count: int) -> SetInfo:
        return SetInfo(name=meta["name"], model=meta["model"],
                       truncate_dim=meta["truncate_dim"] or None,
                       stored_dim=meta["stored_dim"], storage=meta["storage"], count=count,
                       created_at=meta["created_at"], allow_non_mrl=meta["allow_non_mrl"],
                       **transform_fields(meta.get("transform") or None))

    def create_set(self, name: str, model: str, truncate_dim: int | None = None, *,
                   storage: str = "float32", allow_non_mrl: bool = False,
                   index: bool = True) -> SetInfo:
        """Create the set's two collections; the first stage indexed is the one mrlkit
        would pick for a large set of this model (``index`` is kept for the protocol)."""
        if not name or not name.strip():
            raise InvalidInputError(f"bad set name {name!r}: use a non-empty name")
        if storage not in STORAGE_PRECISIONS:
            raise InvalidInputError(f"storage must be float32 or float16, not {storage!r}")
        spec = get_spec(model)
        dim = validate_dim(spec, truncate_dim, allow_non_mrl=allow_non_mrl)
        with self._lock:
            if any(s.name == name for s in self.list_sets()):
                raise SetExistsError(f"embedding set {name!r} exists already in "
                                     f"{self.location}")
            first = default_funnel(10**9, dim, spec.supports_mrl).stages[0].dim
            meta = {"mrlkit": 1, "name": name, "model": spec.name,
                    "truncate_dim": 0 if truncate_dim in (None, spec.native_dim) else dim,
                    "stored_dim": dim, "storage": storage, "allow_non_mrl": allow_non_mrl,
                    "first_dim": first, "transform": "",
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self._make(name, meta)
        return self.get_set(name)

    def _make(self, name: str, meta: dict, *, staging: bool = False):
        docs_name, full_name = _names(name, staging=staging)
        full = self._client.create_collection(full_name, embedding_function=None,
                                              metadata={"mrlkit": 1},
                                              configuration={"hnsw": FULL_HNSW})
        docs = self._client.create_collection(docs_name, embedding_function=None,
                                              metadata=meta, configuration={"hnsw": HNSW})
        return docs, full

    def list_sets(self) -> list[SetInfo]:
        out = []
        for col in self._client.list_collections():
            if col.name.startswith("mrlkit-s-") and (col.metadata or {}).get("mrlkit"):
                out.append(self._info(col.metadata, col.count()))
        return sorted(out, key=lambda s: s.name)

    def get_set(self, name: str) -> SetInfo:
        docs, _ = self._collections(name)
        return self._info(docs.metadata, docs.count())

    def drop_set(self, name: str) -> None:
        self._collections(name)
        self._drop(*_names(name), *_names(name, staging=True))

    # --- writes ---------------------------------------------------------------------
    def add(self, name: str, ids: Sequence[str], embeddings: np.ndarray,
            texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
            upsert: bool = False) -> int:
        """Add a batch: the full vectors first, then the documents collection, which is
        what makes them visible; a process killed in between leaves only full vectors
        that nothing reads, overwritten by the next write of those ids."""
        with self._lock:
            docs, full = self._collections(name)
            meta = docs.metadata
            ids, emb, texts, metas = check_batch(name, meta["stored_dim"], ids, embeddings,
                                                 texts, metadata,
                                                 transform=meta.get("transform") or None)
            _check_metadata(ids, metas)
            existing = set(docs.get(ids=ids, include=[])["ids"])
            if existing and not upsert:
                raise InvalidInputError(f"ids already in set {name!r}: {sorted(existing)[:5]}"
                                        "; use upsert to replace them")
            stored = emb.astype(np.float16).astype(np.float32) \
                if meta["storage"] == "float16" else emb
            self._write(docs, full, meta, ids, stored, texts, metas)
        return len(ids)

    def _write(self, docs, full, meta, ids, stored, texts, metas) -> None:
        prefix = vectors.truncate(stored, meta["first_dim"])
        for s in range(0, len(ids), _BATCH):
            full.upsert(ids=ids[s:s + _BATCH], embeddings=stored[s:s + _BATCH])
        crash_point("after_vectors")
        crash_point("before_commit")
        for s in range(0, len(ids), _BATCH):
            docs.upsert(ids=ids[s:s + _BATCH], embeddings=prefix[s:s + _BATCH],
                        documents=texts[s:s + _BATCH],
                        metadatas=[m or None for m in metas[s:s + _BATCH]])

    def delete(self, name: str, ids: Sequence[str]) -> int:
        ids = [str(i) for i in ids]
        with self._lock:
            docs, full = self._collections(name)
            found = docs.get(ids=ids, include=[])["ids"]
            if found:
                docs.delete(ids=found)
                full.delete(ids=found)
        return len(found)

    def _rebuild(self, name: str, meta: dict, transform=None, dim: int | None = None) -> None:
        """Write the set again through new collections: at a shorter prefix (reindex),
        another first-stage dimension (index) or transformed (adapt). They are written
        under staging names and swapped in only when complete (see ``_finish_swap``): a
        process killed mid-way leaves either the old set or the new one, whole."""
        docs, full = self._collections(name)
        got_full = full.get(include=["embeddings"])
        x = np.asarray(got_full["embeddings"], np.float32).reshape(
            len(got_full["ids"]), -1)
        order = {i: r for r, i in enumerate(got_full["ids"])}
        got = docs.get(include=["documents", "metadatas"])
        live = [order[i] for i in got["ids"]]
        x = x[live] if live else np.empty((0, x.shape[1]), np.float32)
        if transform is not None:
            x = transform.apply(x)
        if dim is not None:
            x = vectors.truncate(x, dim)
        self._drop(*_names(name, staging=True))  # left by a rebuild killed while writing
        docs, full = self._make(name, meta, staging=True)
        if len(x):
            self._write(docs, full, meta, list(got["ids"]), x, list(got["documents"]),
                        [m or {} for m in got["metadatas"]])
        crash_point("before_switch")
        self._client.delete_collection(_names(name)[0])  # from here the staging set counts
        crash_point("mid_switch")
        self._finish_swap(name)
        self._calibrations.clear()

    def _finish_swap(self, name: str):
        """Move complete staging collections in place of the set's (none when the set's
        documents collection exists: then the staging ones are an unfinished write)."""
        final, staged = _names(name), _names(name, staging=True)
        docs = self._get(staged[0])
        if docs is None or self._get(final[0]) is not None:
            return None, None
        full = self._get(staged[1])
        if full is not None:
            self._drop(final[1])
            full.modify(name=final[1])
        docs.modify(name=final[0])
        return self._get(final[0]), self._get(final[1])

    def reindex(self, name: str, dim: int, *, allow_non_mrl: bool = False) -> SetInfo:
        with self._lock:
            docs, _ = self._collections(name)
            meta = dict(docs.metadata)
            spec = get_spec(meta["model"])
            if dim > meta["stored_dim"]:
                raise ReembedRequiredError(
                    f"set {name!r} stores {meta['stored_dim']} dimensions; {dim} needs the "
                    "texts embedded again (create a new set and index it)")
            refuse_adapted_reindex(name, meta.get("transform") or None)
            allow = allow_non_mrl or meta["allow_non_mrl"]
            dim = validate_dim(spec, dim, allow_non_mrl=allow)
            meta.update(stored_dim=dim, truncate_dim=0 if dim == spec.native_dim else dim,
                        allow_non_mrl=allow, first_dim=min(meta["first_dim"], dim))
            self._rebuild(name, meta, dim=dim)
        return self.get_set(name)

    def index(self, name: str, funnel) -> list[str]:
        """Chroma indexes one dimension per collection: a funnel whose first stage is a
        float32 prefix of another length moves the documents collection to it."""
        with self._lock:
            docs, _ = self._collections(name)
            meta = dict(docs.metadata)
            first = Funnel(funnel.stages[:1]).check(meta["stored_dim"], 1).stages[0]
            if first.precision != "float32":
                raise InvalidInputError(
                    "Chroma has no quantised index: a first stage in "
                    f"{first.precision} runs in mrlkit over the stored vectors; index a "
                    "float32 prefix, e.g. 128:float32:200")
            if first.dim != meta["first_dim"]:
                meta["first_dim"] = first.dim
                self._rebuild(name, meta)
        return [f"Chroma HNSW collection at {first.dim} dimensions"]

    def adapt(self, name: str, transform) -> SetInfo:
        with self._lock:
            docs, _ = self._collections(name)
            meta = dict(docs.metadata)
            total = compose_transform(meta.get("transform") or None, transform,
                                      meta["stored_dim"])
            meta["transform"] = json.dumps(total)
            self._rebuild(name, meta, transform=transform)
        return self.get_set(name)

    def vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        docs, full = self._collections(name)
        live = set(docs.get(include=[])["ids"])
        got = full.get(include=["embeddings"])
        keep = sorted((i, r) for r, i in enumerate(got["ids"]) if i in live)
        x = np.asarray(got["embeddings"], np.float32).reshape(len(got["ids"]), -1)
        return [i for i, _ in keep], x[[r for _, r in keep]]

    # --- reads ----------------------------------------------------------------------
    def get(self, name: str, ids: Sequence[str]) -> list[Document | None]:
        ids = [str(i) for i in ids]
        docs, _ = self._collections(name)
        got = docs.get(ids=ids, include=["documents", "metadatas"])
        found = {i: Document(i, t, m or {})
                 for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])}
        return [found.get(i) for i in ids]

    def calibration(self, name: str, dim: int) -> Int8Calibration:
        key = (name, dim)
        if key not in self._calibrations:
            _, x = self.vectors(name)
            if not len(x):
                raise StoreError("cannot calibrate int8 on an empty set")
            sample = x[np.linspace(0, len(x) - 1, min(len(x), 20_000)).astype(int)]
            self._calibrations[key] = Int8Calibration.fit(vectors.truncate(sample, dim))
        return self._calibrations[key]

    def search(self, name: str, queries: np.ndarray, *, k: int = 10, funnel=None,
               filters: Mapping[str, Any] | None = None, adaptive=None) -> SearchResult:
        docs, full = self._collections(name)
        meta = docs.metadata
        stored_dim, n = meta["stored_dim"], docs.count()
        q = vectors.as_matrix(queries, name="queries")
        if q.shape[1] != stored_dim:
            raise InvalidInputError(f"set {name!r} expects {stored_dim}-d queries, "
                                    f"not {q.shape[1]}")
        q = apply_transform(meta.get("transform") or None, q)
        if funnel is None:
            funnel = default_funnel(n, stored_dim, get_spec(meta["model"]).supports_mrl
                                    or bool(meta.get("transform")), k)
        funnel = funnel.check(stored_dim, k)
        if n == 0:
            return SearchResult([[] for _ in q], [], [[] for _ in q])
        first = funnel.stages[0]
        native = (first.dim == meta["first_dim"] and first.precision == "float32"
                  and n >= self.exact_below)
        if not native:
            return self._in_mrlkit(name, docs, q, funnel, filters, adaptive)
        t0 = time.perf_counter()
        keep = first.keep or k
        res = docs.query(query_embeddings=vectors.truncate(q, first.dim), n_results=keep,
                         where=_where(filters) if filters else None, include=["distances"])
        ms = (time.perf_counter() - t0) * 1000
        pool: dict[str, int] = {}
        rows, scores = [], []
        for ids_, dist in zip(res["ids"], res["distances"]):
            rows.append(np.asarray([pool.setdefault(i, len(pool)) for i in ids_], np.int64))
            scores.append(1.0 - np.asarray(dist, np.float32))
        timings = [StageTiming(first.dim, first.precision, keep, ms, "chroma-hnsw")]
        dims = [[first.dim] for _ in q]
        ids_all = list(pool)
        if len(funnel.stages) > 1 and ids_all:
            got = full.get(ids=ids_all, include=["embeddings"])
            where = {i: r for r, i in enumerate(got["ids"])}
            x = np.asarray(got["embeddings"], np.float32).reshape(len(got["ids"]), -1)
            source = MatrixSource(x[[where[i] for i in ids_all]],
                                  lambda d: self.calibration(name, d))
            rows, scores, more, more_dims = rerank(source, name, q, funnel.stages[1:], rows,
                                                   scores, final_k=k, adaptive=adaptive)
            timings += more
            dims = [a + b for a, b in zip(dims, more_dims)]
        return SearchResult(self._hits(docs, ids_all, rows, scores), timings, dims)

    def _in_mrlkit(self, name, docs, q, funnel, filters, adaptive) -> SearchResult:
        """The generic funnel over every (filtered) stored vector, exact like the
        embedded store's."""
        ids_all, x = self.vectors(name)
        if filters:
            got = docs.get(ids=ids_all, include=["metadatas"])
            allowed = {i for i, m in zip(got["ids"], got["metadatas"])
                       if all(k in (m or {}) and (m or {})[k] == v for k, v in filters.items())}
            keep = [r for r, i in enumerate(ids_all) if i in allowed]
            ids_all, x = [ids_all[r] for r in keep], x[keep]
        if not ids_all:
            return SearchResult([[] for _ in q], [], [[] for _ in q])
        source = MatrixSource(x, lambda d: self.calibration(name, d))
        rows, scores, timings, dims = execute(source, name, q, funnel, n_rows=len(ids_all),
                                              live=None, candidates=None, adaptive=adaptive)
        return SearchResult(self._hits(docs, ids_all, rows, scores), timings, dims)

    @staticmethod
    def _hits(docs, ids_all, rows, scores) -> list[list[Hit]]:
        wanted = sorted({ids_all[r] for rr in rows for r in rr})
        got = docs.get(ids=wanted, include=["documents", "metadatas"]) if wanted else \
            {"ids": [], "documents": [], "metadatas": []}
        found = {i: (t, m or {}) for i, t, m in zip(got["ids"], got["documents"],
                                                     got["metadatas"])}
        return [[Hit(ids_all[r], float(s), *found[ids_all[r]]) for r, s in zip(rr, ss)
                 if ids_all[r] in found] for rr, ss in zip(rows, scores)]

    def info(self, name: str) -> dict[str, Any]:
        """Count and estimated bytes (Chroma does not report sizes per collection)."""
        docs, _ = self._collections(name)
        meta, n = docs.metadata, docs.count()
        info = self._info(meta, n)
        return {**info.as_dict(), "rows": n, "dead_rows": 0,
                "stored_bytes": n * vectors.bytes_per_vector(meta["stored_dim"], "float32"),
                "bytes_per_vector": vectors.bytes_per_vector(meta["stored_dim"], "float32"),
                "views": [{"dim": meta["first_dim"], "precision": "float32",
                           "kind": "Chroma HNSW collection (estimated)",
                           "bytes": n * vectors.bytes_per_vector(meta["first_dim"],
                                                                 "float32")}],
                "first_stage_dim": meta["first_dim"], "location": self.location}
