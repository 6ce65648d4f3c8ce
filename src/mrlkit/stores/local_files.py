"""The local engine's files: one append-only vector file per set, derived views, and the
graph index of a float prefix (:mod:`.local_graph`). Each derived file records what it
was derived from (generation, rows covered, int8 calibration and the rows it was fitted
on) and is rebuilt, never served, when that no longer matches.

Example::

    >>> files = SetFiles(Path("/tmp/store/sets/1"))   # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

import numpy as np

from .. import vectors
from ..errors import StoreError
from ..funnel import View
from ..vectors import Int8Calibration
from . import rules

if TYPE_CHECKING:
    from .local_graph import GraphIndex

_BLOCK = 65536
_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
_DTYPES: dict[str, type[np.generic]] = {"float32": np.float32, "float16": np.float16,
                                        "int8": np.int8, "binary": np.uint8}


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def storage_dtype(storage: str) -> np.dtype[Any]:
    return np.dtype(np.float16 if storage == "float16" else np.float32)


def _fsync_write(path: Path, blocks: Iterator[bytes], *, offset: int = 0,
                 crc: int = 0) -> int:
    """Write ``blocks`` at ``offset`` (dropping what lay past it), then fsync. Returns
    the CRC-32 of the file's first bytes through the new end, continued from ``crc``
    (the CRC of the bytes before ``offset``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.exists() and offset else "w+b") as fh:
        fh.truncate(offset)
        fh.seek(offset)
        for block in blocks:
            fh.write(block)
            crc = zlib.crc32(block, crc)
        fh.flush()
        os.fsync(fh.fileno())
    return crc


def file_crc(path: Path, size: int) -> int | None:
    """CRC-32 of the first ``size`` bytes of ``path`` (None: the file is shorter)."""
    crc, left = 0, size
    try:
        with open(path, "rb") as fh:
            while left > 0:
                chunk = fh.read(min(left, 1 << 24))
                if not chunk:
                    return None
                crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    except OSError:
        return None
    return crc


class SetFiles:
    """The files of one set (generation ``gen``) under ``folder``."""

    def __init__(self, folder: Path, set_id: int, gen: int, stored_dim: int, storage: str,
                 n_rows: int) -> None:
        self.folder, self.set_id, self.gen = folder, set_id, gen
        self.stored_dim, self.storage, self.n_rows = stored_dim, storage, n_rows

    def vector_path(self, gen: int | None = None) -> Path:
        return self.folder / f"vectors-{self.gen if gen is None else gen}.bin"

    @property
    def committed_bytes(self) -> int:
        return self.n_rows * self.stored_dim * storage_dtype(self.storage).itemsize

    def rows(self) -> RowReader:
        """A reader of single rows of the vector file, for a rerank's candidates."""
        return RowReader(self._committed(), self.stored_dim, storage_dtype(self.storage))

    def matrix(self) -> np.ndarray:
        """The committed rows of the vector file, memory-mapped read-only (for reads of
        many rows: views, exports, checks; a search's rerank reads by :class:`RowReader`)."""
        dtype = storage_dtype(self.storage)
        if self.n_rows == 0:
            return np.empty((0, self.stored_dim), dtype)
        matrix = np.memmap(self._committed(), mode="r", dtype=dtype,
                           shape=(self.n_rows, self.stored_dim))
        return np.asarray(matrix)  # a plain view of the map: no memmap subclass per read

    def _committed(self) -> Path:
        """The vector file, checked to hold every committed row."""
        path = self.vector_path()
        size = path.stat().st_size if path.exists() else -1
        if size < self.committed_bytes:
            raise StoreError(
                f"the vector file {path} " + ("is missing" if size < 0 else
                                               f"holds {size:,} bytes") +
                f" where {self.n_rows:,} rows need {self.committed_bytes:,}: it was cut "
                "or removed; `mrlkit sets check` says what can be recovered")
        return path

    def append(self, emb: np.ndarray, crc: int | None) -> int | None:
        """Write rows past the committed count (dropping the tail of a batch that never
        committed), fsynced before the catalogue commits them. Returns the vector file's
        CRC-32 through the new rows (None when the old one was unknown)."""
        data = np.ascontiguousarray(emb, dtype=storage_dtype(self.storage))
        new = _fsync_write(self.vector_path(), iter([data.tobytes()]),
                           offset=self.committed_bytes, crc=crc or 0)
        return new if crc is not None or self.n_rows == 0 else None

    def write_next(self, rows: np.ndarray, apply: Any, dim: int) -> int:
        """The next generation's vector file: every row mapped by ``apply``, at ``dim``;
        returns its CRC-32."""
        dtype = storage_dtype(self.storage)

        def blocks() -> Iterator[bytes]:
            for start in range(0, len(rows), _BLOCK):
                block = apply(np.asarray(rows[start:start + _BLOCK], np.float32))
                assert block.shape[1] == dim
                yield np.asarray(block, dtype).tobytes()
        return _fsync_write(self.vector_path(self.gen + 1), blocks())

    def remove_derived(self, *, old_gen: int | None = None) -> None:
        if old_gen is not None:
            self.vector_path(old_gen).unlink(missing_ok=True)
        shutil.rmtree(self.folder / "views", ignore_errors=True)
        shutil.rmtree(self.folder / "ann", ignore_errors=True)

    # --- views ------------------------------------------------------------------------
    def view(self, dim: int, precision: str) -> View:
        """The (dim, precision) view of every row: built on first use, persisted, and
        extended when rows were added since; rebuilt when it does not match the vector
        file (another generation, a cut file, an int8 calibration gone stale)."""
        matrix = self.matrix()
        if dim == self.stored_dim and precision in ("float32", self.storage):
            return View(dim, precision, matrix)
        base = self.folder / "views" / f"d{dim}-{precision}"
        data_path, meta_path = base.with_suffix(".bin"), base.with_suffix(".json")
        width = vectors.bytes_per_vector(dim, precision) // (
            {"float32": 4, "float16": 2}.get(precision, 1))
        dtype = _DTYPES[precision]
        itemsize = np.dtype(dtype).itemsize
        row_bytes = width * itemsize
        with locked(base.with_suffix(".lock")):
            meta = read_json(meta_path)
            if not self.view_matches(meta, data_path, row_bytes):
                meta = {"generation": self.gen, "rows": 0}
            cal = None
            if precision == "int8":
                fitted = meta.get("calibration_rows", 0)
                if "calibration" not in meta or rules.calibration_stale(fitted, self.n_rows):
                    cal = rules.fit_calibration(matrix[rules.sample_rows(self.n_rows)], dim)
                    meta = {"generation": self.gen, "rows": 0, "calibration": cal.to_dict(),
                            "calibration_rows": self.n_rows, "checksum": 0}
                else:
                    cal = Int8Calibration.from_dict(meta["calibration"])
            done = int(meta["rows"])
            if done < self.n_rows:
                def blocks() -> Iterator[bytes]:
                    for start in range(done, self.n_rows, _BLOCK):
                        block = vectors.truncate(
                            np.asarray(matrix[start:start + _BLOCK], np.float32), dim)
                        yield vectors.quantize(block, precision, cal).tobytes()
                meta["checksum"] = _fsync_write(data_path, blocks(), offset=done * row_bytes,
                                                crc=meta.get("checksum", 0) if done else 0)
                meta["rows"] = self.n_rows
                _write_json(meta_path, meta)
        codes = np.fromfile(data_path, dtype=dtype, count=self.n_rows * width)
        return View(dim, precision, codes.reshape(self.n_rows, width), cal)

    def view_matches(self, meta: dict[str, Any], data_path: Path, row_bytes: int) -> bool:
        """Does a view's record match its file and this vector file: the generation, no
        more rows than the set, and the CRC-32 of the rows it covers?"""
        rows = meta.get("rows", 0)
        if meta.get("generation") != self.gen or not isinstance(rows, int) or \
                rows > self.n_rows or "checksum" not in meta:
            return False
        return bool(file_crc(data_path, rows * row_bytes) == meta["checksum"])

    def graph(self, dim: int) -> GraphIndex:
        """The HNSW graph index over the ``dim`` prefix of every committed row (see
        :mod:`.local_graph`)."""
        from .local_graph import GraphFiles

        return GraphFiles(self.folder / "ann", self.gen).open(self.matrix(), dim, self.n_rows)

    def derived(self) -> list[tuple[int, str, int, str]]:
        """(dim, precision, bytes, kind) of every derived file."""
        out = []
        for meta_path in sorted((self.folder / "views").glob("*.json")):
            data = meta_path.with_suffix(".bin")
            dim, precision = meta_path.stem[1:].split("-")
            out.append((int(dim), precision, data.stat().st_size if data.exists() else 0,
                        "view"))
        for ann in sorted((self.folder / "ann").glob(f"g{self.gen}-hnsw-d*.faiss")):
            out.append((int(ann.stem.rpartition("-d")[2]), "float32", ann.stat().st_size,
                        "HNSW index (8-bit codes)"))
        return out


class RowReader:
    """Reads chosen rows of a vector file with one ``pread`` each, the kernel told that
    access is random: a rerank reads its candidates' bytes and nothing else.

    Why not the memory map: a read fault on a mapped file maps up to 16 neighbouring
    pages already in the page cache ("fault-around", whatever ``madvise`` says), so a
    search touching 100 random rows keeps about 6 MB of the file resident per query,
    and a long-lived process ends up holding the whole file. ``pread`` copies only the
    rows asked for; the page cache under it belongs to the OS, shared and reclaimable.
    """

    def __init__(self, path: Path, dim: int, dtype: np.dtype[Any]) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
        self.dim, self.dtype = dim, dtype
        self.row_bytes = dim * dtype.itemsize
        self._decoder: Any = None

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 rows (in the order given; sorted rows read the file forward)."""
        size, fd = self.row_bytes, self.fd
        data = b"".join([os.pread(fd, size, r * size) for r in rows.tolist()])
        if len(data) != len(rows) * size:
            raise StoreError("the vector file is shorter than its committed rows: "
                             "`mrlkit sets check` says what can be recovered")
        if self.dtype == np.float32:
            return np.frombuffer(data, np.float32).reshape(len(rows), self.dim)
        if len(rows) <= 256:  # float16 → float32 through a 65,536-entry table (2× astype)
            halves = np.frombuffer(data, np.uint16).reshape(len(rows), self.dim)
            return np.take(_HALF_TO_FLOAT, halves)
        if self._decoder is None:  # many rows: faiss's vectorised decoder (3× astype)
            import faiss

            self._decoder = faiss.ScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16)
        return np.asarray(self._decoder.decode(np.frombuffer(data, np.uint8).reshape(
            len(rows), self.row_bytes)), np.float32)

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError):
            pass


def read_json(path: Path) -> dict[str, Any]:
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: the view is rebuilt
    return got if isinstance(got, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(data))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
