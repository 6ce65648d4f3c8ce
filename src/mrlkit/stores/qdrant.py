"""The ``qdrant`` backend: one point per document with a named vector per funnel stage,
and the funnel as one Query API request with nested ``prefetch``.

Each set is a collection ``mrlkit-<hash>`` (any set name fits) whose points carry two
named vectors — ``full`` (the stored dimension) and ``first`` (the first-stage prefix,
128 for an MRL model, the full vector otherwise) — and a payload with the document's id,
text and metadata (``meta.<key>``, with payload indexes made for filter fields on first
use). A catalogue collection ``mrlkit-catalog`` holds one point per set describing it.

A funnel over those vectors runs in Qdrant as one ``query_points`` call:
``prefetch(first, limit=keep)`` inside, the rerank on ``full`` outside; a binary or int8
first stage (after ``index``) is Qdrant's binary or scalar quantisation of ``first``,
searched without rescoring. Other funnels (other prefix lengths or precisions, more than
two stages), adaptive search, filters Qdrant cannot
match exactly (floats, nulls) and sets below ``exact_below`` rows run in mrlkit over the
stored vectors, exact like the embedded store.

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
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from .. import vectors
from ..errors import (InvalidInputError, ReembedRequiredError, SetExistsError,
                      SetNotFoundError, StoreError)
from ..funnel import Funnel, MatrixSource, default_funnel, execute
from ..registry import get_spec, validate_dim
from ..vectors import Int8Calibration
from .base import (STORAGE_PRECISIONS, Document, Hit, SearchResult, SetInfo, StageTiming,
                   apply_transform, check_batch, compose_transform, crash_point,
                   refuse_adapted_reindex, transform_fields)

EXACT_BELOW = 10_000
CATALOG = "mrlkit-catalog"
_BATCH = 1_000
_NS = uuid.UUID("6f1b9c2e-6d0a-4b8e-9a57-3c1f0e6a2d11")


def _point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_NS, doc_id))


def _collection(set_name: str, generation: int = 0) -> str:
    """The collection holding a set's points; a rebuild writes the next generation and
    switches the catalogue to it, so a killed rebuild leaves the set as it was."""
    base = "mrlkit-" + hashlib.sha1(set_name.encode()).hexdigest()[:20]
    return f"{base}-g{generation}" if generation else base


def _col(meta: Mapping[str, Any]) -> str:
    return _collection(meta["name"], meta.get("generation") or 0)


class QdrantStore:
    """Embedding sets in Qdrant (see module docs)."""

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
        self._calibrations: dict[tuple, Int8Calibration] = {}
        self.requests: list[dict] = []  # the Query API requests sent, newest last (tests)

    def close(self) -> None:
        self._client.close()

    # --- catalogue --------------------------------------------------------------------
    def _meta(self, name: str) -> dict:
        got = self._client.retrieve(CATALOG, [_point_id(name)], with_payload=True)
        if not got:
            known = [s.name for s in self.list_sets()]
            raise SetNotFoundError(f"no embedding set named {name!r} in {self.location}"
                                   + (f"; sets: {', '.join(known)}" if known else
                                      "; create one with `mrlkit sets create`"))
        return dict(got[0].payload)

    def _save_meta(self, meta: dict) -> None:
        self._client.upsert(CATALOG, [self.m.PointStruct(id=_point_id(meta["name"]),
                                                         vector={}, payload=meta)], wait=True)

    def _count(self, meta: Mapping[str, Any]) -> int:
        return self._client.count(_col(meta), exact=True).count

    @staticmethod
    def _info(meta: Mapping[str, Any], count: int) -> SetInfo:
        return SetInfo(name=meta["name"], model=meta["model"],
                       truncate_dim=meta["truncate_dim"], stored_dim=meta["stored_dim"],
                       storage=meta["storage"], count=count, created_at=meta["created_at"],
                       allow_non_mrl=meta["allow_non_mrl"],
                       **transform_fields(meta.get("transform")))

    def create_set(self, name: str, model: str, truncate_dim: int | None = None, *,
                   storage: str = "float32", allow_non_mrl: bool = False,
                   index: bool = True) -> SetInfo:
        if not name or not name.strip():
            raise InvalidInputError(f"bad set name {name!r}: use a non-empty name")
        if storage not in STORAGE_PRECISIONS:
            raise InvalidInputError(f"storage must be float32 or float16, not {storage!r}")
        spec = get_spec(model)
        dim = validate_dim(spec, truncate_dim, allow_non_mrl=allow_non_mrl)
        with self._lock:
            if self._client.retrieve(CATALOG, [_point_id(name)]):
                raise SetExistsError(f"embedding set {name!r} exists already in "
                                     f"{self.location}")
            meta = {"name": name, "model": spec.name,
                    "truncate_dim": None if truncate_dim in (None, spec.native_dim) else dim,
                    "stored_dim": dim, "storage": storage, "allow_non_mrl": allow_non_mrl,
                    "first_dim": default_funnel(10**9, dim, spec.supports_mrl).stages[0].dim,
                    "transform": None, "filter_fields": [],
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self._make(meta)
            self._save_meta(meta)
        return self.get_set(name)

    def _quantization(self, precision: str):
        """Qdrant's quantisation for a first stage in ``precision`` (None: float32)."""
        m = self.m
        if precision == "binary":
            return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
        if precision == "int8":
            return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(
                type=m.ScalarType.INT8, quantile=0.99, always_ram=True))
        return None

    def _make(self, meta: dict) -> None:
        m = self.m
        datatype = m.Datatype.FLOAT16 if meta["storage"] == "float16" else None
        self._client.create_collection(_col(meta), vectors_config={
            "full": m.VectorParams(size=meta["stored_dim"], distance=m.Distance.COSINE,
                                   datatype=datatype),
            "first": m.VectorParams(size=meta["first_dim"], distance=m.Distance.COSINE,
                                    datatype=datatype, quantization_config=self._quantization(
                                        meta.get("first_precision") or "float32"))})

    def list_sets(self) -> list[SetInfo]:
        points, _ = self._client.scroll(CATALOG, limit=10_000, with_payload=True)
        return sorted((self._info(p.payload, self._count(p.payload)) for p in points),
                      key=lambda s: s.name)

    def get_set(self, name: str) -> SetInfo:
        meta = self._meta(name)
        return self._info(meta, self._count(meta))

    def drop_set(self, name: str) -> None:
        meta = self._meta(name)
        for gen in {meta.get("generation") or 0, (meta.get("generation") or 0) + 1}:
            if self._client.collection_exists(_collection(name, gen)):
                self._client.delete_collection(_collection(name, gen))
        self._client.delete(CATALOG, self.m.PointIdsList(points=[_point_id(name)]), wait=True)

    # --- writes ---------------------------------------------------------------------
    def add(self, name: str, ids: Sequence[str], embeddings: np.ndarray,
            texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
            upsert: bool = False) -> int:
        """Upsert a batch of points with ``wait=True`` (the whole batch in one request)."""
        with self._lock:
            meta = self._meta(name)
            ids, emb, texts, metas = check_batch(name, meta["stored_dim"], ids, embeddings,
                                                 texts, metadata,
                                                 transform=meta.get("transform"))
            existing = self._existing(meta, ids)
            if existing and not upsert:
                raise InvalidInputError(f"ids already in set {name!r}: {sorted(existing)[:5]}"
                                        "; use upsert to replace them")
            crash_point("after_vectors")
            crash_point("before_commit")
            self._write(meta, ids, emb, texts, metas)
        return len(ids)

    def _existing(self, meta: Mapping[str, Any], ids: Sequence[str]) -> set[str]:
        got = self._client.retrieve(_col(meta), [_point_id(i) for i in ids],
                                    with_payload=["id"])
        return {p.payload["id"] for p in got}

    def _write(self, meta, ids, emb, texts, metas) -> None:
        m = self.m
        first = vectors.truncate(emb, meta["first_dim"])
        for s in range(0, len(ids), _BATCH):
            self._client.upsert(_col(meta), m.Batch(
                ids=[_point_id(i) for i in ids[s:s + _BATCH]],
                vectors={"full": emb[s:s + _BATCH].tolist(),
                         "first": first[s:s + _BATCH].tolist()},
                payloads=[{"id": i, "text": t, "meta": md} for i, t, md in
                          zip(ids[s:s + _BATCH], texts[s:s + _BATCH], metas[s:s + _BATCH])]),
                wait=True)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        ids = [str(i) for i in ids]
        with self._lock:
            meta = self._meta(name)
            found = self._existing(meta, ids)
            if found:
                self._client.delete(_col(meta), self.m.PointIdsList(
                    points=[_point_id(i) for i in found]), wait=True)
        return len(found)

    def _all(self, meta: Mapping[str, Any], *, payload: bool = False
             ) -> tuple[list, np.ndarray, list]:
        """Every point's id, full vector and (optionally) payload, ordered by id."""
        points, offset = [], None
        while True:
            page, offset = self._client.scroll(_col(meta), limit=1_000, offset=offset,
                                               with_vectors=["full"],
                                               with_payload=True if payload else ["id"])
            points += page
            if offset is None:
                break
        points.sort(key=lambda p: p.payload["id"])
        dim = meta["stored_dim"]
        x = np.asarray([p.vector["full"] for p in points], np.float32).reshape(len(points), dim)
        return [p.payload["id"] for p in points], x, [p.payload for p in points]

    def _rebuild(self, meta: dict, transform=None, dim: int | None = None) -> None:
        """Write the set again into the next generation's collection, then switch the
        catalogue to it (one upsert) and drop the old one: a process killed before the
        switch leaves the set as it was, after it the new one complete."""
        old = _col(meta)
        ids, x, payloads = self._all(self._meta(meta["name"]), payload=True)
        if transform is not None:
            x = transform.apply(x)
        if dim is not None:
            x = vectors.truncate(x, dim)
        meta["generation"] = (meta.get("generation") or 0) + 1
        if self._client.collection_exists(_col(meta)):  # left by a killed rebuild
            self._client.delete_collection(_col(meta))
        self._make(meta)
        if ids:
            self._write(meta, ids, x, [p.get("text") for p in payloads],
                        [p.get("meta") or {} for p in payloads])
        meta["filter_fields"] = []
        crash_point("before_switch")
        self._save_meta(meta)
        self._client.delete_collection(old)
        self._calibrations.clear()

    def reindex(self, name: str, dim: int, *, allow_non_mrl: bool = False) -> SetInfo:
        with self._lock:
            meta = self._meta(name)
            spec = get_spec(meta["model"])
            if dim > meta["stored_dim"]:
                raise ReembedRequiredError(
                    f"set {name!r} stores {meta['stored_dim']} dimensions; {dim} needs the "
                    "texts embedded again (create a new set and index it)")
            refuse_adapted_reindex(name, meta.get("transform"))
            allow = allow_non_mrl or meta["allow_non_mrl"]
            dim = validate_dim(spec, dim, allow_non_mrl=allow)
            meta.update(stored_dim=dim, truncate_dim=None if dim == spec.native_dim else dim,
                        allow_non_mrl=allow, first_dim=min(meta["first_dim"], dim))
            self._rebuild(meta, dim=dim)
        return self.get_set(name)

    def index(self, name: str, funnel) -> list[str]:
        """Give the points a ``first`` named vector at the funnel's first-stage length,
        quantised by Qdrant when the stage is binary or int8 (the original floats stay for
        Qdrant's own use). The collection is rewritten from the stored vectors when the
        length or the quantisation changes (Qdrant cannot add a named vector in place)."""
        with self._lock:
            meta = self._meta(name)
            first = Funnel(funnel.stages[:1]).check(meta["stored_dim"], 1).stages[0]
            if first.precision == "float16":
                raise InvalidInputError("Qdrant quantises to binary or int8; a float16 first "
                                        "stage runs in mrlkit (index 128:float32:… instead)")
            if (first.dim, first.precision) != (meta["first_dim"],
                                                meta.get("first_precision") or "float32"):
                meta["first_dim"], meta["first_precision"] = first.dim, first.precision
                self._rebuild(meta)
        kind = "" if first.precision == "float32" else f", {first.precision}-quantised"
        return [f"named vector 'first' at {first.dim} dimensions{kind}"]

    def adapt(self, name: str, transform) -> SetInfo:
        with self._lock:
            meta = self._meta(name)
            meta["transform"] = compose_transform(meta.get("transform"), transform,
                                                  meta["stored_dim"])
            self._rebuild(meta, transform=transform)
        return self.get_set(name)

    def vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        ids, x, _ = self._all(self._meta(name))
        return ids, x

    # --- reads ----------------------------------------------------------------------
    def get(self, name: str, ids: Sequence[str]) -> list[Document | None]:
        ids = [str(i) for i in ids]
        meta = self._meta(name)
        got = self._client.retrieve(_col(meta), [_point_id(i) for i in ids],
                                    with_payload=True)
        found = {p.payload["id"]: Document(p.payload["id"], p.payload.get("text"),
                                           p.payload.get("meta") or {}) for p in got}
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

    def _filter(self, meta: dict, filters: Mapping[str, Any]):
        m = self.m
        for key, value in filters.items():
            if str(key) not in meta["filter_fields"]:
                schema = (m.PayloadSchemaType.BOOL if isinstance(value, bool) else
                          m.PayloadSchemaType.INTEGER if isinstance(value, int) else
                          m.PayloadSchemaType.KEYWORD)
                with warnings.catch_warnings():  # local mode has no payload indexes
                    warnings.simplefilter("ignore")
                    self._client.create_payload_index(_col(meta),
                                                      f"meta.{key}", schema, wait=True)
                meta["filter_fields"].append(str(key))
                self._save_meta(meta)
        return m.Filter(must=[m.FieldCondition(key=f"meta.{k}", match=m.MatchValue(value=v))
                              for k, v in filters.items()])

    def funnel_request(self, name: str, query: np.ndarray, funnel: Funnel, *, k: int,
                       filters: Mapping[str, Any] | None = None) -> dict:
        """The keyword arguments of the one ``query_points`` call that runs ``funnel``:
        the first stage as a ``prefetch`` on the ``first`` vector, the rest on ``full``."""
        meta = self._meta(name)
        m = self.m
        first, rest = funnel.stages[0], funnel.stages[1:]
        flt = self._filter(meta, filters) if filters else None
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

    def _native(self, meta: dict, funnel: Funnel, filters, adaptive, n: int) -> bool:
        stages = funnel.stages
        shape_ok = (stages[0].dim == meta["first_dim"]
                    and stages[0].precision == (meta.get("first_precision") or "float32")
                    and all(s.precision == "float32" and s.dim == meta["stored_dim"]
                            for s in stages[1:]) and len(stages) <= 2)
        if len(stages) == 1 and stages[0].dim == meta["stored_dim"] and \
                stages[0].precision == "float32" and meta["first_dim"] != meta["stored_dim"]:
            shape_ok = False  # a one-stage full search: the "full" vector, not "first"
        filters_ok = not filters or all(isinstance(v, (str, int, bool))
                                        for v in filters.values())
        return shape_ok and filters_ok and adaptive is None and n >= self.exact_below

    def search(self, name: str, queries: np.ndarray, *, k: int = 10, funnel=None,
               filters: Mapping[str, Any] | None = None, adaptive=None) -> SearchResult:
        meta = self._meta(name)
        stored_dim, n = meta["stored_dim"], self._count(meta)
        q = vectors.as_matrix(queries, name="queries")
        if q.shape[1] != stored_dim:
            raise InvalidInputError(f"set {name!r} expects {stored_dim}-d queries, "
                                    f"not {q.shape[1]}")
        q = apply_transform(meta.get("transform"), q)
        if funnel is None:
            funnel = default_funnel(n, stored_dim, get_spec(meta["model"]).supports_mrl
                                    or bool(meta.get("transform")), k)
        funnel = funnel.check(stored_dim, k)
        if n == 0:
            return SearchResult([[] for _ in q], [], [[] for _ in q])
        if not self._native(meta, funnel, filters, adaptive, n):
            return self._in_mrlkit(meta, q, funnel, filters, adaptive)
        t0 = time.perf_counter()
        hits = []
        for query in q:
            request = self.funnel_request(name, query, funnel, k=k, filters=filters)
            self.requests.append(request)
            res = self._client.query_points(_col(meta), **request)
            hits.append([Hit(p.payload["id"], float(p.score), p.payload.get("text"),
                             p.payload.get("meta") or {}) for p in res.points])
        ms = (time.perf_counter() - t0) * 1000
        timings = [StageTiming(s.dim, s.precision, s.keep or k, ms if i == 0 else 0.0,
                               "qdrant query" if i == 0 else "qdrant (same request)")
                   for i, s in enumerate(funnel.stages)]
        return SearchResult(hits, timings, [[s.dim for s in funnel.stages] for _ in q])

    def _in_mrlkit(self, meta, q, funnel, filters, adaptive) -> SearchResult:
        name = meta["name"]
        ids, x, payloads = self._all(meta, payload=True)
        if filters:
            keep = [r for r, p in enumerate(payloads)
                    if all(k in (p.get("meta") or {}) and p["meta"][k] == v
                           for k, v in filters.items())]
            ids, x, payloads = [ids[r] for r in keep], x[keep], [payloads[r] for r in keep]
        if not ids:
            return SearchResult([[] for _ in q], [], [[] for _ in q])
        source = MatrixSource(x, lambda d: self.calibration(name, d))
        rows, scores, timings, dims = execute(source, name, q, funnel, n_rows=len(ids),
                                              live=None, candidates=None, adaptive=adaptive)
        hits = [[Hit(ids[r], float(s), payloads[r].get("text"), payloads[r].get("meta") or {})
                 for r, s in zip(rr, ss)] for rr, ss in zip(rows, scores)]
        return SearchResult(hits, timings, dims)

    def info(self, name: str) -> dict[str, Any]:
        meta = self._meta(name)
        n = self._count(meta)
        info = self._info(meta, n)
        width = 2 if meta["storage"] == "float16" else 4
        return {**info.as_dict(), "rows": n, "dead_rows": 0,
                "stored_bytes": n * meta["stored_dim"] * width,
                "bytes_per_vector": meta["stored_dim"] * width,
                "views": [{"dim": meta["first_dim"],
                           "precision": meta.get("first_precision") or "float32",
                           "kind": "named vector 'first' (estimated)",
                           "bytes": n * meta["first_dim"] * width}],
                "first_stage_dim": meta["first_dim"], "location": self.location}
