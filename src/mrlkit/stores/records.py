"""Typed records that travel between callers, the store core and its engines.

A :class:`SetRecord` is built once from a backend's row (an engine may extend it with its
own fields); :class:`SetInfo`, :class:`StorageInfo` and :class:`SearchResult` are what
callers get back, each with ``as_dict()`` for JSON.

Example::

    >>> SetInfo("s", "m", None, 384, "float32", 0, "2026-01-01").as_dict()["stored_dim"]
    384
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Collection, Sequence

import numpy as np

from .. import vectors
from ..errors import InvalidInputError, SetNotFoundError
from ..funnel import StageTiming
from ..transform import Transform


@dataclass(frozen=True)
class SetInfo:
    """What a store knows about one embedding set."""

    name: str
    model: str
    truncate_dim: int | None  # None = native, never 0
    stored_dim: int
    storage: str               # float32 or float16
    count: int
    created_at: str
    allow_non_mrl: bool = False
    adapted: str | None = None          # the transform's method (pca, adaptor), if any
    mrl_dims: list[int] | None = None   # prefixes the transform made meaningful

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["mrl_dims"] = list(self.mrl_dims) if self.mrl_dims is not None else None
        return d


@dataclass(frozen=True)
class SetRecord:
    """One set as its engine keeps it, read once per operation. Engines subclass it
    (``kw_only``) to carry their own fields: a row id, a generation, a first-stage dim."""

    name: str
    model: str
    truncate_dim: int | None
    stored_dim: int
    storage: str
    allow_non_mrl: bool
    created_at: str
    transform: Transform | None = None
    plan: str | None = None  # the tuned search plan (JSON, :mod:`.tune`), None: untuned

    def info(self, count: int) -> SetInfo:
        t = self.transform
        return SetInfo(self.name, self.model, self.truncate_dim, self.stored_dim,
                       self.storage, count, self.created_at, self.allow_non_mrl,
                       t.method if t else None, list(t.mrl_dims) if t else None)

    @property
    def transform_json(self) -> str | None:
        return self.transform.to_json() if self.transform else None


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
class SearchResult:
    """Hits per query, per-stage timings, and the dimensions each query used."""

    hits: list[list[Hit]]
    timings: list[StageTiming]
    dims_used: list[list[int]]
    notes: list[str] = field(default_factory=list)  # e.g. an index that could not be written
    path: str = "generic"  # "native": the engine's own first stage ran; "generic": mrlkit's
    funnel: str = ""       # the funnel that ran (the default one when none was given)

    @classmethod
    def empty(cls, n_queries: int) -> SearchResult:
        return cls([[] for _ in range(n_queries)], [], [[] for _ in range(n_queries)])

    def as_dict(self) -> dict[str, Any]:
        return {"hits": [[dict(h.__dict__) for h in q] for q in self.hits],
                "timings": [dict(t.__dict__) for t in self.timings],
                "dims_used": self.dims_used, "notes": self.notes, "path": self.path,
                "funnel": self.funnel}


@dataclass(frozen=True)
class ViewInfo:
    """One derived structure of a set: a view file, an ANN or HNSW index, a collection."""

    dim: int
    precision: str
    bytes: int
    kind: str = "view"


@dataclass(frozen=True)
class StorageInfo:
    """The storage summary of a set (``mrlkit sets info``). ``details`` holds what only
    one backend knows (its indexed stages, schema version, first-stage dimension)."""

    set: SetInfo
    rows: int
    dead_rows: int
    stored_bytes: int
    bytes_per_vector: int
    views: list[ViewInfo]
    location: str
    details: dict[str, Any] = field(default_factory=dict)
    default_funnel: str = ""    # what a search without --funnel runs at this size
    funnel_reason: str = ""     # and why
    search_path: str = ""       # native (the engine's own first stage) or generic
    path_reason: str = ""       # and why (the planner's words)
    tuned: dict[str, Any] | None = None  # the measured plan (`sets tune`), None: untuned

    def as_dict(self) -> dict[str, Any]:
        return {**self.set.as_dict(), "rows": self.rows, "dead_rows": self.dead_rows,
                "stored_bytes": self.stored_bytes, "bytes_per_vector": self.bytes_per_vector,
                "views": [dict(v.__dict__) for v in self.views], **self.details,
                "default_funnel": self.default_funnel, "funnel_reason": self.funnel_reason,
                "search_path": self.search_path, "path_reason": self.path_reason,
                "tuned": self.tuned,
                "location": self.location}


@dataclass
class CheckReport:
    """What ``mrlkit sets check`` verified of one set, what it found, what it repaired
    and what it could not (with what to do about it)."""

    name: str
    location: str
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    delegated: str | None = None  # integrity the engine itself is responsible for
    quarantined: list[str] = field(default_factory=list)  # ids a repair set aside

    @property
    def ok(self) -> bool:
        """No problem is left (none found, or every one repaired)."""
        return not self.problems

    def found(self, problem: str, repaired: str | None = None) -> None:
        """Record a problem, or its repair when one was made."""
        if repaired is None:
            self.problems.append(problem)
        else:
            self.repaired.append(f"{problem}: {repaired}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.location, "ok": self.ok,
                "checked": self.checked, "problems": self.problems,
                "repaired": self.repaired, "delegated": self.delegated,
                "quarantined": self.quarantined}


@dataclass(frozen=True)
class Batch:
    """A checked write batch: ids, prepared float32 vectors at the set's stored dimension
    (transformed, unit norm), texts and metadata."""

    set_name: str
    ids: list[str]
    vectors: np.ndarray
    texts: list[str | None]
    metadata: list[dict[str, Any]]
    upsert: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def accept(self, existing: Collection[str]) -> None:
        """Refuse ids already stored unless this batch upserts."""
        if existing and not self.upsert:
            raise InvalidInputError(f"ids already in set {self.set_name!r}: "
                                    f"{sorted(existing)[:5]}; use upsert to replace them")

    def stored(self, storage: str) -> np.ndarray:
        """The vectors as they will read back from a ``storage`` set (float32)."""
        if storage == "float16":
            return self.vectors.astype(np.float16).astype(np.float32)
        return self.vectors


@dataclass(frozen=True)
class Rebuild:
    """How an engine rewrites a set's vectors: the record it becomes, and the map from
    old stored vectors to new ones (a transform, then a truncation)."""

    record: Any  # the engine's own SetRecord type, with the new fields
    transform: Transform | None = None
    truncate_to: int | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.transform is not None:
            x = self.transform.apply(x)
        if self.truncate_to is not None:
            x = vectors.truncate(x, self.truncate_to)
        return x


def not_found(name: str, location: str, known: Sequence[str]) -> SetNotFoundError:
    """The error an engine's ``record`` raises for an unknown set (naming the others)."""
    return SetNotFoundError(f"no embedding set named {name!r} in {location}"
                            + (f"; sets: {', '.join(sorted(known))}" if known else
                               "; create one with `mrlkit sets create`"))
