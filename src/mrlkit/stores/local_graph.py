"""The local engine's graph index: faiss HNSW over a short float prefix, 8-bit codes.

One file per (generation, prefix dim) under ``ann/``, read memory-mapped for search
(faiss's ``IO_FLAG_MMAP_IFC``: the codes and the graph stay in the page cache, and only
the pages a query walks become resident). Rows added after the index was written are
found all the same: up to :data:`EXTEND_AT` of them are scored exactly beside the graph
(a small "tail"), past that the index is extended in place of a rebuild: the graph is
read, the new rows inserted, and the file replaced atomically (write, fsync, rename), so
a process killed while extending leaves the previous index, which still serves.

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
from pathlib import Path
from typing import Any

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


class GraphIndex:
    """A loaded graph index over rows ``[0, covered)`` plus the exact ``tail`` of rows
    ``[covered, n_rows)`` at the same prefix; ``search`` merges both. An index that
    another writer extended past this reader's snapshot (``limit`` rows) is used as it
    is, its newer rows left out of the answers."""

    def __init__(self, index: Any, tail: np.ndarray, dim: int, limit: int | None = None
                 ) -> None:
        self.index, self.tail, self.dim = index, tail, dim
        self.covered = int(index.ntotal)
        self.limit = limit if limit is not None and limit < self.covered else None

    def search(self, x: np.ndarray, k: int, ef: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the ``k`` best rows per query (row -1: none)."""
        q = np.ascontiguousarray(x, np.float32)
        # the walk's breadth: given, or k plus up to 150 more (k = 50: 200), which keeps
        # recall@10 near 0.986 at 1M × 768 (docs/benchmarks.md); set on the index, since
        # a parameter object costs as much as a short walk
        self.index.hnsw.efSearch = max(k, ef or k + min(3 * k, 150), 16)
        scores, rows = self.index.search(q, min(k, max(1, self.covered)))
        if self.limit is not None:
            newer = rows >= self.limit
            rows, scores = np.where(newer, -1, rows), np.where(newer, -np.inf, scores)
        if len(self.tail):
            ts = q @ self.tail.T
            scores = np.concatenate([scores, ts], axis=1)
            rows = np.concatenate([rows, np.broadcast_to(
                np.arange(self.covered, self.covered + len(self.tail)), ts.shape)], axis=1)
            scores = np.where(rows >= 0, scores, -np.inf)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores, rows = np.take_along_axis(scores, top, 1), np.take_along_axis(rows, top, 1)
        return scores, rows


class GraphFiles:
    """The graph index files of one set generation, in ``folder``."""

    def __init__(self, folder: Path, gen: int) -> None:
        self.folder, self.gen = folder, gen

    def path(self, dim: int) -> Path:
        return self.folder / f"g{self.gen}-hnsw-d{dim}.faiss"

    def open(self, matrix: np.ndarray, dim: int, n_rows: int, *, persist: bool = True
             ) -> GraphIndex | None:
        """The index over ``matrix``'s first ``n_rows`` rows at ``dim``: built when
        missing, unreadable or unverified, extended when more than EXTEND_AT rows are
        past it. With ``persist`` False nothing is written: the verified index on disk
        (rows past it scored exactly), or None when there is none."""
        import faiss

        path = self.path(dim)
        mapped = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
        index = _verified(path, mapped)
        unusable = index is None or index.d != dim
        if not persist:
            return None if unusable else GraphIndex(
                index, _prefix(matrix, dim, int(index.ntotal), n_rows), dim, n_rows)
        if unusable or n_rows - index.ntotal > EXTEND_AT:
            with locked(path.with_suffix(".lock")):
                # another process may have done it meanwhile: read again under the lock
                index = _verified(path, 0)
                if index is None or index.d != dim:
                    index = _new_index(matrix, dim, n_rows)
                if n_rows - index.ntotal > EXTEND_AT or index.ntotal == 0:
                    _add(index, matrix, dim, index.ntotal, n_rows)
                    _write(index, path)
            index = _verified(path, mapped)
            assert index is not None
        tail = _prefix(matrix, dim, int(index.ntotal), n_rows)
        return GraphIndex(index, tail, dim, n_rows)


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


def _verified(path: Path, flags: int) -> Any:
    """The index at ``path`` when it exists, matches its record and reads (else None:
    the caller rebuilds it, or does without)."""
    import faiss

    if not path.exists() or verify(path) is not None:
        return None
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError:
        return None


def _prefix(matrix: np.ndarray, dim: int, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` at ``dim``, re-normalised float32 (what the index holds)."""
    return vectors.truncate(finite_rows(matrix[start:stop]), dim)


def _new_index(matrix: np.ndarray, dim: int, n_rows: int) -> Any:
    import faiss

    index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, M,  # type: ignore[arg-type]
                              faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    sample = even_rows(n_rows, _TRAIN)
    index.train(np.ascontiguousarray(vectors.truncate(finite_rows(matrix[sample]), dim)))
    return index


def _add(index: Any, matrix: np.ndarray, dim: int, start: int, stop: int) -> None:
    index.hnsw.efConstruction = EF_CONSTRUCTION  # an index read from disk keeps its own
    for s in range(start, stop, _BLOCK):
        index.add(np.ascontiguousarray(_prefix(matrix, dim, s, min(stop, s + _BLOCK))))


def _write(index: Any, path: Path) -> None:
    """Replace ``path`` atomically: a crash leaves the old file or the new, never half.
    Its sealed record (size, CRC-32) is written first, under a name of its own, and
    renamed after the index: a crash between the two renames leaves an index that
    fails its check and is rebuilt."""
    import faiss

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta_tmp = path.with_suffix(".json-next")
    try:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:  # faiss reports a failed write(2) this way
            why = str(exc).rpartition("(")[2].rstrip(")") if "(" in str(exc) else str(exc)
            raise OSError(errno.EIO, why or "write error") from None
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        write_sealed(meta_tmp, {"size": size, "crc": file_crc(tmp, size),
                                "rows": int(index.ntotal), "dim": int(index.d)})
        faults.point("graph_before_rename")
        os.replace(tmp, path)
        os.replace(meta_tmp, record_path(path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
        raise
