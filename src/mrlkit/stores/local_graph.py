"""The local engine's graph index: faiss HNSW over a short float prefix, 8-bit codes.

One file per (generation, prefix dim) under ``ann/``, read memory-mapped for search
(faiss's ``IO_FLAG_MMAP_IFC``: the codes and the graph stay in the page cache, and only
the pages a query walks become resident). A search never waits for the index to change:

- rows added after the index was written are scored exactly beside the graph (the
  "tail"); once :data:`EXTEND_AT` of them have accumulated, a background thread of the
  process (:class:`.local_graph_work.Graphs`) reads the graph, inserts them, and
  replaces the file atomically (write, fsync, rename), then swaps the new index in:
  searches meanwhile
  use the old one and its tail;
- deleted rows stay in the graph, skipped during the walk (a faiss ID selector over the
  live rows, kept up to date from the set's deletion log), so the walk's breadth does
  not grow with them; once they pass :data:`COMPACT_AT` of the graph, the background
  thread rebuilds it over the live rows only (the graph's positions then map to rows
  through a sealed ``.rows`` file beside it).

A process killed while it extends or compacts leaves the previous index, which still
serves; the next search starts the work again.

Each index file has a sealed record beside it (``.json``: its size and CRC-32), checked
before the file is used — once per process and file version (inode, size, mtime), since
the check reads the whole file: a graph damaged anywhere is rebuilt, never walked. When
the index cannot be written (a full disk), a search uses the verified index there is,
with every row past it scored exactly, or no index at all.

Why this index (benchmarks/search.py): an HNSW on a prefix with 8-bit scalar codes and
M = 16 holds a fraction of an HNSW on the full vectors (0.2 GB against 3.2 GB at 1M ×
768) and, built at efConstruction 200, finds what an exact scan of its prefix finds; the
rerank of its candidates by the stored vectors does the rest.

Example::

    >>> graph = GraphFiles(Path("/tmp/store/sets/1/ann"), gen=0)      # doctest: +SKIP
"""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .rows import even_rows
from .. import vectors
from . import faults
from .local_files import file_crc, finite_rows, locked, read_sealed, write_sealed

M = 16                  # graph degree: 2·M links per row at the base layer
# 200, as hnswlib's users build: at 40 the graph capped recall below what its prefix can
# give on vectors as hard as real ones (200k calibrated, 128-d keeping 100: 0.952 at 40,
# 0.989 at 200 against a ceiling of 0.990; M = 32 gained nothing more), for 5× the build
EF_CONSTRUCTION = 200
EXTEND_AT = 1_000       # tail rows scored exactly before the index is extended
_BLOCK = 65_536
_TRAIN = 20_000          # rows (an even spread) the 8-bit quantiser is trained on


COMPACT_AT = 0.2        # share of a graph's rows dead before it is rebuilt without them


class Loaded:
    """A verified graph file, read memory-mapped: the index, the row of each graph
    position (``labels``; None: position = row), the rows it was built over
    (``[0, upto)``, less those of the first ``dropped`` deletion-log entries), and the
    file's (inode, size, mtime)."""

    def __init__(self, index: Any, labels: np.ndarray | None, upto: int, dropped: int,
                 stamp: tuple[int, int, int]) -> None:
        self.index, self.labels, self.upto, self.dropped = index, labels, upto, dropped
        self.stamp = stamp
        self.ntotal = int(index.ntotal)
        self._inverse: np.ndarray | None = None
        self._tail: tuple[int, np.ndarray] | None = None
        self._bits: tuple[int, np.ndarray, int] | None = None

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """The graph positions of ``rows`` (rows it does not hold are left out)."""
        rows = rows[(rows >= 0) & (rows < self.upto)]
        if self.labels is None:
            return rows
        if self._inverse is None:
            inverse = np.full(self.upto, -1, np.int64)
            inverse[self.labels] = np.arange(len(self.labels))
            self._inverse = inverse
        pos: np.ndarray = self._inverse[rows]
        return pos[pos >= 0]

    def tail(self, read: Read, dim: int, n_rows: int) -> np.ndarray:
        """Rows ``[upto, n_rows)`` at ``dim`` (``read(start, stop)`` gives stored rows):
        the last one made grown by the rows added since (a write costs the next search
        its own rows, not the whole tail)."""
        got = self._tail
        if got is not None and got[0] == n_rows:
            return got[1]
        if got is not None and got[0] < n_rows:
            tail = np.concatenate([got[1], _prefix(read(got[0], n_rows), dim, 0, None)])
        else:
            start = min(self.upto, n_rows)
            tail = _prefix(read(start, n_rows), dim, 0, None)
        self._tail = (n_rows, tail)
        return tail

    def blocked(self, live: LiveRows | None) -> tuple[np.ndarray | None, int]:
        """The walk's selector bitmap over graph positions (None: every position is
        live) and how many positions it blocks, carried forward from the last one by the
        deletion-log entries since."""
        if live is None or not live.dead:
            return None, 0
        log = live.log
        if log is None:  # no deletion log: from the mask, whole
            mask = live.mask
            assert mask is not None
            rows = np.arange(self.ntotal) if self.labels is None else self.labels
            ok = np.zeros(len(rows), bool)
            inside = rows < len(mask)
            ok[inside] = mask[rows[inside]]
            bits = np.packbits(ok, bitorder="little")
            return bits, int(len(ok) - np.count_nonzero(ok))
        got = self._bits
        if got is not None and got[0] == len(log):
            return got[1], got[2]
        if got is None or got[0] > len(log) or got[0] < self.dropped:
            start, count = self.dropped, 0
            bits = np.packbits(np.ones(self.ntotal, bool), bitorder="little")
        else:
            start, count, bits = got[0], got[2], got[1].copy()
        pos = self.positions(log[start:])
        np.bitwise_and.at(bits, pos >> 3, ~(np.left_shift(1, pos & 7)).astype(np.uint8))
        self._bits = (len(log), bits, count + len(pos))
        return bits, count + len(pos)


Read = Callable[[int, int], np.ndarray]  # stored rows [start, stop), as float32


class LiveRows(Protocol):
    """The live rows of a snapshot: ``mask`` (None: all), ``dead`` rows, and the
    deletion log they come from (None: no log)."""

    @property
    def mask(self) -> np.ndarray | None: ...

    @property
    def dead(self) -> int: ...

    @property
    def log(self) -> np.ndarray | None: ...


class GraphIndex:
    """A loaded graph plus the exact ``tail`` of rows past it, for one snapshot of
    ``n_rows`` rows and its live rows; ``search`` merges both and returns live rows
    only. An index that another writer extended past this snapshot is used as it is,
    its newer rows left out of the answers."""

    def __init__(self, loaded: Loaded, tail: np.ndarray, dim: int, n_rows: int,
                 live: LiveRows | None = None) -> None:
        self.loaded, self.index, self.tail, self.dim = loaded, loaded.index, tail, dim
        self.n_rows, self.live = n_rows, live
        self.covered = loaded.upto
        self.bits, self.blocked = loaded.blocked(live)

    def search(self, x: np.ndarray, k: int, ef: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the ``k`` best live rows per query (row -1: none)."""
        import faiss

        q = np.ascontiguousarray(x, np.float32)
        loaded = self.loaded
        # the walk's breadth: given, or k plus up to 150 more (k = 50: 200), which keeps
        # recall@10 near 0.986 at 1M × 768 (docs/benchmarks.md)
        breadth = max(k, ef or k + min(3 * k, 150), 16)
        want = min(k, max(1, loaded.ntotal - self.blocked))
        if self.bits is None:
            # set on the index (a parameter object costs as much as a short walk);
            # concurrent searches of one plan set the same value
            self.index.hnsw.efSearch = breadth
            scores, pos = self.index.search(q, want)
        else:
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                efSearch=breadth, sel=faiss.IDSelectorBitmap(self.bits.nbytes,
                                                             faiss.swig_ptr(self.bits)))
            scores, pos = self.index.search(q, want, params=params)
        rows = pos if loaded.labels is None else np.where(
            pos >= 0, loaded.labels[np.clip(pos, 0, None)], -1)
        if loaded.upto > self.n_rows:  # another writer extended it past this snapshot
            newer = rows >= self.n_rows
            rows, scores = np.where(newer, -1, rows), np.where(newer, -np.inf, scores)
        if len(self.tail):
            ts = q @ self.tail.T
            tail_rows = np.arange(self.covered, self.covered + len(self.tail))
            mask = None if self.live is None else self.live.mask
            if mask is not None:
                ts = np.where(mask[tail_rows], ts, -np.inf)
            scores = np.concatenate([scores, ts], axis=1)
            rows = np.concatenate([rows, np.broadcast_to(tail_rows, ts.shape)], axis=1)
            scores = np.where(rows >= 0, scores, -np.inf)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores, rows = np.take_along_axis(scores, top, 1), np.take_along_axis(rows, top, 1)
            rows = np.where(np.isfinite(scores), rows, -1)
        return scores, rows


class GraphFiles:
    """The graph index files of one set generation, in ``folder``."""

    def __init__(self, folder: Path, gen: int) -> None:
        self.folder, self.gen = folder, gen
        self._paths: dict[int, Path] = {}

    def path(self, dim: int) -> Path:
        got = self._paths.get(dim)  # asked twice by every search
        if got is None:
            got = self._paths[dim] = self.folder / f"g{self.gen}-hnsw-d{dim}.faiss"
        return got

    def load(self, dim: int) -> Loaded | None:
        """The verified index on disk, memory-mapped (None: none, or unusable)."""
        import faiss

        return _verified(self.path(dim), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY,
                         dim)

    def open(self, matrix: np.ndarray, dim: int, n_rows: int, *, persist: bool = True,
             live: LiveRows | None = None) -> GraphIndex | None:
        """The index over ``matrix``'s first ``n_rows`` rows at ``dim``, brought up to
        date here (built when missing or unverified, extended past EXTEND_AT new rows,
        rebuilt over the live rows past COMPACT_AT dead ones): what ``sets index`` and
        a set's first search run. With ``persist`` False nothing is written: the
        verified index on disk (rows past it scored exactly), or None."""
        loaded = self.load(dim)
        if persist and (loaded is None or due(loaded, n_rows, live) is not None):
            loaded = self.refresh(matrix, dim, n_rows, live)
        if loaded is None:
            return None
        return GraphIndex(loaded, loaded.tail(_reader(matrix), dim, n_rows), dim, n_rows,
                          live)

    def refresh(self, matrix: np.ndarray, dim: int, n_rows: int,
                live: LiveRows | None) -> Loaded:
        """Build, extend or compact the index file for ``n_rows`` rows (under the file's
        lock: another process may have done it meanwhile), and load the result."""
        import faiss

        path = self.path(dim)
        with locked(path.with_suffix(".lock")):
            old = _verified(path, 0, dim)
            work = None if old is None else due(old, n_rows, live)
            if old is None or work == "compact":
                keep = None
                if live is not None and live.mask is not None:
                    keep = np.flatnonzero(live.mask[:n_rows])
                index = _new_index(matrix, dim, n_rows, keep)
                labels = _add(index, matrix, dim, 0, n_rows, keep)
                dropped = 0 if live is None or live.log is None else len(live.log)
                _write(index, path, labels, n_rows, dropped)
            elif work == "extend":
                labels = old.labels
                more = _add(old.index, matrix, dim, old.upto, n_rows,
                            None if labels is None else np.arange(old.upto, n_rows))
                if labels is not None:
                    assert more is not None
                    labels = np.concatenate([labels, more])
                _write(old.index, path, labels, n_rows, old.dropped)
        got = _verified(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY, dim)
        if got is None:
            raise OSError(errno.EIO, f"the index {path.name} just written does not verify")
        return got


def due(loaded: Loaded, n_rows: int, live: LiveRows | None) -> str | None:
    """What an index needs for a snapshot: "extend", "compact" or None."""
    if live is not None and loaded.ntotal and \
            loaded.blocked(live)[1] > COMPACT_AT * loaded.ntotal:
        return "compact"
    if n_rows - loaded.upto > EXTEND_AT or loaded.ntotal == 0 < n_rows:
        return "extend"
    return None


# (inode, size, mtime) of index files whose CRC-32 this process has checked
_CHECKED: dict[str, tuple[int, int, int]] = {}


def record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def verify(path: Path) -> str | None:
    """What is wrong with an index file (None: it matches its sealed record)."""
    meta = read_sealed(record_path(path))
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if meta is None:
        return "it has no valid record of its size and checksum"
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    if _CHECKED.get(str(path)) == stamp:
        return None
    if meta.get("size") != st.st_size or file_crc(path, st.st_size) != meta.get("crc"):
        return "it does not match its checksum"
    _CHECKED[str(path)] = stamp
    return None


def _verified(path: Path, flags: int, dim: int) -> Loaded | None:
    """The index at ``path`` when it exists, matches its record (and its ``.rows`` file
    the record names), reads, and is of ``dim`` (else None: the caller rebuilds it,
    or does without)."""
    import faiss

    if not path.exists() or verify(path) is not None:
        return None
    meta = read_sealed(record_path(path)) or {}
    try:
        st = path.stat()
        index = faiss.read_index(str(path), flags)
    except (RuntimeError, OSError):
        return None
    if index.d != dim:
        return None
    labels = None
    if meta.get("labels"):
        labels = _read_labels(path.with_name(str(meta["labels"])), int(index.ntotal))
        if labels is None:
            return None
    upto = meta.get("rows", int(index.ntotal))
    dropped = meta.get("dropped", 0)
    if not isinstance(upto, int) or not isinstance(dropped, int) or \
            (labels is None and upto != index.ntotal):
        return None
    return Loaded(index, labels, upto, dropped, (st.st_ino, st.st_size, st.st_mtime_ns))


def _read_labels(path: Path, n: int) -> np.ndarray | None:
    """A graph's ``.rows`` file (its name holds its CRC-32), or None: missing, cut or
    altered."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) != 8 * n or f"{zlib.crc32(data):08x}" not in path.name:
        return None
    return np.frombuffer(data, np.dtype("<i8")).astype(np.int64)


def _prefix(matrix: np.ndarray, dim: int, start: int, stop: int | None) -> np.ndarray:
    """Rows ``[start, stop)`` at ``dim``, re-normalised float32 (what the index holds)."""
    return vectors.truncate(finite_rows(matrix[start:stop]), dim)


def _reader(matrix: np.ndarray) -> Read:
    return lambda start, stop: np.asarray(matrix[start:stop], np.float32)


def _new_index(matrix: np.ndarray, dim: int, n_rows: int,
               keep: np.ndarray | None = None) -> Any:
    import faiss

    index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, M,  # type: ignore[arg-type]
                              faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    sample = even_rows(n_rows, _TRAIN) if keep is None else \
        keep[even_rows(len(keep), _TRAIN)]
    index.train(np.ascontiguousarray(vectors.truncate(finite_rows(matrix[sample]), dim)))
    return index


def _add(index: Any, matrix: np.ndarray, dim: int, start: int, stop: int,
         keep: np.ndarray | None = None) -> np.ndarray | None:
    """Insert rows ``[start, stop)`` (or only the ``keep`` rows among them); returns the
    rows inserted when ``keep`` chose them (None: all, in order)."""
    index.hnsw.efConstruction = EF_CONSTRUCTION  # an index read from disk keeps its own
    if keep is None:
        for s in range(start, stop, _BLOCK):
            index.add(np.ascontiguousarray(_prefix(matrix, dim, s, min(stop, s + _BLOCK))))
        return None
    keep = keep[(keep >= start) & (keep < stop)]
    for s in range(0, len(keep), _BLOCK):
        rows = keep[s:s + _BLOCK]
        index.add(np.ascontiguousarray(vectors.truncate(finite_rows(matrix[rows]), dim)))
    return keep


def _write(index: Any, path: Path, labels: np.ndarray | None = None,
           upto: int | None = None, dropped: int = 0) -> None:
    """Replace ``path`` atomically: a crash leaves the old file or the new, never half.
    Its sealed record (size, CRC-32, and the ``.rows`` file of a compacted graph, named
    by its own CRC-32 so that the old one stays until the switch) is written first,
    under a name of its own, and renamed after the index: a crash between the two
    renames leaves an index that fails its check and is rebuilt."""
    import faiss

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta_tmp = path.with_suffix(".json-next")
    rows_path = None
    try:
        if labels is not None:
            data = np.ascontiguousarray(labels, np.dtype("<i8")).tobytes()
            rows_path = path.with_name(f"{path.stem}-{zlib.crc32(data):08x}.rows")
            with open(rows_path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:  # faiss reports a failed write(2) this way
            why = str(exc).rpartition("(")[2].rstrip(")") if "(" in str(exc) else str(exc)
            raise OSError(errno.EIO, why or "write error") from None
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        write_sealed(meta_tmp, {"size": size, "crc": file_crc(tmp, size),
                                "rows": int(index.ntotal) if upto is None else upto,
                                "dim": int(index.d), "dropped": dropped,
                                "labels": None if rows_path is None else rows_path.name})
        faults.point("graph_before_rename")
        os.replace(tmp, path)
        os.replace(meta_tmp, record_path(path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
        raise
    for old in path.parent.glob(f"{path.stem}-*.rows"):  # rows files of earlier graphs
        if rows_path is None or old != rows_path:
            old.unlink(missing_ok=True)
