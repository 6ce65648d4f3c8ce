"""The local engine's graph indexes kept up to date off the search path: one loaded
index per (file, prefix dim), and the background thread that extends, compacts or
reloads it (:mod:`.local_graph` says when each is due and how it is written).

Example::

    >>> Graphs(writable=True).settle()
    True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .local_graph import GraphFiles, GraphIndex, LiveRows, Loaded, Read, due

log = logging.getLogger("mrlkit.stores")
RETRY_AFTER = 30  # seconds before work that failed (a full disk) is tried again


NICE = 10  # the graph thread's niceness: a search (at 0) outweighs it about 9 to 1 for a core
          # (CFS weights 1024 against 110)


def _yield_to_searches() -> None:
    """The work on this thread gives way to searches: it uses one core fewer than the
    machine has (at least one; faiss's OpenMP team of a graph build on every core left a
    search waiting for a core for tens of milliseconds; OpenMP's thread count is per
    calling thread, so the searches' own stays as it is), and it runs niced (Linux
    schedules threads one by one): on 2 cores, the searcher and the writers otherwise
    shared the one core the extension left them, and searches waited 20–60 ms at each
    extension's beat. A machine with idle cores gives it all the time it needs."""
    import os

    import faiss

    faiss.omp_set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: the work still runs
        pass


class Graphs:
    """The loaded graph indexes of one engine, brought up to date off the search
    path: :meth:`get` answers with what is loaded (its tail grown by the new rows) and
    hands the work an index needs (extend, compact, or load the file another process
    wrote) to one background thread per index. The index is loaded on a search only
    when none is (a set's first search builds it, as ``sets index`` does)."""

    def __init__(self, writable: bool) -> None:
        self.writable = writable
        self._loaded: dict[tuple[str, int], Loaded] = {}
        self._busy: dict[tuple[str, int], threading.Thread] = {}
        self._lock = threading.Lock()
        self._failed: dict[tuple[str, int], float] = {}  # when the work last failed

    def get(self, files: GraphFiles, matrix: Callable[[], np.ndarray], read: Read,
            dim: int, n_rows: int, live: LiveRows | None, *, persist: bool = True
            ) -> GraphIndex | None:
        """The index for a snapshot of ``n_rows`` rows: ``matrix()`` maps them all (for
        work on the index), ``read(start, stop)`` reads a few (the tail)."""
        key = (str(files.path(dim)), dim)
        loaded = self._loaded.get(key) or files.load(dim)
        if loaded is None:  # none on disk: built here (a set's first search, once)
            got = files.open(matrix(), dim, n_rows, persist=persist and self.writable,
                             live=live)
            if got is None:
                return None
            self._loaded[key] = got.loaded
            return got
        self._loaded[key] = loaded
        if self._stale(files.path(dim), loaded) or (
                self.writable and persist and due(loaded, n_rows, live) is not None):
            self._start(key, files, matrix, read, dim, n_rows, live)
        return GraphIndex(loaded, loaded.tail(read, dim, n_rows), dim, n_rows, live)

    def _stale(self, path: Path, loaded: Loaded) -> bool:
        """Did another process replace the file since it was loaded?"""
        try:
            st = path.stat()
        except OSError:
            return False
        return (st.st_ino, st.st_size, st.st_mtime_ns) != loaded.stamp

    def _start(self, key: tuple[str, int], files: GraphFiles,
               matrix: Callable[[], np.ndarray], read: Read, dim: int, n_rows: int,
               live: LiveRows | None) -> None:
        with self._lock:
            if key in self._busy or \
                    time.monotonic() - self._failed.get(key, -RETRY_AFTER) < RETRY_AFTER:
                return
            worker = threading.Thread(target=self._work, name="mrlkit-graph", daemon=True,
                                      args=(key, files, matrix, read, dim, n_rows, live))
            self._busy[key] = worker
        worker.start()

    def _work(self, key: tuple[str, int], files: GraphFiles,
              matrix: Callable[[], np.ndarray], read: Read, dim: int, n_rows: int,
              live: LiveRows | None) -> None:
        try:
            _yield_to_searches()
            loaded = self._loaded.get(key)
            got = files.load(dim)
            if self.writable and (got is None or due(got, n_rows, live) is not None):
                got = files.refresh(matrix(), dim, n_rows, live)
            if got is not None and (loaded is None or got.upto >= loaded.upto):
                # made ready here, not by the next search: its tail, its walk's bitmap
                got.tail(read, dim, n_rows)
                got.blocked(live)
                self._loaded[key] = got  # swapped in whole: searches see old or new
        except Exception as exc:  # a full disk: searches go on with the old index
            self._failed[key] = time.monotonic()
            log.warning("the graph index %s could not be brought up to date (%s): "
                        "searches go on with the one loaded; tried again in %d s",
                        files.path(dim), exc, RETRY_AFTER)
        finally:
            with self._lock:
                self._busy.pop(key, None)

    def install(self, files: GraphFiles, dim: int, loaded: Loaded) -> None:
        """Serve ``loaded`` (an index just brought up to date by ``sets index``)."""
        self._loaded[(str(files.path(dim)), dim)] = loaded

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the background work started so far (True: none is left)."""
        for worker in list(self._busy.values()):
            worker.join(timeout)
        return not self._busy

    def forget(self) -> None:
        self.settle()
        self._loaded.clear()
