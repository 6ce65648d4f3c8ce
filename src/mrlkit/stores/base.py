"""The Store protocol: durable embedding sets, one per (model, ``truncate_dim``).

A store keeps each vector once, at the set's stored dimension, and serves any prefix and
precision from it through *resolution views*. Every backend implements :class:`Store`;
the same contract suite (``tests/stores/``) runs against each.

Example::

    >>> from mrlkit.stores import open_store
    >>> store = open_store("/tmp/mrlkit-example")              # doctest: +SKIP
    >>> store.create_set("docs", "all-MiniLM-L6-v2")           # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from .. import vectors
from ..errors import InvalidInputError
from ..vectors import Int8Calibration

STORAGE_PRECISIONS = ("float32", "float16")


@dataclass(frozen=True)
class SetInfo:
    """What a store knows about one embedding set."""

    name: str
    model: str
    truncate_dim: int | None  # None = native, as in ADR-023
    stored_dim: int
    storage: str               # float32 or float16
    count: int
    created_at: str
    allow_non_mrl: bool = False
    adapted: str | None = None          # the transform's method (pca, adaptor), if any
    mrl_dims: list[int] | None = None   # prefixes the transform made meaningful

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Document:
    """A stored document: external id, text and metadata."""

    id: str
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    """One search result: the score is the last stage's."""

    id: str
    score: float
    text: str | None
    metadata: dict[str, Any]


@dataclass
class StageTiming:
    """Time a funnel stage took for the whole query batch."""

    dim: int
    precision: str
    keep: int
    ms: float
    method: str = "exact"  # exact, ann or rerank


@dataclass
class SearchResult:
    """Hits per query, per-stage timings, and the dimensions each query used."""

    hits: list[list[Hit]]
    timings: list[StageTiming]
    dims_used: list[list[int]]

    def as_dict(self) -> dict[str, Any]:
        return {"hits": [[h.__dict__ for h in q] for q in self.hits],
                "timings": [t.__dict__ for t in self.timings],
                "dims_used": self.dims_used}


@dataclass
class View:
    """A resolution view over every row of a set (deleted rows included; the funnel
    masks them): ``codes`` at (``dim``, ``precision``), and the int8 calibration."""

    dim: int
    precision: str
    codes: np.ndarray
    calibration: Int8Calibration | None = None


@runtime_checkable
class Store(Protocol):
    """What every backend offers. Vectors passed in are float32 at the set's stored
    dimension, already prepared (transformed, truncated, unit norm)."""

    location: str

    def create_set(self, name: str, model: str, truncate_dim: int | None = None, *,
                   storage: str = "float32", allow_non_mrl: bool = False,
                   index: bool = True) -> SetInfo: ...

    def index(self, name: str, funnel) -> list[str]: ...

    def list_sets(self) -> list[SetInfo]: ...

    def get_set(self, name: str) -> SetInfo: ...

    def drop_set(self, name: str) -> None: ...

    def reindex(self, name: str, dim: int, *, allow_non_mrl: bool = False) -> SetInfo: ...

    def add(self, name: str, ids: Sequence[str], embeddings: np.ndarray,
            texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
            upsert: bool = False) -> int: ...

    def delete(self, name: str, ids: Sequence[str]) -> int: ...

    def adapt(self, name: str, transform) -> SetInfo: ...

    def vectors(self, name: str) -> tuple[list[str], np.ndarray]: ...

    def get(self, name: str, ids: Sequence[str]) -> list[Document | None]: ...

    def info(self, name: str) -> dict[str, Any]: ...

    def search(self, name: str, queries: np.ndarray, *, k: int = 10, funnel=None,
               filters: Mapping[str, Any] | None = None, adaptive=None) -> SearchResult: ...

    def close(self) -> None: ...


# --- shared by every backend ------------------------------------------------------
def crash_point(name: str) -> None:
    """Test hook: the kill -9 contract test dies exactly here (``MRLKIT_TEST_CRASH_AT``)."""
    if os.environ.get("MRLKIT_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), 9)


def transform_fields(stored: str | dict | None) -> dict[str, Any]:
    """SetInfo's ``adapted`` and ``mrl_dims`` from a set's stored transform (JSON)."""
    if not stored:
        return {"adapted": None, "mrl_dims": None}
    t = json.loads(stored) if isinstance(stored, str) else stored
    return {"adapted": t["method"], "mrl_dims": list(t["mrl_dims"])}


_matrices: dict[int, np.ndarray] = {}


def apply_transform(stored: str | dict | None, x: np.ndarray) -> np.ndarray:
    """Unit-norm rows of ``x``, mapped by a set's stored transform when it has one."""
    x = vectors.normalize(x)
    if not stored:
        return x
    key = hash(stored if isinstance(stored, str) else json.dumps(stored, sort_keys=True))
    if key not in _matrices:
        t = json.loads(stored) if isinstance(stored, str) else stored
        _matrices.clear()  # one set's matrix at a time is plenty
        _matrices[key] = np.asarray(t["matrix"], np.float32)
    return vectors.normalize(x @ _matrices[key])


def compose_transform(stored: str | dict | None, new, dim: int) -> dict[str, Any]:
    """The transform to keep after applying ``new`` on top of a set's current one."""
    if new.matrix.shape != (dim, dim):
        raise InvalidInputError(f"a transform for this set must be {dim}×{dim}, "
                                f"not {new.matrix.shape[0]}×{new.matrix.shape[1]}")
    total = new.to_dict()
    if stored:
        old = json.loads(stored) if isinstance(stored, str) else stored
        total["matrix"] = (np.asarray(old["matrix"], np.float32) @ new.matrix).tolist()
        total["method"] = f"{old['method']}+{new.method}"
    return total


def refuse_adapted_reindex(name: str, stored: str | dict | None) -> None:
    """Reindexing an adapted set would need queries transformed at the full dimension
    and then truncated; not supported: search its prefixes through a funnel instead."""
    if stored:
        raise InvalidInputError(
            f"set {name!r} is adapted ({transform_fields(stored)['adapted']}): search its "
            "prefixes with a funnel (e.g. 64:float32:200,<full>); reindexing an adapted "
            "set to a shorter prefix is not supported")


def check_batch(name: str, stored_dim: int, ids: Sequence[str], embeddings: np.ndarray,
                texts: Sequence[str | None] | None,
                metadata: Sequence[Mapping[str, Any] | None] | None, *,
                transform: str | dict | None = None,
                ) -> tuple[list[str], np.ndarray, list[str | None], list[dict[str, Any]]]:
    """Check a write batch before anything is written; return it normalised.

    Example::

        >>> check_batch("s", 2, ["a"], np.array([[3.0, 4.0]]), None, None)[1].tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    ids = [str(i) for i in ids]
    if not ids:
        raise InvalidInputError("empty batch: nothing to add")
    if any(not i for i in ids):
        raise InvalidInputError("document ids must be non-empty strings")
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for i in ids:
            if i in seen:
                dup.append(i)
            seen.add(i)
        raise InvalidInputError(f"duplicate ids in one batch: {sorted(set(dup))[:5]}")
    emb = vectors.as_matrix(embeddings, name="embeddings")
    if emb.shape[0] != len(ids):
        raise InvalidInputError(f"{len(ids)} ids but {emb.shape[0]} vectors")
    if emb.shape[1] != stored_dim:
        raise InvalidInputError(f"set {name!r} expects {stored_dim} dimensions, "
                                f"not {emb.shape[1]}")
    texts = list(texts) if texts is not None else [None] * len(ids)
    if len(texts) != len(ids):
        raise InvalidInputError(f"{len(ids)} ids but {len(texts)} texts")
    for i, t in zip(ids, texts):
        if t is not None and (not isinstance(t, str) or not t.strip()):
            raise InvalidInputError(f"document {i!r} has an empty text")
    metas = [dict(m) if m else {} for m in (metadata or [None] * len(ids))]
    if len(metas) != len(ids):
        raise InvalidInputError(f"{len(ids)} ids but {len(metas)} metadata entries")
    return ids, apply_transform(transform, emb), texts, metas
