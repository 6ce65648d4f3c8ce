"""The local engine's vectors as the generic funnel reads them (:class:`LocalSource`) and
its graph searched at the engine's ``ef_search`` (:class:`Tuned`).

Example::

    >>> Tuned.__name__
    'Tuned'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..funnel import Index, View
from ..vectors import Int8Calibration
from .local_db import why
from .local_graph import GraphIndex
from .seam import Calibrate

if TYPE_CHECKING:
    from .local import LocalEngine
    from .local_db import LocalRecord
    from .local_files import SetFiles


# a float16 set's exact scan scores a float32 copy kept in memory up to this size: NumPy
# converts float16 at ~1.4 ns a value, 50× the cost of the dot product itself (a 5,000 ×
# 384 scan: 2.8 ms converting every query against 0.06 ms on float32)
F32_COPY_BYTES = 256 * 2**20


@dataclass(frozen=True)
class LiveMask:
    """The live rows of one snapshot of a set: ``at`` (generation, rows, deletion-log
    entries), the mask (None: every row is live), the dead rows' count, and the log's
    entries read so far (``log``; None when the mask came from the catalogue)."""

    at: tuple[int, int, int | None]
    mask: np.ndarray | None
    dead: int
    log: np.ndarray | None

    @property
    def logged(self) -> int | None:
        return None if self.log is None else len(self.log)

    @classmethod
    def of(cls, rec: LocalRecord, last: LiveMask | None, files: SetFiles,
           catalogue: Callable[[], np.ndarray]) -> LiveMask:
        """The mask of ``rec``'s snapshot: ``last`` (the one a search used before)
        carried forward by the deletion-log entries since, or the whole log, or — no
        log, or a damaged one — ``catalogue()`` (the rows holding a document)."""
        if last is not None and last.at == (rec.generation, rec.n_rows, rec.n_dead):
            return last
        if rec.n_dead is not None:
            if last is not None and last.logged is not None and last.at[1] <= rec.n_rows \
                    and last.logged <= rec.n_dead and last.at[0] == rec.generation:
                more = files.dead_rows(last.logged, rec.n_dead)
                if more is not None:
                    return last.grown(rec, more)
            dead = files.dead_rows(0, rec.n_dead)
            if dead is not None:
                return cls((rec.generation, 0, 0), None, 0,
                           np.empty(0, np.int64)).grown(rec, dead)
        mask = catalogue()
        n_dead = rec.n_rows - int(np.count_nonzero(mask))
        return cls((rec.generation, rec.n_rows, rec.n_dead), mask if n_dead else None,
                   n_dead, None)

    def grown(self, rec: LocalRecord, more: np.ndarray) -> LiveMask:
        """This mask carried to ``rec``'s snapshot: its new rows live, ``more`` (the
        deletion-log entries since) dead; a copy (searches may hold this one)."""
        n = rec.n_rows
        log = more if self.log is None or not len(self.log) else \
            np.concatenate([self.log, more])
        if not len(log):
            return LiveMask((rec.generation, n, rec.n_dead), None, 0, log)
        if self.mask is not None and len(self.mask) == n:
            mask = self.mask.copy()  # one copy: searches may hold the old mask
        else:
            mask = np.ones(n, bool)
            if self.mask is not None:
                mask[:len(self.mask)] = self.mask
        newly = more[mask[more]]
        mask[more] = False
        newly_dead = len(newly) if len(newly) < 2 else len(np.unique(newly))
        return LiveMask((rec.generation, n, rec.n_dead), mask, self.dead + newly_dead, log)


class LocalSource:
    """One set's vectors as the generic funnel reads them, pinned to the record read
    once per search (so that the funnel's calls do not query SQLite again)."""

    def __init__(self, engine: LocalEngine, rec: LocalRecord, calibrate: Calibrate,
                 notes: list[str] | None = None, live: LiveMask | None = None) -> None:
        self.engine, self.rec, self.calibrate = engine, rec, calibrate
        self.notes = notes if notes is not None else []
        self.live = live

    def view(self, dim: int, precision: str) -> View:
        """The (dim, precision) view (int8: built with the core's calibration); when it
        cannot be written, computed in memory and said in ``notes`` (a search never fails
        for want of disk)."""
        cal = self.calibrate(dim) if precision == "int8" else None
        engine, rec = self.engine, self.rec
        if (precision == "float32" and dim == rec.stored_dim and rec.storage == "float16"
                and rec.n_rows * dim * 4 <= F32_COPY_BYTES):
            return engine.cached(  # type: ignore[no-any-return]
                "f32", rec, (), lambda: View(dim, "float32",
                                             engine.matrix(rec).astype(np.float32)))

        def make() -> tuple[View, str | None]:
            files = engine.files(rec)
            try:
                return files.view(dim, precision, calibration=cal), None
            except OSError as exc:
                return files.view(dim, precision, persist=False, calibration=cal), (
                    f"the {dim}-d {precision} view could not be written ({why(exc)}): "
                    "computed in memory for this search")

        view, note = engine.cached("view", rec, (dim, precision), make)
        if cal is not None and view.calibration is not cal[0]:  # the core refitted it
            engine.uncache("view", rec, (dim, precision))
            view, note = engine.cached("view", rec, (dim, precision), make)
        if note:
            self.notes.append(note)
        return view  # type: ignore[no-any-return]

    def full_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.engine.reader(self.rec).read(rows)

    def calibration(self, dim: int) -> Int8Calibration:
        return self.calibrate(dim)[0]

    def ann(self, dim: int) -> Index | None:
        """The HNSW index of the ``dim`` prefix, as loaded (its tail and the rows
        deleted since carried to this snapshot; see :class:`.local_graph_work.Graphs`), or
        None when it cannot be written and none is on disk: said in ``notes``. The
        planner decides when it is walked."""
        engine, rec = self.engine, self.rec
        files = engine.graph_files(rec)
        reader = engine.reader(rec)

        def matrix() -> np.ndarray:
            return engine.matrix(rec)
        try:
            graph = engine.graphs.get(files, matrix, reader.block, dim, rec.n_rows,
                                      self.live)
        except OSError as exc:
            graph = engine.graphs.get(files, matrix, reader.block, dim, rec.n_rows,
                                      self.live, persist=False)
            self.notes.append(
                f"the HNSW index of the {dim}-d prefix could not be written "
                f"({why(exc)}): " + ("the index on disk was used and the rows past it "
                                     "scored exactly" if graph is not None
                                     else "the first stage ran as an exact scan"))
        return None if graph is None else Tuned(graph, engine.ef_search)


class Tuned:
    """A graph index searched with the engine's ``ef_search`` (None: the stage's keep)."""

    def __init__(self, graph: GraphIndex, ef: int | None) -> None:
        self.graph, self.ef = graph, ef
        # its answers are live rows only when it was given the live rows
        self.masks_dead = graph.live is not None

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.graph.search(x, k, self.ef)
