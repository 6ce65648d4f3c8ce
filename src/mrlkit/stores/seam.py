"""The seam between the store core and an engine: what an engine implements (:class:`Engine`:
I/O primitives — records, writes, reads, its own first stage), what it hands back
(:class:`Scan`, :class:`Partial`), and the defaults it may inherit. Nothing here
decides anything: the planner (:mod:`.plan`) and the core (:mod:`.core`) do.

Example::

    >>> Scan(0, lambda rows: {}).empty
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from ..funnel import FunnelSource, Stage, StageTiming
from ..vectors import Int8Calibration
from .plan import Capabilities, Plan
from .records import Batch, CheckReport, Document, Hit, Rebuild, SetRecord, StorageInfo

R = TypeVar("R", bound=SetRecord)
Documents = Callable[[np.ndarray], Mapping[int, Document]]
# dim → the set's int8 calibration at ``dim`` and the rows it was fitted on (the core's)
Calibrate = Callable[[int], tuple[Int8Calibration, int]]


@dataclass
class Scan:
    """Every row of a set (or those a filter leaves) handed to the generic funnel: the
    engine's own views (``source``) or its vectors read into memory (``matrix``)."""

    n_rows: int
    documents: Documents          # row numbers → documents, for the hits
    source: FunnelSource | None = None
    matrix: np.ndarray | None = None
    live: np.ndarray | None = None        # mask of live rows (None: all)
    candidates: np.ndarray | None = None  # rows a filter leaves (None: no filter)
    dead: int | None = None               # rows ``live`` masks (None: count them)
    # each row's metadata, from an engine that leaves filtering to the core (None: the
    # engine filtered, into ``candidates``, or there is no filter)
    metadata: Sequence[Mapping[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)  # what the search had to do otherwise

    @property
    def empty(self) -> bool:
        return (self.n_rows == 0 or (self.candidates is not None and not len(self.candidates))
                or (self.live is not None and not self.live.any()))


@dataclass
class Partial:
    """What an engine's native search ran: the funnel's first ``done`` stages. Row
    numbers index ``matrix`` (the survivors' stored vectors) when stages are left."""

    done: int
    rows: list[np.ndarray]
    scores: list[np.ndarray]
    timings: list[StageTiming]
    documents: Documents
    matrix: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


class Engine(Protocol[R]):
    """What a backend implements: I/O only. ``record`` raises :func:`rules.not_found`."""

    @property
    def kind(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def capabilities(self) -> Capabilities: ...  # what the planner may ask of it

    def record(self, name: str) -> R: ...
    def records(self) -> list[R]: ...
    def count(self, rec: R) -> int: ...   # live documents
    def rows(self, rec: R) -> int: ...    # cheap: what a search sizes its funnel on
    # False: the set exists; ``first`` is the stage a large set reads (built when
    # ``build``); ``spec`` the model's ModelSpec as data, for engines that keep it
    def create(self, rec: SetRecord, first: Stage, build: bool,
               spec: Mapping[str, Any]) -> bool: ...
    def drop(self, name: str) -> None: ...
    def add(self, name: str, prepare: Callable[[R], Batch]) -> int: ...
    def delete(self, name: str, ids: list[str]) -> int: ...
    def rebuild(self, name: str, plan: Callable[[R], Rebuild]) -> None: ...
    def save_plan(self, name: str, plan: str | None) -> None: ...  # the record's ``plan``
    def index(self, rec: R, first: Stage, native: bool,
              calibrate: Calibrate) -> list[str]: ...
    def vectors(self, rec: R) -> tuple[list[str], np.ndarray]: ...
    def get(self, rec: R, ids: list[str]) -> dict[str, Document]: ...
    def scroll(self, rec: R, offset: int, limit: int) -> list[Document]: ...
    def sample(self, rec: R, rows: np.ndarray) -> np.ndarray: ...  # vectors of rows
    def calibration(self, rec: R, dim: int) -> tuple[Int8Calibration, int] | None: ...
    def save_calibration(self, rec: R, dim: int, cal: Int8Calibration, rows: int) -> None: ...
    def built(self, rec: R) -> Collection[tuple[int, str]]: ...  # first stages indexed
    def native(self, rec: R, q: np.ndarray, plan: Plan,
               filters: dict[str, Any] | None) -> Partial | None: ...
    def scan(self, rec: R, filters: dict[str, Any] | None, calibrate: Calibrate) -> Scan: ...
    def storage(self, rec: R, count: int) -> StorageInfo: ...
    def check(self, rec: R, report: CheckReport, repair: bool) -> bool: ...
    def close(self) -> None: ...


class EngineDefaults(Generic[R]):
    """What an engine without a native funnel or kept calibrations inherits."""

    def vectors(self, rec: R) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError

    def sample(self, rec: R, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` (numbered in the engine's stable order)."""
        x = self.vectors(rec)[1]
        return np.asarray(x[rows[rows < len(x)]])

    def built(self, rec: R) -> Collection[tuple[int, str]]:
        return ()

    def native(self, rec: R, q: np.ndarray, plan: Plan,
               filters: dict[str, Any] | None) -> Partial | None:
        return None

    def calibration(self, rec: R, dim: int) -> tuple[Int8Calibration, int] | None:
        return None

    def save_calibration(self, rec: R, dim: int, cal: Int8Calibration, rows: int) -> None:
        return None

    def check(self, rec: R, report: CheckReport, repair: bool) -> bool:
        """Engine-specific checks; True when the engine verified the stored vectors itself
        (else the core reads them and does)."""
        return False


F = TypeVar("F", bound="FirstStaged")


@dataclass(frozen=True, kw_only=True)
class FirstStaged(SetRecord):
    """A record of an engine that keeps the first-stage prefix as its own vector."""

    first_dim: int


class Rewrites(Generic[F]):
    """``rebuild`` for engines that write a set again into a new collection (chroma,
    qdrant): the first-stage prefix is kept, cut to the new stored dimension."""

    _lock: Any

    def record(self, name: str) -> F:
        raise NotImplementedError

    def _rewrite(self, old: F, new: F, apply: Callable[[np.ndarray], np.ndarray]) -> None:
        raise NotImplementedError

    def rebuild(self, name: str, plan: Callable[[F], Rebuild]) -> None:
        with self._lock:
            rec = self.record(name)
            p = plan(rec)
            new: F = p.record
            self._rewrite(rec, replace(new, first_dim=min(new.first_dim, new.stored_dim)),
                          p.apply)


def hits_of(documents: Documents, rows: list[np.ndarray], scores: list[np.ndarray]
          ) -> list[list[Hit]]:
    """Per query, its rows and scores as hits, with the documents one lookup returns."""
    if len(rows) == 1:  # one query: its rows are distinct already
        wanted = np.asarray(rows[0], np.int64)
    else:
        wanted = (np.unique(np.concatenate(rows)) if rows else np.empty(0)).astype(np.int64)
    docs = documents(wanted)
    out = []
    for rr, ss in zip(rows, scores):
        hits = []
        for r, s in zip(rr.tolist(), ss.tolist()):
            d = docs.get(r)
            if d is not None:
                hits.append(Hit(d.id, float(s), d.text, d.metadata))
        out.append(hits)
    return out
