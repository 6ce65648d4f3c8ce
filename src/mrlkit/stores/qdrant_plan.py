"""What the ``qdrant`` engine asks of Qdrant, built once: collection layouts, points and
funnel queries as plain values that two thin adapters execute — ``qdrant_edge`` (Qdrant's
engine in-process, ``qdrant:PATH``) and ``qdrant_server`` (``qdrant-client`` against a
server or cluster, ``qdrant+http(s)://``). Whatever runs embedded is what a server gets:
the adapters translate these values field by field and decide nothing.

Example::

    >>> v = VectorSpec(size=64, hnsw_m=16)
    >>> (v.size, v.quantization, v.datatype)
    (64, None, 'float32')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

HNSW_M = 16            # graph degree of the prefix vector (Qdrant's default)
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_BELOW = 10_000  # Qdrant's own threshold (kB) under which a segment is scanned


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of a collection: its length, storage type, HNSW degree (0: no
    graph — the vector is only read to rescore) and quantisation (None, int8, binary)."""

    size: int
    hnsw_m: int = HNSW_M
    datatype: str = "float32"          # or float16
    quantization: str | None = None    # int8 or binary (kept in RAM)


@dataclass(frozen=True)
class CollectionSpec:
    """Named vectors of a collection (empty: a catalogue holding only payloads)."""

    vectors: Mapping[str, VectorSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class Prefetch:
    """The funnel's first stage inside a query: ``limit`` candidates by ``using``."""

    query: np.ndarray
    using: str
    limit: int
    quantized: bool = False    # search the quantised vector and keep its score (no rescore)


@dataclass(frozen=True)
class Query:
    """One Query API request: ``prefetch`` (if any) inside, ``using`` outside; ``match``
    is the filter, exact values on payload keys, all of which must hold."""

    query: np.ndarray
    using: str
    limit: int
    prefetch: Prefetch | None = None
    match: tuple[tuple[str, Any], ...] = ()
    quantized: bool = False

    def describe(self) -> dict[str, Any]:
        """The request's shape without its vectors: what tests compare across adapters."""
        p = self.prefetch
        return {"using": self.using, "limit": self.limit, "dim": len(self.query),
                "match": list(self.match), "quantized": self.quantized,
                "prefetch": None if p is None else {
                    "using": p.using, "limit": p.limit, "dim": len(p.query),
                    "quantized": p.quantized}}


@dataclass(frozen=True)
class Record:
    """A point read back: its id, payload and the named vectors asked for."""

    id: str
    payload: dict[str, Any]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, point: Any) -> Record:
        """A point as either Qdrant API returns it (``id``, ``payload``, ``vector``)."""
        vec = point.vector if isinstance(point.vector, dict) else {}
        return cls(str(point.id), dict(point.payload or {}),
                   {n: np.asarray(v, np.float32) for n, v in vec.items()})


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


class Adapter(Protocol):
    """What executes the values above on one kind of Qdrant: I/O only."""

    location: str
    single_process: bool

    def exists(self, collection: str) -> bool: ...
    def create(self, collection: str, spec: CollectionSpec) -> None: ...
    def delete_collection(self, collection: str) -> None: ...
    def spec(self, collection: str) -> dict[str, Any]: ...  # as configured, for info/tests
    def upsert(self, collection: str, ids: Sequence[str],
               vectors: Mapping[str, np.ndarray] | None,
               payloads: Sequence[dict[str, Any]]) -> None: ...
    def delete(self, collection: str, ids: Sequence[str]) -> None: ...
    def retrieve(self, collection: str, ids: Sequence[str], *,
                 payload: bool | list[str] = True,
                 vectors: Sequence[str] = ()) -> list[Record]: ...
    def scroll(self, collection: str, *, limit: int | None = None,
               vectors: Sequence[str] = ()) -> Iterator[Record]: ...
    def count(self, collection: str) -> int: ...
    def index_payload(self, collection: str, key: str, kind: str) -> None: ...
    def query(self, collection: str, queries: Sequence[Query]) -> list[list[Hit]]: ...
    def settle(self, collection: str) -> None: ...  # every update so far durable
    def pending(self, collection: str) -> int: ...  # points no index covers yet
    def optimize(self, collection: str) -> None: ...  # index them (blocks)
    def close(self) -> None: ...


def payload_kind(value: Any) -> str:
    """The payload index a filter on ``value`` needs."""
    return "bool" if isinstance(value, bool) else "integer" if isinstance(value, int) \
        else "keyword"
