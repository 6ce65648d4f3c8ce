"""The ``qdrant`` engine: one point per document with a named vector per funnel stage,
and the funnel as one Query API request with a ``prefetch``.

Each set is a collection ``mrlkit-<hash>`` (any set name fits) whose points carry two
named vectors — ``full`` (the stored dimension, no graph: it only rescores) and ``first``
(the first-stage prefix with Qdrant's HNSW, 64 dimensions for an MRL model, the full
vector otherwise) — and a payload with the document's id, text and metadata
(``meta.<key>``, with payload indexes made for filter fields on first use). A catalogue
collection ``mrlkit-catalog`` holds one point per set: its record.

A funnel over those vectors runs in Qdrant as one query: ``prefetch(first, limit=keep)``
inside, the rerank on ``full`` outside; a binary or int8 first stage (after ``index``) is
Qdrant's binary or scalar quantisation of ``first``, searched without rescoring. Other
funnels (other prefix lengths or precisions, more than two stages), adaptive search,
float filters (Qdrant matches str, int and bool exactly) and sets below the planner's
``native_from`` rows run in mrlkit over the stored vectors (see :mod:`.plan`).

Every request is built once here (:mod:`.qdrant_plan`) and executed by one of two thin
adapters: ``qdrant:PATH`` runs Qdrant's engine in-process (``qdrant-edge-py``,
:mod:`.qdrant_embedded`), ``qdrant+http(s)://host:port`` a server or cluster through
``qdrant-client`` (:mod:`.qdrant_server`, API key from ``QDRANT_API_KEY``).

Example::

    >>> store = QdrantStore("qdrant:/tmp/mrlkit-qdrant")           # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from .. import vectors
from ..errors import InvalidInputError
from ..text import masked
from ..funnel import Funnel, Stage, StageTiming
from ..transform import Transform
from . import faults
from .core import Store
from .seam import Calibrate, EngineDefaults, FirstStaged, Partial, Rewrites, Scan
from .plan import Capabilities, Plan
from .qdrant_plan import (Adapter, CollectionSpec, Prefetch, Query, VectorSpec,
                          payload_kind)
from .records import (Batch, CheckReport, Document, SetRecord, StorageInfo,
                      not_found,
                      ViewInfo)

CATALOG = "mrlkit-catalog"
OPTIMIZE_AT = 20_000  # unindexed points past which a search first runs the optimiser
_NS = uuid.UUID("6f1b9c2e-6d0a-4b8e-9a57-3c1f0e6a2d11")


@dataclass(frozen=True, kw_only=True)
class QdrantRecord(FirstStaged):
    first_precision: str = "float32"
    generation: int = 0
    filter_fields: tuple[str, ...] = ()
    count: int = 0

    @property
    def collection(self) -> str:
        return _collection(self.name, self.generation)

    def spec(self) -> CollectionSpec:
        """The set's named vectors: ``full`` only rescores (no graph); ``first`` is
        searched, through Qdrant's quantisation when its precision is int8 or binary."""
        dtype = "float16" if self.storage == "float16" else "float32"
        quantization = None if self.first_precision == "float32" else self.first_precision
        return CollectionSpec({"full": VectorSpec(self.stored_dim, 0, dtype),
                               "first": VectorSpec(self.first_dim, datatype=dtype,
                                                   quantization=quantization)})


def _point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_NS, doc_id))


def _collection(set_name: str, generation: int = 0) -> str:
    """The collection holding a set's points; a rebuild writes the next generation and
    switches the catalogue to it, so a killed rebuild leaves the set as it was."""
    base = "mrlkit-" + hashlib.sha1(set_name.encode()).hexdigest()[:20]
    return f"{base}-g{generation}" if generation else base


def _payload(rec: QdrantRecord) -> dict[str, Any]:
    return {"name": rec.name, "model": rec.model, "truncate_dim": rec.truncate_dim,
            "stored_dim": rec.stored_dim, "storage": rec.storage,
            "allow_non_mrl": rec.allow_non_mrl, "first_dim": rec.first_dim,
            "first_precision": rec.first_precision, "generation": rec.generation,
            "transform": rec.transform_json, "filter_fields": list(rec.filter_fields),
            "created_at": rec.created_at, "plan": rec.plan}


def _record(p: Mapping[str, Any], count: int) -> QdrantRecord:
    t = p.get("transform")
    return QdrantRecord(name=p["name"], model=p["model"], truncate_dim=p["truncate_dim"],
                        stored_dim=p["stored_dim"], storage=p["storage"],
                        allow_non_mrl=bool(p["allow_non_mrl"]), created_at=p["created_at"],
                        # stores written before 0.2 kept the transform as an object
                        transform=Transform.from_dict(t) if isinstance(t, dict)
                        else Transform.from_json(t),
                        first_dim=p["first_dim"],
                        first_precision=p.get("first_precision") or "float32",
                        generation=p.get("generation") or 0,
                        filter_fields=tuple(p.get("filter_fields") or ()), count=count,
                        plan=p.get("plan"))


def _document(payload: Mapping[str, Any]) -> Document:
    return Document(payload["id"], payload.get("text"), payload.get("meta") or {})


def adapter_for(location: str) -> Adapter:
    """``qdrant:PATH``: Qdrant's engine in-process; ``qdrant+http(s)://``: a server;
    ``qdrant+local:PATH``: the client's local mode."""
    if location.startswith(("qdrant+http:", "qdrant+https:", "qdrant+local:")):
        from .qdrant_server import ServerAdapter

        return ServerAdapter(location)
    path = location.split(":", 1)[1]
    if not path:
        raise InvalidInputError("qdrant: needs a folder, e.g. qdrant:./qdrant-data")
    from .qdrant_embedded import EdgeAdapter

    return EdgeAdapter(os.path.expanduser(path))


def QdrantStore(location: str, *, native_from: int | str | None = None,
                adapter: Adapter | None = None) -> Store[QdrantRecord]:
    """A store on the qdrant engine: ``qdrant:PATH`` or ``qdrant+http(s)://host:port``."""
    return Store(QdrantEngine(location, adapter=adapter), native_from=native_from)


class QdrantEngine(Rewrites[QdrantRecord], EngineDefaults[QdrantRecord]):
    """Embedding sets in Qdrant (see module docs)."""

    kind = "qdrant"
    # one request: the ``first`` vector's HNSW (quantised after ``index``), then one
    # rerank on ``full``; Qdrant matches str, int and bool payloads exactly
    capabilities = Capabilities(first_stages=("float32", "int8", "binary"), later="rerank",
                                filter_types=(str, int, bool),
                                builds=("float32", "int8", "binary"), native_from=10_000)

    def __init__(self, location: str, *, adapter: Adapter | None = None) -> None:
        self.db = adapter or adapter_for(location)
        self.location = masked(location)
        self.single_process = self.db.single_process
        if not self.db.exists(CATALOG):
            self.db.create(CATALOG, CollectionSpec())
        self.db.count(CATALOG)  # opened now: a store another process holds fails here
        self._lock = threading.RLock()

    def close(self) -> None:
        self.db.close()

    # --- records ----------------------------------------------------------------------
    def record(self, name: str) -> QdrantRecord:
        got = self.db.retrieve(CATALOG, [_point_id(name)])
        if not got:
            raise not_found(name, self.location, [r.name for r in self.records()])
        p = got[0].payload
        return _record(p, self.db.count(_collection(name, p.get("generation") or 0)))

    def records(self) -> list[QdrantRecord]:
        return [_record(r.payload, self.db.count(_collection(
            r.payload["name"], r.payload.get("generation") or 0)))
            for r in self.db.scroll(CATALOG)]

    def count(self, rec: QdrantRecord) -> int:
        return rec.count

    rows = count

    def _save(self, rec: QdrantRecord) -> None:
        self.db.upsert(CATALOG, [_point_id(rec.name)], None, [_payload(rec)])
        self.db.settle(CATALOG)

    def save_plan(self, name: str, plan: str | None) -> None:
        with self._lock:
            self._save(replace(self.record(name), plan=plan))

    def create(self, rec: SetRecord, first: Stage, build: bool, spec: Mapping[str, Any]
               ) -> bool:
        """The set's collection, its ``first`` vector at ``first``'s dimension."""
        dim = first.dim
        with self._lock:
            if self.db.retrieve(CATALOG, [_point_id(rec.name)], payload=False):
                return False
            new = QdrantRecord(**rec.__dict__, first_dim=dim)
            if self.db.exists(new.collection):  # a half-made set
                self.db.delete_collection(new.collection)
            self.db.create(new.collection, new.spec())
            self._save(new)
        return True

    def drop(self, name: str) -> None:
        rec = self.record(name)
        for gen in {rec.generation, rec.generation + 1}:
            if self.db.exists(_collection(name, gen)):
                self.db.delete_collection(_collection(name, gen))
        self.db.delete(CATALOG, [_point_id(name)])
        self.db.settle(CATALOG)

    # --- writes -----------------------------------------------------------------------
    def add(self, name: str, prepare: Callable[[QdrantRecord], Batch]) -> int:
        """Upsert a batch of points, durable when the call returns. Qdrant's optimiser
        indexes them at ``index`` (``mrlkit sets index``), or at the first search that
        finds ``OPTIMIZE_AT`` points unindexed; until then a scan covers them."""
        with self._lock:
            rec = self.record(name)
            batch = prepare(rec)
            batch.accept(self._existing(rec, batch.ids))
            faults.point("after_vectors")
            faults.point("before_commit")
            self._write(rec, batch.ids, batch.vectors, batch.texts, batch.metadata)
        return len(batch)

    def _existing(self, rec: QdrantRecord, ids: list[str]) -> set[str]:
        got = self.db.retrieve(rec.collection, [_point_id(i) for i in ids], payload=["id"])
        return {r.payload["id"] for r in got}

    def _write(self, rec: QdrantRecord, ids: list[str], emb: np.ndarray,
               texts: list[str | None], metas: list[dict[str, Any]]) -> None:
        self.db.upsert(rec.collection, [_point_id(i) for i in ids],
                       {"full": emb, "first": vectors.truncate(emb, rec.first_dim)},
                       [{"id": i, "text": t, "meta": md}
                        for i, t, md in zip(ids, texts, metas)])
        self.db.settle(rec.collection)

    def delete(self, name: str, ids: list[str]) -> int:
        with self._lock:
            rec = self.record(name)
            found = self._existing(rec, ids)
            if found:
                self.db.delete(rec.collection, [_point_id(i) for i in found])
                self.db.settle(rec.collection)
        return len(found)

    def _all(self, rec: QdrantRecord) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """Every point's id, full vector and payload, ordered by id."""
        points = sorted(self.db.scroll(rec.collection, vectors=["full"]),
                        key=lambda r: r.payload["id"])
        x = np.asarray([r.vectors["full"] for r in points], np.float32).reshape(
            len(points), rec.stored_dim)
        return [r.payload["id"] for r in points], x, [r.payload for r in points]

    def _rewrite(self, old: QdrantRecord, new: QdrantRecord,
                 apply: Callable[[np.ndarray], np.ndarray]) -> None:
        """Write the set again into the next generation's collection, then switch the
        catalogue to it (one upsert) and drop the old one: a process killed before the
        switch leaves the set as it was, after it the new one complete."""
        ids, x, payloads = self._all(old)
        new = replace(new, generation=old.generation + 1, filter_fields=())
        if self.db.exists(new.collection):  # left by a killed rebuild
            self.db.delete_collection(new.collection)
        self.db.create(new.collection, new.spec())
        if ids:
            self._write(new, ids, apply(x), [p.get("text") for p in payloads],
                        [p.get("meta") or {} for p in payloads])
        self.db.optimize(new.collection)
        faults.point("before_switch")
        self._save(new)
        self.db.delete_collection(old.collection)

    def index(self, rec: QdrantRecord, first: Stage, native: bool,
              calibrate: Calibrate) -> list[str]:
        """Give the points a ``first`` named vector at the funnel's first-stage length,
        quantised by Qdrant when the stage is binary or int8 (the original floats stay for
        Qdrant's own use). The collection is rewritten from the stored vectors when the
        length or the quantisation changes (Qdrant cannot add a named vector in place)."""
        with self._lock:
            if (first.dim, first.precision) != (rec.first_dim, rec.first_precision):
                self._rewrite(rec, replace(rec, first_dim=first.dim,
                                           first_precision=first.precision), lambda x: x)
            else:
                self.db.optimize(rec.collection)
        kind = "" if first.precision == "float32" else f", {first.precision}-quantised"
        return [f"named vector 'first' at {first.dim} dimensions{kind}"]

    # --- reads ------------------------------------------------------------------------
    def vectors(self, rec: QdrantRecord) -> tuple[list[str], np.ndarray]:
        ids, x, _ = self._all(rec)
        return ids, x

    def get(self, rec: QdrantRecord, ids: list[str]) -> dict[str, Document]:
        got = self.db.retrieve(rec.collection, [_point_id(i) for i in ids])
        return {r.payload["id"]: _document(r.payload) for r in got if r.payload}

    def scroll(self, rec: QdrantRecord, offset: int, limit: int) -> list[Document]:
        got = list(self.db.scroll(rec.collection, limit=offset + limit))
        return [_document(r.payload) for r in got[offset:] if r.payload]

    def _match(self, rec: QdrantRecord, filters: Mapping[str, Any]
               ) -> tuple[tuple[str, Any], ...]:
        """The filter as exact matches on ``meta.<key>``, indexing new fields first."""
        new_fields = [k for k in filters if k not in rec.filter_fields]
        for key in new_fields:
            self.db.index_payload(rec.collection, f"meta.{key}", payload_kind(filters[key]))
        if new_fields:
            self._save(replace(rec, filter_fields=rec.filter_fields + tuple(new_fields)))
        return tuple((f"meta.{k}", v) for k, v in filters.items())

    def funnel_request(self, rec: QdrantRecord, query: np.ndarray, funnel: Funnel, *, k: int,
                       filters: Mapping[str, Any] | None = None) -> Query:
        """The one query that runs ``funnel``: the first stage as a prefetch on the
        ``first`` vector, the rerank on ``full``; a quantised first stage keeps its
        candidates by the quantised score (no rescore: the rerank is the next stage)."""
        first, rest = funnel.stages[0], funnel.stages[1:]
        match = self._match(rec, filters) if filters else ()
        quantized = first.precision != "float32"
        prefix = vectors.truncate(query[None], first.dim)[0]
        if not rest:
            return Query(prefix, "first", k, match=match, quantized=quantized)
        return Query(np.asarray(query, np.float32), "full", k, match=match,
                     prefetch=Prefetch(prefix, "first", first.keep or k, quantized))

    def built(self, rec: QdrantRecord) -> set[tuple[int, str]]:
        return {(rec.first_dim, rec.first_precision)}

    def native(self, rec: QdrantRecord, q: np.ndarray, plan: Plan,
               filters: dict[str, Any] | None) -> Partial | None:
        funnel = plan.funnel
        k = funnel.stages[-1].keep or 10
        if self.db.pending(rec.collection) >= OPTIMIZE_AT:
            with self._lock:
                self.db.optimize(rec.collection)
        t0 = time.perf_counter()
        requests = [self.funnel_request(rec, query, funnel, k=k, filters=filters)
                    for query in q]
        docs: dict[int, Document] = {}
        rows, scores = [], []
        for hits in self.db.query(rec.collection, requests):
            for h in hits:
                docs[len(docs)] = _document(h.payload)
            rows.append(np.arange(len(docs) - len(hits), len(docs), dtype=np.int64))
            scores.append(np.asarray([h.score for h in hits], np.float32))
        ms = (time.perf_counter() - t0) * 1000
        timings = [StageTiming(s.dim, s.precision, s.keep or k, ms if i == 0 else 0.0,
                               "qdrant query" if i == 0 else "qdrant (same request)")
                   for i, s in enumerate(funnel.stages)]
        return Partial(len(funnel.stages), rows, scores, timings, lambda _: docs)

    def scan(self, rec: QdrantRecord, filters: dict[str, Any] | None,
             calibrate: Calibrate) -> Scan:
        """Every point's full vector, with its metadata for the core to filter on."""
        ids, x, payloads = self._all(rec)
        docs = {r: Document(i, p.get("text"), p.get("meta") or {})
                for r, (i, p) in enumerate(zip(ids, payloads))}
        return Scan(len(ids), lambda _: docs, matrix=x,
                    metadata=[d.metadata for d in docs.values()] if filters else None)

    def check(self, rec: QdrantRecord, report: CheckReport, repair: bool) -> bool:
        report.delegated = "storage integrity is Qdrant's own (its files or server)"
        return False  # the core verifies every stored vector

    def storage(self, rec: QdrantRecord, count: int) -> StorageInfo:
        width = 2 if rec.storage == "float16" else 4
        return StorageInfo(rec.info(count), count, 0, count * rec.stored_dim * width,
                           rec.stored_dim * width,
                           [ViewInfo(rec.first_dim, rec.first_precision,
                                     count * rec.first_dim * width,
                                     "named vector 'first' (estimated)")],
                           self.location, {"first_stage_dim": rec.first_dim})
