"""The ``chroma`` engine: embedding sets in ChromaDB, the funnel's first stage on Chroma's
HNSW, the rerank in mrlkit.

Chroma holds one dimension per collection and has no quantisation or multi-stage search,
so each set is

* ``mrlkit-s-<hash>`` — the first-stage prefix (cosine HNSW, ``ef_search`` /
  ``ef_construction`` / ``max_neighbors`` raised above Chroma's defaults, whose recall@10
  was 0.76 here), with the documents' texts and metadata; its collection metadata holds
  the set's record (model, ``truncate_dim`` — absent when native —, stored dim…);
* its full stored vectors, once, read for the rerank stages (:mod:`.chroma_vectors`):
  beside a persistent client, a file under ``PATH/mrlkit-vectors/`` with the id of each
  row beside it; on a server, a collection ``mrlkit-f-<hash>``.

A funnel whose first stage is that prefix in float32 runs as one Chroma query → mrlkit
rerank. Any other funnel, and every search of a set below the planner's ``native_from``
rows, runs in mrlkit over the stored vectors. Collection names come from a hash of the
set's name, so any set name fits Chroma's rules. Chroma's default embedding function
(which downloads a model) is never used, and telemetry is off.

Example::

    >>> store = ChromaStore("chroma:/tmp/mrlkit-chroma")           # doctest: +SKIP
    >>> store.create_set("docs", "all-MiniLM-L6-v2")               # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from .. import vectors
from ..errors import InvalidInputError, StoreError
from ..text import masked
from ..funnel import Stage, StageTiming
from . import faults
from .chroma_vectors import CollectionVectors, FileVectors
from .core import Store
from .seam import Calibrate, EngineDefaults, Partial, Rewrites, Scan
from .chroma_records import ChromaRecord, _meta, _names, _record
from .plan import Capabilities, Plan
from .records import (Batch, CheckReport, Document, SetRecord, StorageInfo,
                      not_found,
                      ViewInfo)

HNSW: Any = {"space": "cosine", "ef_search": 200, "ef_construction": 200, "max_neighbors": 32}
# the full-vector collection is never searched, only read back by id; Chroma indexes every
# collection, so its graph is kept as small as Chroma allows to spare ingest time
FULL_HNSW: Any = {"space": "cosine", "ef_construction": 8, "max_neighbors": 2}
_BATCH = 5_000  # rows per Chroma call (below its max batch size)
Collection = Any  # chromadb's Collection (imported lazily)


def _where(filters: Mapping[str, Any]) -> dict[str, Any]:
    parts = [{k: v} for k, v in filters.items()]
    return parts[0] if len(parts) == 1 else {"$and": parts}


def ChromaStore(location: str, *, native_from: int | str | None = None
                ) -> Store[ChromaRecord]:
    """A store on the chroma engine: ``chroma:PATH`` or ``chroma+http(s)://host:port``."""
    return Store(ChromaEngine(location), native_from=native_from)


class ChromaEngine(Rewrites[ChromaRecord], EngineDefaults[ChromaRecord]):
    """Embedding sets in ChromaDB (see module docs)."""

    kind = "chroma"
    # a float32 first stage on the prefix collection's HNSW; the rerank in mrlkit; Chroma
    # keeps flat metadata and matches str, int, float and bool as mrlkit does
    capabilities = Capabilities(first_stages=("float32",), filter_types=(str, int, float, bool),
                                flat_metadata=True, builds=("float32",), native_from=10_000)

    def __init__(self, location: str) -> None:
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError:
            raise StoreError("the chroma backend needs chromadb: pip install 'mrlkit[chroma]'"
                             ) from None
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        self.location = masked(location)
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
        # beside a persistent client, full vectors live in files (None: in collections)
        self.folder = None if location.startswith("chroma+http") else \
            Path(os.path.expanduser(location.split(":", 1)[1])) / "mrlkit-vectors"
        self._lock = threading.RLock()
        self._files: dict[str, FileVectors] = {}
        # name → (stamp, record, documents collection): a search's record without the two
        # Chroma calls (get_collection, count: ~1.5 ms) while the stamp holds
        self._cache: dict[str, tuple[Any, ChromaRecord, Collection]] = {}

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

    def _fresh(self, name: str) -> tuple[Any, ChromaRecord, Collection] | None:
        """The cached (stamp, record, documents collection) of ``name`` while its vector
        file's stamp holds, else None."""
        hit = self._cache.get(name)
        if hit is not None and hit[0] is not None and self._full(hit[1]).stamp() == hit[0]:
            return hit
        return None

    def _docs(self, name: str) -> Collection:
        hit = self._fresh(name)
        if hit is not None:
            return hit[2]
        docs = self._get(_names(name)[0])
        if docs is None:
            docs = self._finish_swap(name)
        if docs is None:
            raise not_found(name, self.location, [r.name for r in self.records()])
        return docs

    def _full(self, rec: ChromaRecord) -> FileVectors | CollectionVectors:
        """Where ``rec``'s full vectors are (see :mod:`.chroma_vectors`)."""
        if rec.vectors_file:
            if self.folder is None:
                raise StoreError(f"set {rec.name!r} keeps its vectors in a file beside a "
                                 "persistent client: open it as chroma:PATH")
            got = self._files.get(rec.vectors_file)
            if got is None:
                got = self._files[rec.vectors_file] = FileVectors(
                    self.folder, rec.vectors_file, rec.stored_dim, rec.storage)
            return got
        full = self._get(_names(rec.name)[1]) or self._get(_names(rec.name, staging=True)[1])
        if full is None:
            raise not_found(rec.name, self.location, [r.name for r in self.records()])
        return CollectionVectors(full, rec.stored_dim)

    def record(self, name: str) -> ChromaRecord:
        hit = self._fresh(name)
        if hit is not None:
            return hit[1]
        self._cache.pop(name, None)
        docs = self._docs(name)
        rec = _record(docs.metadata, 0)
        stamp = self._full(rec).stamp()  # before the count: a write after it re-reads
        rec = replace(rec, count=docs.count())
        self._cache[name] = (stamp, rec, docs)
        return rec

    def save_plan(self, name: str, plan: str | None) -> None:
        with self._lock:
            rec = self.record(name)
            self._docs(name).modify(metadata=_meta(replace(rec, plan=plan)))
            self._cache.pop(name, None)

    def records(self) -> list[ChromaRecord]:
        return [_record(c.metadata, c.count()) for c in self._client.list_collections()
                if c.name.startswith("mrlkit-s-") and (c.metadata or {}).get("mrlkit")]

    def count(self, rec: ChromaRecord) -> int:
        return rec.count

    rows = count

    def create(self, rec: SetRecord, first: Stage, build: bool, spec: Mapping[str, Any]
               ) -> bool:
        """The set's documents collection (and its full vectors' place); the first stage
        indexed is ``first``'s dimension (the one mrlkit would pick for a large set)."""
        dim = first.dim
        with self._lock:
            if self._get(_names(rec.name)[0]) is not None:
                return False
            self._drop(*_names(rec.name))  # a half-made set of that name
            self._make(ChromaRecord(**rec.__dict__, first_dim=dim))
        return True

    def _make(self, rec: ChromaRecord, *, staging: bool = False) -> ChromaRecord:
        """Create the set's collections (under staging names for a rebuild); returns the
        record with its vector file named."""
        docs_name, full_name = _names(rec.name, staging=staging)
        if self.folder is not None:  # a fresh file per generation
            rec = replace(rec, vectors_file=f"{docs_name}-{uuid.uuid4().hex[:12]}")
        else:
            self._client.create_collection(full_name, embedding_function=None,
                                           metadata={"mrlkit": 1},
                                           configuration={"hnsw": FULL_HNSW})
        self._client.create_collection(docs_name, embedding_function=None,
                                       metadata=_meta(rec), configuration={"hnsw": HNSW})
        return rec

    def drop(self, name: str) -> None:
        rec = self.record(name)
        self._drop(*_names(name), *_names(name, staging=True))
        self._full_drop(rec)

    def _full_drop(self, rec: ChromaRecord) -> None:
        if rec.vectors_file and self.folder is not None:
            self._files.pop(rec.vectors_file, None)
            FileVectors(self.folder, rec.vectors_file, rec.stored_dim, rec.storage).drop()

    # --- writes -----------------------------------------------------------------------
    def add(self, name: str, prepare: Callable[[ChromaRecord], Batch]) -> int:
        """The full vectors first, then the documents collection, which is what makes
        them visible; a process killed in between leaves only full vectors that nothing
        reads."""
        with self._lock:
            rec = self.record(name)
            batch = prepare(rec)
            docs = self._docs(name)
            batch.accept(docs.get(ids=batch.ids, include=[])["ids"])
            self._write(docs, rec, batch.ids, batch.stored(rec.storage), batch.texts,
                        batch.metadata)
        return len(batch)

    def _write(self, docs: Collection, rec: ChromaRecord, ids: list[str],
               stored: np.ndarray, texts: list[str | None], metas: list[dict[str, Any]]
               ) -> None:
        prefix = vectors.truncate(stored, rec.first_dim)
        self._full(rec).write(ids, stored)
        faults.point("after_vectors")
        faults.point("before_commit")
        for s in range(0, len(ids), _BATCH):
            docs.upsert(ids=ids[s:s + _BATCH], embeddings=prefix[s:s + _BATCH],
                        documents=texts[s:s + _BATCH],
                        metadatas=[m or None for m in metas[s:s + _BATCH]])

    def delete(self, name: str, ids: list[str]) -> int:
        with self._lock:
            rec = self.record(name)
            docs = self._docs(name)
            found = docs.get(ids=ids, include=[])["ids"]
            if found:
                docs.delete(ids=found)
                self._full(rec).delete(found)
        return len(found)

    def index(self, rec: ChromaRecord, first: Stage, native: bool,
              calibrate: Calibrate) -> list[str]:
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
        docs = self._docs(new.name)
        got = docs.get(include=["documents", "metadatas"])
        ids, x = self._read_all(old, got)
        order = {i: n for n, i in enumerate(got["ids"])}
        x = apply(x) if len(x) else np.empty((0, new.stored_dim), np.float32)
        self._drop(*_names(new.name, staging=True))  # left by a rebuild killed while writing
        staged = self._make(new, staging=True)
        sdocs = self._get(_names(new.name, staging=True)[0])
        if ids:
            self._write(sdocs, staged, ids, x, [got["documents"][order[i]] for i in ids],
                        [got["metadatas"][order[i]] or {} for i in ids])
        faults.point("before_switch")
        self._client.delete_collection(_names(new.name)[0])  # now the staging set counts
        faults.point("mid_switch")
        self._finish_swap(new.name)
        self._full_drop(old)

    def _finish_swap(self, name: str) -> Collection | None:
        """Move complete staging collections in place of the set's (none when the set's
        documents collection exists: then the staging ones are an unfinished write)."""
        final, staged = _names(name), _names(name, staging=True)
        docs = self._get(staged[0])
        if docs is None or self._get(final[0]) is not None:
            return None
        full = self._get(staged[1])
        if full is not None:
            self._drop(final[1])
            full.modify(name=final[1])
        docs.modify(name=final[0])
        return self._get(final[0])

    # --- reads ------------------------------------------------------------------------
    def _read_all(self, rec: ChromaRecord, got: Mapping[str, Any]
                  ) -> tuple[list[str], np.ndarray]:
        """The ids of ``got`` (a ``get``) in id order, and their vectors."""
        ids = sorted(got["ids"])
        return ids, self._full(rec).read(ids)

    def vectors(self, rec: ChromaRecord) -> tuple[list[str], np.ndarray]:
        return self._read_all(rec, self._docs(rec.name).get(include=[]))

    def get(self, rec: ChromaRecord, ids: list[str]) -> dict[str, Document]:
        got = self._docs(rec.name).get(ids=ids, include=["documents", "metadatas"])
        return {i: Document(i, t, dict(m or {}))
                for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])}

    def scroll(self, rec: ChromaRecord, offset: int, limit: int) -> list[Document]:
        got = self._docs(rec.name).get(limit=limit, offset=offset,
                                       include=["documents", "metadatas"])
        return [Document(i, t, dict(m or {}))
                for i, t, m in zip(got["ids"], got["documents"], got["metadatas"])]

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

    def built(self, rec: ChromaRecord) -> set[tuple[int, str]]:
        return {(rec.first_dim, "float32")}

    def native(self, rec: ChromaRecord, q: np.ndarray, plan: Plan,
               filters: dict[str, Any] | None) -> Partial | None:
        """A float32 first stage at the indexed prefix, on Chroma's HNSW (ids and
        distances only: asking Chroma for metadata too triples its time); the rerank
        reads the candidates' full vectors from the file, or the full-vector collection
        on a server."""
        funnel = plan.funnel
        first = funnel.stages[0]
        docs = self._docs(rec.name)
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
        matrix = self._full(rec).read(ids_all) if len(funnel.stages) > 1 else None
        return Partial(1, rows, scores, timings, self._documents(docs, ids_all), matrix)

    def scan(self, rec: ChromaRecord, filters: dict[str, Any] | None,
             calibrate: Calibrate) -> Scan:
        """Every stored vector, with its metadata for the core to filter on."""
        docs = self._docs(rec.name)
        got = docs.get(include=["metadatas"])
        ids_all, x = self._read_all(rec, got)
        meta = dict(zip(got["ids"], got["metadatas"]))
        return Scan(len(ids_all), self._documents(docs, ids_all), matrix=x,
                    metadata=[meta.get(i) or {} for i in ids_all] if filters else None)

    def check(self, rec: ChromaRecord, report: CheckReport, repair: bool) -> bool:
        report.delegated = "storage integrity is Chroma's own (its files or server)"
        return False  # the core verifies every stored vector

    def storage(self, rec: ChromaRecord, count: int) -> StorageInfo:
        """Full vectors: the file's bytes (rows of replaced documents included until the
        next rewrite) or an estimate; the prefix collection: an estimate (Chroma does not
        report sizes per collection)."""
        per = vectors.bytes_per_vector(rec.stored_dim, rec.storage if rec.vectors_file
                                       else "float32")
        return StorageInfo(rec.info(count), count, 0, self._full(rec).bytes(), per,
                           [ViewInfo(rec.first_dim, "float32",
                                     count * vectors.bytes_per_vector(rec.first_dim, "float32"),
                                     "Chroma HNSW collection (estimated)")],
                           self.location, {"first_stage_dim": rec.first_dim})
