"""The ``chroma`` engine: embedding sets in ChromaDB, the funnel's first stage on Chroma's
HNSW, the rerank in mrlkit.

Chroma holds one dimension per collection and has no quantisation or multi-stage search,
so each set is two collections:

* ``mrlkit-s-<hash>`` — the first-stage prefix (cosine HNSW, ``ef_search`` /
  ``ef_construction`` / ``max_neighbors`` raised above Chroma's defaults, whose recall@10
  was 0.76 here), with the documents' texts and metadata; its collection metadata holds
  the set's record (model, ``truncate_dim`` — absent when native —, stored dim…);
* ``mrlkit-f-<hash>`` — every full stored vector, once, read for the rerank stages.

A funnel whose first stage is that prefix in float32 runs as Chroma query → mrlkit
rerank. Any other funnel, and every search of a set below ``exact_below`` rows, runs in
mrlkit over the stored vectors. Collection names come from a hash of the set's name, so
any set name fits Chroma's rules. Chroma's default embedding function (which downloads a
model) is never used, and telemetry is off.

Example::

    >>> store = ChromaStore("chroma:/tmp/mrlkit-chroma")           # doctest: +SKIP
    >>> store.create_set("docs", "all-MiniLM-L6-v2")               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from .. import vectors
from ..errors import InvalidInputError, StoreError
from ..funnel import Adaptive, Funnel, Stage, StageTiming
from ..transform import Transform
from . import rules
from .core import EngineDefaults, Partial, Scan, Store
from .records import (Batch, CheckReport, Document, Rebuild, SetRecord, StorageInfo,
                      ViewInfo)

EXACT_BELOW = 10_000
HNSW: Any = {"space": "cosine", "ef_search": 200, "ef_construction": 200, "max_neighbors": 32}
# the full-vector collection is never searched, only read back by id; Chroma indexes every
# collection, so its graph is kept as small as Chroma allows to spare ingest time
FULL_HNSW: Any = {"space": "cosine", "ef_construction": 8, "max_neighbors": 2}
_BATCH = 5_000  # rows per Chroma call (below its max batch size)
Collection = Any  # chromadb's Collection (imported lazily)


@dataclass(frozen=True, kw_only=True)
class ChromaRecord(SetRecord):
    first_dim: int
    count: int = 0


def _names(set_name: str, *, staging: bool = False) -> tuple[str, str]:
    """The set's (documents, full vectors) collections; ``staging``: where a rebuild
    writes before it swaps them in."""
    h = hashlib.sha1(set_name.encode()).hexdigest()[:20]
    return (f"mrlkit-t-{h}", f"mrlkit-g-{h}") if staging else \
        (f"mrlkit-s-{h}", f"mrlkit-f-{h}")


def _meta(rec: ChromaRecord) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "mrlkit": 1, "name": rec.name, "model": rec.model, "stored_dim": rec.stored_dim,
        "storage": rec.storage, "allow_non_mrl": rec.allow_non_mrl,
        "first_dim": rec.first_dim, "transform": rec.transform_json or "",
        "created_at": rec.created_at}
    if rec.truncate_dim is not None:  # absent = native (Chroma keeps no nulls)
        meta["truncate_dim"] = rec.truncate_dim
    return meta


def _record(meta: Mapping[str, Any], count: int) -> ChromaRecord:
    return ChromaRecord(name=meta["name"], model=meta["model"],
                        # stores written before 0.2 kept a native truncate_dim as 0
                        truncate_dim=meta.get("truncate_dim") or None,
                        stored_dim=meta["stored_dim"], storage=meta["storage"],
                        allow_non_mrl=bool(meta["allow_non_mrl"]),
                        created_at=meta["created_at"],
                        transform=Transform.from_json(meta.get("transform") or None),
                        first_dim=meta["first_dim"], count=count)


def _where(filters: Mapping[str, Any]) -> dict[str, Any]:
    parts = [{k: v} for k, v in filters.items()]
    return parts[0] if len(parts) == 1 else {"$and": parts}


def ChromaStore(location: str, *, exact_below: int | None = None) -> Store[ChromaRecord]:
    """A store on the chroma engine: ``chroma:PATH`` or ``chroma+http(s)://host:port``."""
    return Store(ChromaEngine(location, exact_below=exact_below))


class ChromaEngine(EngineDefaults[ChromaRecord]):
    """Embedding sets in ChromaDB (see module docs)."""

    kind = "chroma"
    index_precisions = ("float32",)

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

    def close(self) -> None:
        pass  # the client holds no connection to release

    # --- records ----------------------------------------------------------------------
    def _get(self, col: str) -> Collection | None:
        try:
            return self._client.get_collection(col, embedding_function=None)
        except Exception:  # Chroma raises NotFoundError/ValueError by version
            return None

    def _drop(self, *cols: str) -> None:
        """Delete those of ``cols`` that exist."""
        for col in cols:
            if self._get(col) is not None:
                self._client.delete_collection(col)

    def _collections(self, name: str) -> tuple[Collection, Collection]:
        docs, full = (self._get(c) for c in _names(name))
        if docs is None:
            docs, full = self._finish_swap(name)
        if docs is None or full is None:
            raise rules.not_found(name, self.location, [r.name for r in self.records()])
        return docs, full

    def record(self, name: str) -> ChromaRecord:
        docs, _ = self._collections(name)
        return _record(docs.metadata, docs.count())

    def records(self) -> list[ChromaRecord]:
        return [_record(c.metadata, c.count()) for c in self._client.list_collections()
                if c.name.startswith("mrlkit-s-") and (c.metadata or {}).get("mrlkit")]

    def count(self, rec: ChromaRecord) -> int:
        return rec.count

    rows = count

    def create(self, rec: SetRecord, first: Stage | None) -> bool:
        """The set's two collections; the first stage indexed is ``first``'s dimension
        (the one mrlkit would pick for a large set of this model)."""
        from ..funnel import default_funnel
        from ..registry import get_spec

        dim = first.dim if first else default_funnel(
            10**9, rec.stored_dim, get_spec(rec.model).supports_mrl).stages[0].dim
        with self._lock:
            if self._get(_names(rec.name)[0]) is not None:
                return False
            self._drop(*_names(rec.name))  # a half-made set of that name
            self._make(ChromaRecord(**rec.__dict__, first_dim=dim))
        return True

    def _make(self, rec: ChromaRecord, *, staging: bool = False) -> tuple[Collection,
                                                                           Collection]:
        docs_name, full_name = _names(rec.name, staging=staging)
        full = self._client.create_collection(full_name, embedding_function=None,
                                              metadata={"mrlkit": 1},
                                              configuration={"hnsw": FULL_HNSW})
        docs = self._client.create_collection(docs_name, embedding_function=None,
                                              metadata=_meta(rec), configuration={"hnsw": HNSW})
        return docs, full

    def drop(self, name: str) -> None:
        self._collections(name)
        self._drop(*_names(name), *_names(name, staging=True))

    # --- writes -----------------------------------------------------------------------
    def add(self, name: str, prepare: Callable[[ChromaRecord], Batch]) -> int:
        """The full vectors first, then the documents collection, which is what makes
        them visible; a process killed in between leaves only full vectors that nothing
        reads, overwritten by the next write of those ids."""
        with self._lock:
            rec = self.record(name)
            batch = prepare(rec)
            for i, m in zip(batch.ids, batch.metadata):
                for k, v in m.items():
                    if not isinstance(v, (str, int, float, bool)):
                        raise InvalidInputError(
                            f"document {i!r}: metadata {k!r} is {type(v).__name__}; Chroma "
                            "keeps only str, int, float and bool values")
            docs, full = self._collections(name)
            batch.accept(docs.get(ids=batch.ids, include=[])["ids"])
            self._write(docs, full, rec, batch.ids, batch.stored(rec.storage), batch.texts,
                        batch.metadata)
        return len(batch)

    def _write(self, docs: Collection, full: Collection, rec: ChromaRecord, ids: list[str],
               stored: np.ndarray, texts: list[str | None], metas: list[dict[str, Any]]
               ) -> None:
        prefix = vectors.truncate(stored, rec.first_dim)
        for s in range(0, len(ids), _BATCH):
            full.upsert(ids=ids[s:s + _BATCH], embeddings=stored[s:s + _BATCH])
        rules.crash_point("after_vectors")
        rules.crash_point("before_commit")
        for s in range(0, len(ids), _BATCH):
            docs.upsert(ids=ids[s:s + _BATCH], embeddings=prefix[s:s + _BATCH],
                        documents=texts[s:s + _BATCH],
                        metadatas=[m or None for m in metas[s:s + _BATCH]])

    def delete(self, name: str, ids: list[str]) -> int:
        with self._lock:
            docs, full = self._collections(name)
            found = docs.get(ids=ids, include=[])["ids"]
            if found:
                docs.delete(ids=found)
                full.delete(ids=found)
        return len(found)

    def rebuild(self, name: str, plan: Callable[[ChromaRecord], Rebuild]) -> None:
        with self._lock:
            rec = self.record(name)
            p = plan(rec)
            new: ChromaRecord = p.record
            self._rewrite(rec, replace(new, first_dim=min(new.first_dim, new.stored_dim)),
                          p.apply)

    def index(self, rec: ChromaRecord, first: Stage) -> list[str]:
        """Chroma indexes one dimension per collection: a first stage of another length
        moves the documents collection to it."""
        with self._lock:
            if first.dim != rec.first_dim:
                self._rewrite(rec, replace(rec, first_dim=first.dim), lambda x: x)
        return [f"Chroma HNSW collection at {first.dim} dimensions"]

    def _rewrite(self, old: ChromaRecord, new: ChromaRecord,
                 apply: Callable[[np.ndarray], np.ndarray]) -> None:
        """Write the set again through new collections (``apply`` maps its vectors),
        under staging names swapped in only when complete (see ``_finish_swap``): a
        process killed mid-way leaves either the old set or the new one, whole."""
        docs, _ = self._collections(new.name)
        ids, x = self.vectors(old)
        got = docs.get(include=["documents", "metadatas"])
        order = {i: n for n, i in enumerate(got["ids"])}
        x = apply(x) if len(x) else np.empty((0, new.stored_dim), np.float32)
        self._drop(*_names(new.name, staging=True))  # left by a rebuild killed while writing
        sdocs, sfull = self._make(new, staging=True)
        if ids:
            self._write(sdocs, sfull, new, ids, x, [got["documents"][order[i]] for i in ids],
                        [got["metadatas"][order[i]] or {} for i in ids])
        rules.crash_point("before_switch")
        self._client.delete_collection(_names(new.name)[0])  # now the staging set counts
        rules.crash_point("mid_switch")
        self._finish_swap(new.name)

    def _finish_swap(self, name: str) -> tuple[Collection | None, Collection | None]:
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

    # --- reads ------------------------------------------------------------------------
    def vectors(self, rec: ChromaRecord) -> tuple[list[str], np.ndarray]:
        docs, full = self._collections(rec.name)
        live = set(docs.get(include=[])["ids"])
        got = full.get(include=["embeddings"])
        keep = sorted((i, r) for r, i in enumerate(got["ids"]) if i in live)
        x = np.asarray(got["embeddings"], np.float32).reshape(len(got["ids"]), rec.stored_dim)
        return [i for i, _ in keep], x[[r for _, r in keep]]

    def get(self, rec: ChromaRecord, ids: list[str]) -> dict[str, Document]:
        docs, _ = self._collections(rec.name)
        got = docs.get(ids=ids, include=["documents", "metadatas"])
        return {i: Document(i, t, dict(m or {}))
                for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])}

    def scroll(self, rec: ChromaRecord, offset: int, limit: int) -> list[Document]:
        docs, _ = self._collections(rec.name)
        got = docs.get(limit=limit, offset=offset, include=["documents", "metadatas"])
        return [Document(i, t, dict(m or {}))
                for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])]

    def sample(self, rec: ChromaRecord) -> np.ndarray:
        _, x = self.vectors(rec)
        return x[rules.sample_rows(len(x))] if len(x) else x

    def _documents(self, docs: Collection, ids_all: list[str]
                   ) -> Callable[[np.ndarray], dict[int, Document]]:
        def fetch(rows: np.ndarray) -> dict[int, Document]:
            wanted = {ids_all[r]: r for r in rows.tolist()}
            if not wanted:
                return {}
            got = docs.get(ids=list(wanted), include=["documents", "metadatas"])
            return {wanted[i]: Document(i, t, dict(m or {}))
                    for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])}
        return fetch

    def native(self, rec: ChromaRecord, q: np.ndarray, funnel: Funnel,
               filters: dict[str, Any] | None, adaptive: Adaptive | None,
               n: int) -> Partial | None:
        """A float32 first stage at the indexed prefix, on Chroma's HNSW."""
        first = funnel.stages[0]
        if not (first.dim == rec.first_dim and first.precision == "float32"
                and n >= self.exact_below):
            return None
        docs, full = self._collections(rec.name)
        t0 = time.perf_counter()
        keep = first.keep or 10
        res = docs.query(query_embeddings=vectors.truncate(q, first.dim), n_results=keep,
                         where=_where(filters) if filters else None, include=["distances"])
        ms = (time.perf_counter() - t0) * 1000
        pool: dict[str, int] = {}
        rows, scores = [], []
        for ids_, dist in zip(res["ids"], res["distances"]):
            rows.append(np.asarray([pool.setdefault(i, len(pool)) for i in ids_], np.int64))
            scores.append(1.0 - np.asarray(dist, np.float32))
        timings = [StageTiming(first.dim, first.precision, keep, ms, "chroma-hnsw")]
        ids_all = list(pool)
        matrix = None
        if len(funnel.stages) > 1:
            got = full.get(ids=ids_all, include=["embeddings"]) if ids_all else \
                {"ids": [], "embeddings": []}
            where = {i: r for r, i in enumerate(got["ids"])}
            x = np.asarray(got["embeddings"], np.float32).reshape(len(got["ids"]),
                                                                  rec.stored_dim)
            matrix = x[[where[i] for i in ids_all]]
        return Partial(1, rows, scores, timings, self._documents(docs, ids_all), matrix)

    def scan(self, rec: ChromaRecord, filters: dict[str, Any] | None) -> Scan:
        """Every (filtered) stored vector, for the generic funnel in mrlkit."""
        docs, _ = self._collections(rec.name)
        ids_all, x = self.vectors(rec)
        if filters and ids_all:
            got = docs.get(ids=ids_all, include=["metadatas"])
            allowed = {i for i, m in zip(got["ids"], got["metadatas"])
                       if rules.matches(m or {}, filters)}
            keep = [r for r, i in enumerate(ids_all) if i in allowed]
            ids_all, x = [ids_all[r] for r in keep], x[keep]
        return Scan(len(ids_all), self._documents(docs, ids_all), matrix=x)

    def check(self, rec: ChromaRecord, report: CheckReport, repair: bool) -> bool:
        report.delegated = "storage integrity is Chroma's own (its files or server)"
        return False  # the core verifies every stored vector

    def storage(self, rec: ChromaRecord, count: int) -> StorageInfo:
        """Estimated bytes: Chroma does not report sizes per collection."""
        per = vectors.bytes_per_vector(rec.stored_dim, "float32")
        return StorageInfo(rec.info(count), count, 0, count * per, per,
                           [ViewInfo(rec.first_dim, "float32",
                                     count * vectors.bytes_per_vector(rec.first_dim, "float32"),
                                     "Chroma HNSW collection (estimated)")],
                           self.location, {"first_stage_dim": rec.first_dim})
