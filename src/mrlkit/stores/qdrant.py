"""The ``qdrant`` engine: one point per document with a named vector per funnel stage,
and the funnel as one Query API request with nested ``prefetch``.

Each set is a collection ``mrlkit-<hash>`` (any set name fits) whose points carry two
named vectors — ``full`` (the stored dimension) and ``first`` (the first-stage prefix,
128 for an MRL model, the full vector otherwise) — and a payload with the document's id,
text and metadata (``meta.<key>``, with payload indexes made for filter fields on first
use). A catalogue collection ``mrlkit-catalog`` holds one point per set: its record.

A funnel over those vectors runs in Qdrant as one ``query_points`` call:
``prefetch(first, limit=keep)`` inside, the rerank on ``full`` outside; a binary or int8
first stage (after ``index``) is Qdrant's binary or scalar quantisation of ``first``,
searched without rescoring. Other funnels (other prefix lengths or precisions, more than
two stages), adaptive search, float filters (Qdrant matches str, int and bool exactly) and
sets below ``exact_below`` rows run in mrlkit over the stored vectors.

``qdrant:PATH`` uses the client's local mode (in-process, exact scans: tests and small
sets); ``qdrant+http(s)://host:port`` a server or cluster (API key from
``QDRANT_API_KEY``).

Example::

    >>> store = QdrantStore("qdrant:/tmp/mrlkit-qdrant")           # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
import warnings
from collections import deque
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
CATALOG = "mrlkit-catalog"
REQUEST_LOG = 100  # the newest Query API requests kept for inspection
_BATCH = 1_000
_NS = uuid.UUID("6f1b9c2e-6d0a-4b8e-9a57-3c1f0e6a2d11")


@dataclass(frozen=True, kw_only=True)
class QdrantRecord(SetRecord):
    first_dim: int
    first_precision: str = "float32"
    generation: int = 0
    filter_fields: tuple[str, ...] = ()
    count: int = 0

    @property
    def collection(self) -> str:
        return _collection(self.name, self.generation)


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
            "created_at": rec.created_at}


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
                        filter_fields=tuple(p.get("filter_fields") or ()), count=count)


def QdrantStore(location: str, *, exact_below: int | None = None) -> Store[QdrantRecord]:
    """A store on the qdrant engine: ``qdrant:PATH`` or ``qdrant+http(s)://host:port``."""
    return Store(QdrantEngine(location, exact_below=exact_below))


class QdrantEngine(EngineDefaults[QdrantRecord]):
    """Embedding sets in Qdrant (see module docs)."""

    kind = "qdrant"
    index_precisions = ("float32", "int8", "binary")

    def __init__(self, location: str, *, exact_below: int | None = None) -> None:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise StoreError("the qdrant backend needs qdrant-client: "
                             "pip install 'mrlkit[qdrant]'") from None
        self.m = models
        self.location = location
        # local mode locks its folder: one process at a time (a server has no such limit)
        self.single_process = not location.startswith("qdrant+http")
        self.exact_below = EXACT_BELOW if exact_below is None else exact_below
        if location.startswith("qdrant+http"):
            self._client = QdrantClient(url=location.split("+", 1)[1],
                                        api_key=os.environ.get("QDRANT_API_KEY"))
        else:
            path = location.split(":", 1)[1]
            if not path:
                raise InvalidInputError("qdrant: needs a folder, e.g. qdrant:./qdrant-data")
            self._client = QdrantClient(path=os.path.expanduser(path))
        if not self._client.collection_exists(CATALOG):
            self._client.create_collection(CATALOG, vectors_config={})
        self._lock = threading.RLock()
        # the newest Query API requests sent (bounded: a long-lived store must not grow)
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG)

    def close(self) -> None:
        self._client.close()

    # --- records ----------------------------------------------------------------------
    def _count(self, collection: str) -> int:
        return int(self._client.count(collection, exact=True).count)

    def record(self, name: str) -> QdrantRecord:
        got = self._client.retrieve(CATALOG, [_point_id(name)], with_payload=True)
        if not got:
            raise rules.not_found(name, self.location, [r.name for r in self.records()])
        p = dict(got[0].payload or {})
        return _record(p, self._count(_collection(name, p.get("generation") or 0)))

    def records(self) -> list[QdrantRecord]:
        points, _ = self._client.scroll(CATALOG, limit=10_000, with_payload=True)
        out = []
        for pt in points:
            p = dict(pt.payload or {})
            out.append(_record(p, self._count(_collection(p["name"],
                                                          p.get("generation") or 0))))
        return out

    def count(self, rec: QdrantRecord) -> int:
        return rec.count

    rows = count

    def _save(self, rec: QdrantRecord) -> None:
        self._client.upsert(CATALOG, [self.m.PointStruct(id=_point_id(rec.name), vector={},
                                                         payload=_payload(rec))], wait=True)

    def create(self, rec: SetRecord, first: Stage | None) -> bool:
        from ..funnel import default_funnel
        from ..registry import get_spec

        dim = first.dim if first else default_funnel(
            10**9, rec.stored_dim, get_spec(rec.model).supports_mrl).stages[0].dim
        with self._lock:
            if self._client.retrieve(CATALOG, [_point_id(rec.name)]):
                return False
            new = QdrantRecord(**rec.__dict__, first_dim=dim)
            if self._client.collection_exists(new.collection):  # a half-made set
                self._client.delete_collection(new.collection)
            self._make(new)
            self._save(new)
        return True

    def _quantization(self, precision: str) -> Any:
        """Qdrant's quantisation for a first stage in ``precision`` (None: float32)."""
        m = self.m
        if precision == "binary":
            return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
        if precision == "int8":
            return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(
                type=m.ScalarType.INT8, quantile=0.99, always_ram=True))
        return None

    def _make(self, rec: QdrantRecord) -> None:
        m = self.m
        datatype = m.Datatype.FLOAT16 if rec.storage == "float16" else None
        self._client.create_collection(rec.collection, vectors_config={
            "full": m.VectorParams(size=rec.stored_dim, distance=m.Distance.COSINE,
                                   datatype=datatype),
            "first": m.VectorParams(size=rec.first_dim, distance=m.Distance.COSINE,
                                    datatype=datatype, quantization_config=self._quantization(
                                        rec.first_precision))})

    def drop(self, name: str) -> None:
        rec = self.record(name)
        for gen in {rec.generation, rec.generation + 1}:
            if self._client.collection_exists(_collection(name, gen)):
                self._client.delete_collection(_collection(name, gen))
        self._client.delete(CATALOG, self.m.PointIdsList(points=[_point_id(name)]), wait=True)

    # --- writes -----------------------------------------------------------------------
    def add(self, name: str, prepare: Callable[[QdrantRecord], Batch]) -> int:
        """Upsert a batch of points with ``wait=True``."""
        with self._lock:
            rec = self.record(name)
            batch = prepare(rec)
            batch.accept(self._existing(rec, batch.ids))
            rules.crash_point("after_vectors")
            rules.crash_point("before_commit")
            self._write(rec, batch.ids, batch.vectors, batch.texts, batch.metadata)
        return len(batch)

    def _existing(self, rec: QdrantRecord, ids: list[str]) -> set[str]:
        got = self._client.retrieve(rec.collection, [_point_id(i) for i in ids],
                                    with_payload=["id"])
        return {(p.payload or {})["id"] for p in got}

    def _write(self, rec: QdrantRecord, ids: list[str], emb: np.ndarray,
               texts: list[str | None], metas: list[dict[str, Any]]) -> None:
        m = self.m
        first = vectors.truncate(emb, rec.first_dim)
        for s in range(0, len(ids), _BATCH):
            self._client.upsert(rec.collection, m.Batch(
                ids=[_point_id(i) for i in ids[s:s + _BATCH]],
                vectors={"full": emb[s:s + _BATCH].tolist(),
                         "first": first[s:s + _BATCH].tolist()},
                payloads=[{"id": i, "text": t, "meta": md} for i, t, md in
                          zip(ids[s:s + _BATCH], texts[s:s + _BATCH], metas[s:s + _BATCH])]),
                wait=True)

    def delete(self, name: str, ids: list[str]) -> int:
        with self._lock:
            rec = self.record(name)
            found = self._existing(rec, ids)
            if found:
                self._client.delete(rec.collection, self.m.PointIdsList(
                    points=[_point_id(i) for i in found]), wait=True)
        return len(found)

    def _all(self, rec: QdrantRecord) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """Every point's id, full vector and payload, ordered by id."""
        points: list[Any] = []
        offset = None
        while True:
            page, offset = self._client.scroll(rec.collection, limit=1_000, offset=offset,
                                               with_vectors=["full"], with_payload=True)
            points += page
            if offset is None:
                break
        points.sort(key=lambda p: p.payload["id"])
        x = np.asarray([p.vector["full"] for p in points], np.float32).reshape(
            len(points), rec.stored_dim)
        return [p.payload["id"] for p in points], x, [dict(p.payload) for p in points]

    def rebuild(self, name: str, plan: Callable[[QdrantRecord], Rebuild]) -> None:
        with self._lock:
            rec = self.record(name)
            p = plan(rec)
            new: QdrantRecord = p.record
            self._rewrite(rec, replace(new, first_dim=min(new.first_dim, new.stored_dim)),
                          p.apply)

    def _rewrite(self, old: QdrantRecord, new: QdrantRecord,
                 apply: Callable[[np.ndarray], np.ndarray]) -> None:
        """Write the set again into the next generation's collection, then switch the
        catalogue to it (one upsert) and drop the old one: a process killed before the
        switch leaves the set as it was, after it the new one complete."""
        ids, x, payloads = self._all(old)
        new = replace(new, generation=old.generation + 1, filter_fields=())
        if self._client.collection_exists(new.collection):  # left by a killed rebuild
            self._client.delete_collection(new.collection)
        self._make(new)
        if ids:
            self._write(new, ids, apply(x), [p.get("text") for p in payloads],
                        [p.get("meta") or {} for p in payloads])
        rules.crash_point("before_switch")
        self._save(new)
        self._client.delete_collection(old.collection)

    def index(self, rec: QdrantRecord, first: Stage) -> list[str]:
        """Give the points a ``first`` named vector at the funnel's first-stage length,
        quantised by Qdrant when the stage is binary or int8 (the original floats stay for
        Qdrant's own use). The collection is rewritten from the stored vectors when the
        length or the quantisation changes (Qdrant cannot add a named vector in place)."""
        with self._lock:
            if (first.dim, first.precision) != (rec.first_dim, rec.first_precision):
                self._rewrite(rec, replace(rec, first_dim=first.dim,
                                           first_precision=first.precision), lambda x: x)
        kind = "" if first.precision == "float32" else f", {first.precision}-quantised"
        return [f"named vector 'first' at {first.dim} dimensions{kind}"]

    # --- reads ------------------------------------------------------------------------
    def vectors(self, rec: QdrantRecord) -> tuple[list[str], np.ndarray]:
        ids, x, _ = self._all(rec)
        return ids, x

    def get(self, rec: QdrantRecord, ids: list[str]) -> dict[str, Document]:
        got = self._client.retrieve(rec.collection, [_point_id(i) for i in ids],
                                    with_payload=True)
        return {p.payload["id"]: Document(p.payload["id"], p.payload.get("text"),
                                          p.payload.get("meta") or {})
                for p in got if p.payload}

    def scroll(self, rec: QdrantRecord, offset: int, limit: int) -> list[Document]:
        points, _ = self._client.scroll(rec.collection, limit=offset + limit, with_payload=True)
        return [Document(p.payload["id"], p.payload.get("text"), p.payload.get("meta") or {})
                for p in points[offset:] if p.payload]

    def sample(self, rec: QdrantRecord) -> np.ndarray:
        _, x = self.vectors(rec)
        return x[rules.sample_rows(len(x))] if len(x) else x

    def _filter(self, rec: QdrantRecord, filters: Mapping[str, Any]) -> Any:
        m = self.m
        new_fields = [k for k in filters if k not in rec.filter_fields]
        for key in new_fields:
            value = filters[key]
            schema = (m.PayloadSchemaType.BOOL if isinstance(value, bool) else
                      m.PayloadSchemaType.INTEGER if isinstance(value, int) else
                      m.PayloadSchemaType.KEYWORD)
            with warnings.catch_warnings():  # local mode has no payload indexes
                warnings.simplefilter("ignore")
                self._client.create_payload_index(rec.collection, f"meta.{key}", schema,
                                                  wait=True)
        if new_fields:
            self._save(replace(rec, filter_fields=rec.filter_fields + tuple(new_fields)))
        return m.Filter(must=[m.FieldCondition(key=f"meta.{k}", match=m.MatchValue(value=v))
                              for k, v in filters.items()])

    def funnel_request(self, rec: QdrantRecord, query: np.ndarray, funnel: Funnel, *, k: int,
                       filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The keyword arguments of the one ``query_points`` call that runs ``funnel``:
        the first stage as a ``prefetch`` on the ``first`` vector, the rest on ``full``."""
        m = self.m
        first, rest = funnel.stages[0], funnel.stages[1:]
        flt = self._filter(rec, filters) if filters else None
        # a quantised first stage keeps its candidates by the quantised score (no rescore:
        # the next stage reranks them on the full vector, as mrlkit's funnel does)
        params = None if first.precision == "float32" else m.SearchParams(
            quantization=m.QuantizationSearchParams(ignore=False, rescore=False))
        inner = m.Prefetch(query=vectors.truncate(query[None], first.dim)[0].tolist(),
                           using="first", limit=first.keep or k, filter=flt, params=params)
        if not rest:
            return {"query": inner.query, "using": "first", "limit": k, "query_filter": flt,
                    "with_payload": True}
        return {"prefetch": inner, "query": query.tolist(), "using": "full", "limit": k,
                "with_payload": True}

    def _runs_natively(self, rec: QdrantRecord, funnel: Funnel,
                       filters: dict[str, Any] | None, adaptive: Adaptive | None,
                       n: int) -> bool:
        stages = funnel.stages
        first = stages[0]
        shape_ok = (first.dim == rec.first_dim and first.precision == rec.first_precision
                    and all(s.precision == "float32" and s.dim == rec.stored_dim
                            for s in stages[1:]) and len(stages) <= 2)
        if (len(stages) == 1 and first.dim == rec.stored_dim
                and first.precision == "float32" and rec.first_dim != rec.stored_dim):
            shape_ok = False  # a one-stage full search: the "full" vector, not "first"
        filters_ok = not filters or not any(isinstance(v, float) for v in filters.values())
        return shape_ok and filters_ok and adaptive is None and n >= self.exact_below

    def native(self, rec: QdrantRecord, q: np.ndarray, funnel: Funnel,
               filters: dict[str, Any] | None, adaptive: Adaptive | None,
               n: int) -> Partial | None:
        if not self._runs_natively(rec, funnel, filters, adaptive, n):
            return None
        k = funnel.stages[-1].keep or 10
        t0 = time.perf_counter()
        docs: dict[int, Document] = {}
        rows, scores = [], []
        for query in q:
            request = self.funnel_request(rec, query, funnel, k=k, filters=filters)
            self.requests.append(request)
            res = self._client.query_points(rec.collection, **request)
            mine = []
            for p in res.points:
                pl = p.payload or {}
                docs[len(docs)] = Document(pl["id"], pl.get("text"), pl.get("meta") or {})
                mine.append(len(docs) - 1)
            rows.append(np.asarray(mine, np.int64))
            scores.append(np.asarray([p.score for p in res.points], np.float32))
        ms = (time.perf_counter() - t0) * 1000
        timings = [StageTiming(s.dim, s.precision, s.keep or k, ms if i == 0 else 0.0,
                               "qdrant query" if i == 0 else "qdrant (same request)")
                   for i, s in enumerate(funnel.stages)]
        return Partial(len(funnel.stages), rows, scores, timings, lambda _: docs)

    def scan(self, rec: QdrantRecord, filters: dict[str, Any] | None) -> Scan:
        ids, x, payloads = self._all(rec)
        if filters:
            keep = [r for r, p in enumerate(payloads)
                    if rules.matches(p.get("meta") or {}, filters)]
            ids, x, payloads = [ids[r] for r in keep], x[keep], [payloads[r] for r in keep]
        docs = {r: Document(i, p.get("text"), p.get("meta") or {})
                for r, (i, p) in enumerate(zip(ids, payloads))}
        return Scan(len(ids), lambda _: docs, matrix=x)

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
