"""A Qdrant server or cluster through ``qdrant-client``: the adapter behind
``qdrant+http(s)://host:port`` (API key from ``QDRANT_API_KEY``), and ``qdrant+local:PATH``
(the client's pure-Python local mode: stores written by mrlkit 0.3 and older, and tests
of the server's request path). It executes the values of :mod:`.qdrant_plan` as they are.

Example::

    >>> adapter = ServerAdapter("qdrant+http://localhost:6333")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from typing import Any
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError, StoreError
from .qdrant_plan import CollectionSpec, Hit, Query, Record

_BATCH = 1_000  # points per upsert request


class ServerAdapter:
    """Collections on a Qdrant server (or the client's local mode)."""

    def __init__(self, location: str) -> None:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise StoreError("a Qdrant server needs qdrant-client: "
                             "pip install 'mrlkit[qdrant]'") from None
        self.m = models
        self.location = location
        self.single_process = location.startswith("qdrant+local:")
        if self.single_process:
            path = location.split(":", 1)[1]
            if not path:
                raise InvalidInputError("qdrant+local: needs a folder")
            self.client = QdrantClient(path=os.path.expanduser(path))
        else:
            self.client = QdrantClient(url=location.split("+", 1)[1],
                                       api_key=os.environ.get("QDRANT_API_KEY"))

    def exists(self, collection: str) -> bool:
        return bool(self.client.collection_exists(collection))

    def create(self, collection: str, spec: CollectionSpec) -> None:
        m = self.m
        self.client.create_collection(collection, vectors_config={
            name: m.VectorParams(
                size=v.size, distance=m.Distance.COSINE,
                datatype=m.Datatype.FLOAT16 if v.datatype == "float16" else None,
                hnsw_config=m.HnswConfigDiff(m=v.hnsw_m, ef_construct=100,
                                             full_scan_threshold=10_000),
                quantization_config=self._quantization(v.quantization))
            for name, v in spec.vectors.items()})

    def _quantization(self, kind: str | None) -> Any:
        m = self.m
        if kind == "binary":
            return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
        if kind == "int8":
            return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(
                type=m.ScalarType.INT8, quantile=0.99, always_ram=True))
        return None

    def spec(self, collection: str) -> dict[str, Any]:
        vecs = self.client.get_collection(collection).config.params.vectors or {}
        assert isinstance(vecs, dict)
        return {name: {"size": v.size, "hnsw_m": v.hnsw_config.m if v.hnsw_config else None,
                       "datatype": v.datatype.value.lower() if v.datatype else "float32",
                       "quantization": _quantization_name(v.quantization_config)}
                for name, v in vecs.items()}

    def delete_collection(self, collection: str) -> None:
        self.client.delete_collection(collection)

    def upsert(self, collection: str, ids: Sequence[str],
               vectors: Mapping[str, np.ndarray] | None,
               payloads: Sequence[dict[str, Any]]) -> None:
        for s in range(0, len(ids), _BATCH):
            e = min(len(ids), s + _BATCH)
            self.client.upsert(collection, self.m.Batch(
                ids=list(ids[s:e]),
                vectors={n: v[s:e].tolist() for n, v in vectors.items()} if vectors
                else {}, payloads=list(payloads[s:e])), wait=True)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self.client.delete(collection, self.m.PointIdsList(points=list(ids)), wait=True)

    def retrieve(self, collection: str, ids: Sequence[str], *,
                 payload: bool | list[str] = True,
                 vectors: Sequence[str] = ()) -> list[Record]:
        got = self.client.retrieve(collection, list(ids), with_payload=payload,
                                   with_vectors=list(vectors) if vectors else False)
        return [Record.of(p) for p in got]

    def scroll(self, collection: str, *, limit: int | None = None,
               vectors: Sequence[str] = ()) -> Iterator[Record]:
        offset, left = None, limit
        while left is None or left > 0:
            page = 1_000 if left is None else min(left, 1_000)
            got, offset = self.client.scroll(
                collection, limit=page, offset=offset, with_payload=True,
                with_vectors=list(vectors) if vectors else False)
            yield from (Record.of(p) for p in got)
            left = None if left is None else left - len(got)
            if offset is None:
                return

    def count(self, collection: str) -> int:
        return int(self.client.count(collection, exact=True).count)

    def index_payload(self, collection: str, key: str, kind: str) -> None:
        m = self.m
        schema = {"bool": m.PayloadSchemaType.BOOL, "integer": m.PayloadSchemaType.INTEGER,
                  "keyword": m.PayloadSchemaType.KEYWORD}[kind]
        with warnings.catch_warnings():  # local mode has no payload indexes
            warnings.simplefilter("ignore")
            self.client.create_payload_index(collection, key, schema, wait=True)

    def query(self, collection: str, queries: Sequence[Query]) -> list[list[Hit]]:
        requests = [self.request(x) for x in queries]
        got = self.client.query_batch_points(collection, requests)
        return [[Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in r.points]
                for r in got]

    def request(self, x: Query) -> Any:
        """``x`` as the client's ``QueryRequest``, field by field."""
        m = self.m
        flt = m.Filter(must=[m.FieldCondition(key=k, match=m.MatchValue(value=v))
                             for k, v in x.match]) if x.match else None
        prefetch = None
        if x.prefetch is not None:
            p = x.prefetch
            prefetch = m.Prefetch(query=p.query.tolist(), using=p.using, limit=p.limit,
                                  filter=flt, params=self._params(p.quantized))
        return m.QueryRequest(query=x.query.tolist(), using=x.using, limit=x.limit,
                              prefetch=prefetch, with_payload=True,
                              filter=None if prefetch else flt,
                              params=self._params(x.quantized))

    def _params(self, quantized: bool) -> Any:
        m = self.m
        return m.SearchParams(quantization=m.QuantizationSearchParams(
            ignore=False, rescore=False)) if quantized else None

    def settle(self, collection: str) -> None:
        """Every upsert waited for the server already."""

    def pending(self, collection: str) -> int:
        return 0  # a server indexes by itself, in the background

    def optimize(self, collection: str) -> None:
        """A server optimises by itself."""

    def close(self) -> None:
        self.client.close()



def _quantization_name(config: Any) -> str | None:
    name = type(config).__name__
    return None if config is None else {"BinaryQuantization": "binary",
                                        "ScalarQuantization": "int8"}.get(name, name)
