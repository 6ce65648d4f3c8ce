"""The local engine's files: one append-only vector file per set with a CRC-32 per row
beside it (``vectors-<gen>.crc``: a check can name the very rows that were damaged),
derived views, and the graph index of a float prefix (:mod:`.local_graph`). Each derived
file records what it was derived from (generation, rows covered, int8 calibration and
the rows it was fitted on) in a record that is itself sealed with a CRC-32, and is
rebuilt, never served, when that no longer matches. A search never needs to write: a
view that cannot be written (a full disk, a file where the folder should be) is computed
in memory for that search, and the search says so.

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
from typing import Any
from collections.abc import Iterator

import numpy as np

from .. import vectors
from ..errors import StoreError
from ..funnel import View
from ..vectors import Int8Calibration
from .row_reader import RowReader

_BLOCK = 65536
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


def remove_path(path: Path) -> None:
    """Remove a folder, or a file standing where one should be."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def storage_dtype(storage: str) -> np.dtype[Any]:
    return np.dtype(np.float16 if storage == "float16" else np.float32)


def _fsync_write(path: Path, blocks: Iterator[bytes], *, offset: int = 0,
                 crc: int = 0) -> int:
    """Write ``blocks`` at ``offset`` (dropping what lay past it), then fsync. Returns
    the CRC-32 of the file's first bytes through the new end, continued from ``crc``
    (the CRC of the bytes before ``offset``). A write that fails (a full disk) leaves
    the file as it was before ``offset``, not half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.exists() and offset else "w+b") as fh:
        try:
            fh.truncate(offset)
            fh.seek(offset)
            for block in blocks:
                fh.write(block)
                crc = zlib.crc32(block, crc)
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException:
            try:
                fh.truncate(offset)
            except OSError:
                pass
            if not offset:
                path.unlink(missing_ok=True)
            raise
    return crc


def row_crcs(rows: np.ndarray) -> np.ndarray:
    """The CRC-32 of each row's stored bytes (uint32, little-endian on disk)."""
    data = np.ascontiguousarray(rows)
    return np.fromiter((zlib.crc32(r) for r in data), np.dtype("<u4"), len(data))


def finite_rows(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` with rows that hold NaN or inf set to zero: derived data covers
    every row, and a damaged row (dead once a check has quarantined it) must not stop
    a view or an index from being built."""
    x = np.asarray(x, np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        x = x.copy()
        x[bad] = 0.0
    return x


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

    def crc_path(self, gen: int | None = None) -> Path:
        return self.folder / f"vectors-{self.gen if gen is None else gen}.crc"

    def stored_crcs(self) -> np.ndarray:
        """The recorded CRC-32 of each committed row (shorter when rows were written
        before row checksums existed, or the file was cut)."""
        try:
            got = np.fromfile(self.crc_path(), np.dtype("<u4"), count=self.n_rows)
        except (OSError, ValueError):
            return np.empty(0, np.dtype("<u4"))
        return got

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
        self._append_crcs(data)
        return new if crc is not None or self.n_rows == 0 else None

    def fill_crcs(self) -> None:
        """Give the committed rows that have none (written before row checksums) the
        checksum of what they hold now."""
        if len(self.stored_crcs()) < self.n_rows:
            self._append_crcs(np.empty((0, self.stored_dim), storage_dtype(self.storage)))

    def _append_crcs(self, data: np.ndarray) -> None:
        """Row checksums of ``data`` past the committed rows' (a set written before row
        checksums existed gets its old rows' too: they are what the file holds now,
        and the file's own CRC-32 still tells whether that was what was written)."""
        path, have = self.crc_path(), self.stored_crcs()
        old = have
        if len(have) < self.n_rows:
            old = np.concatenate([have, row_crcs(self.matrix()[len(have):])])
        _fsync_write(path, iter([old[len(have):].tobytes(), row_crcs(data).tobytes()]),
                     offset=len(have) * 4)

    # --- the deletion log ----------------------------------------------------------
    def dead_path(self) -> Path:
        """The rows deleted so far, in the order they died (int64, little-endian): the
        catalogue's ``n_dead`` says how many entries are committed, as ``n_rows`` does
        for the vector file. Row numbers outlive generations, so one log serves all."""
        return self.folder / "dead.bin"

    def append_dead(self, rows: np.ndarray, committed: int) -> None:
        """Log ``rows`` as dead past the ``committed`` entries (dropping what a write that
        never committed left there), fsynced before the catalogue commits them."""
        data = np.ascontiguousarray(rows, np.dtype("<i8")).tobytes()
        _fsync_write(self.dead_path(), iter([data]), offset=committed * 8)

    def dead_rows(self, start: int, stop: int) -> np.ndarray | None:
        """Entries ``[start, stop)`` of the deletion log (None: the file is shorter or
        holds a row outside the set: damaged, the caller asks the catalogue instead)."""
        if stop <= start:
            return np.empty(0, np.int64)
        try:
            got = np.fromfile(self.dead_path(), np.dtype("<i8"), count=stop - start,
                              offset=start * 8)
        except (OSError, ValueError):
            return None
        if len(got) != stop - start or (len(got) and (got.min() < 0 or
                                                      got.max() >= self.n_rows)):
            return None
        return got.astype(np.int64)

    def write_next(self, rows: np.ndarray, apply: Any, dim: int) -> int:
        """The next generation's vector file: every row mapped by ``apply``, at ``dim``;
        returns its CRC-32."""
        dtype = storage_dtype(self.storage)

        crcs: list[bytes] = []

        def blocks() -> Iterator[bytes]:
            for start in range(0, len(rows), _BLOCK):
                block = apply(finite_rows(rows[start:start + _BLOCK]))
                assert block.shape[1] == dim
                data = np.asarray(block, dtype)
                crcs.append(row_crcs(data).tobytes())
                yield data.tobytes()
        crc = _fsync_write(self.vector_path(self.gen + 1), blocks())
        _fsync_write(self.crc_path(self.gen + 1), iter(crcs))
        return crc

    def remove_derived(self, *, old_gen: int | None = None) -> None:
        if old_gen is not None:
            self.vector_path(old_gen).unlink(missing_ok=True)
            self.crc_path(old_gen).unlink(missing_ok=True)
        for sub in ("views", "ann"):
            remove_path(self.folder / sub)

    # --- views ------------------------------------------------------------------------
    def view(self, dim: int, precision: str, *, persist: bool = True,
             calibration: tuple[Int8Calibration, int] | None = None) -> View:
        """The (dim, precision) view of every row: built on first use, persisted, and
        extended when rows were added since; rebuilt when it does not match the vector
        file (another generation, a cut file, a record whose seal or CRC fails) or, for
        int8, when the store core hands it another ``calibration`` (the calibration and
        the rows it was fitted on: the core alone fits them). With ``persist`` False
        nothing is written: the codes are computed in memory (a search's way round a
        disk that cannot be written)."""
        matrix = self.matrix()
        if dim == self.stored_dim and precision in ("float32", self.storage):
            return View(dim, precision, matrix)
        cal = None
        if precision == "int8":
            if calibration is None:
                raise ValueError("an int8 view needs the store core's calibration")
            cal = calibration[0]
        if not persist:
            return View(dim, precision, _codes(matrix, 0, self.n_rows, dim, precision,
                                               cal), cal)
        base = self.folder / "views" / f"d{dim}-{precision}"
        data_path, meta_path = base.with_suffix(".bin"), base.with_suffix(".json")
        dtype, width, row_bytes = _view_shape(dim, precision)
        with locked(base.with_suffix(".lock")):
            meta = self._view_meta(dim, precision)
            if calibration is not None and (
                    meta.get("calibration") != calibration[0].to_dict()):
                meta = {"generation": self.gen, "rows": 0,
                        "calibration": calibration[0].to_dict(),
                        "calibration_rows": calibration[1], "checksum": 0}
            done = int(meta["rows"])
            if done < self.n_rows:
                def blocks() -> Iterator[bytes]:
                    for start in range(done, self.n_rows, _BLOCK):
                        yield _codes(matrix, start, min(self.n_rows, start + _BLOCK), dim,
                                     precision, cal).tobytes()
                meta["checksum"] = _fsync_write(data_path, blocks(), offset=done * row_bytes,
                                                crc=meta.get("checksum", 0) if done else 0)
                meta["rows"] = self.n_rows
                write_sealed(meta_path, meta)
            # read under the lock: another thread or process may rebuild it from row 0
            codes = np.fromfile(data_path, dtype=dtype, count=self.n_rows * width)
        return View(dim, precision, codes.reshape(self.n_rows, width), cal)

    def calibration(self, dim: int) -> tuple[Int8Calibration, int] | None:
        """The int8 calibration the ``dim`` view was built with and the rows it was fitted
        on, read from the view's record (nothing is built)."""
        meta = self._view_meta(dim, "int8")
        cal, rows = _calibration(meta, dim), meta.get("calibration_rows")
        return (cal, rows) if cal is not None and isinstance(rows, int) else None

    def _view_meta(self, dim: int, precision: str) -> dict[str, Any]:
        """The view's record if it matches its file and this vector file, else a fresh
        one (the view is then rebuilt from row 0)."""
        base = self.folder / "views" / f"d{dim}-{precision}"
        meta = read_sealed(base.with_suffix(".json"))
        if meta is None or not self.view_matches(meta, base.with_suffix(".bin"),
                                                 _view_shape(dim, precision)[2]) or \
                (precision == "int8" and _calibration(meta, dim) is None):
            return {"generation": self.gen, "rows": 0}
        return meta

    def view_matches(self, meta: dict[str, Any], data_path: Path, row_bytes: int) -> bool:
        """Does a view's record match its file and this vector file: the generation and
        the CRC-32 of the rows it covers? It may cover more rows than this snapshot of
        the set (a writer extended it since): rows never change within a generation."""
        rows = meta.get("rows", 0)
        if meta.get("generation") != self.gen or not isinstance(rows, int) or \
                rows < 0 or not isinstance(meta.get("checksum"), int):
            return False
        return bool(file_crc(data_path, rows * row_bytes) == meta["checksum"])

    def derived(self) -> list[tuple[int, str, int, str]]:
        """(dim, precision, bytes, kind) of every derived file."""
        out: list[tuple[int, str, int, str]] = []
        views = self.folder / "views"
        for meta_path in sorted(views.glob("d*-*.json") if views.is_dir() else []):
            data = meta_path.with_suffix(".bin")
            dim, precision = meta_path.stem[1:].split("-")
            out.append((int(dim), precision, data.stat().st_size if data.exists() else 0,
                        "view"))
        for ann in sorted((self.folder / "ann").glob(f"g{self.gen}-hnsw-d*.faiss")):
            out.append((int(ann.stem.rpartition("-d")[2]), "float32", ann.stat().st_size,
                        "HNSW index (8-bit codes)"))
        return out


def _view_shape(dim: int, precision: str) -> tuple[type[np.generic], int, int]:
    """(dtype, values per row, bytes per row) of a view's file."""
    width = vectors.bytes_per_vector(dim, precision) // (
        {"float32": 4, "float16": 2}.get(precision, 1))
    dtype = _DTYPES[precision]
    return dtype, width, width * np.dtype(dtype).itemsize


def _codes(matrix: np.ndarray, start: int, stop: int, dim: int, precision: str,
           cal: Int8Calibration | None) -> np.ndarray:
    block = vectors.truncate(finite_rows(matrix[start:stop]), dim)
    return vectors.quantize(block, precision, cal)


def _calibration(meta: dict[str, Any], dim: int) -> Int8Calibration | None:
    """The int8 calibration at ``dim`` a view's record holds (None: none, or not one)."""
    try:
        cal = Int8Calibration.from_dict(meta["calibration"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if cal.lo.shape != (dim,) or cal.hi.shape != (dim,) or \
            not (np.isfinite(cal.lo).all() and np.isfinite(cal.hi).all()):
        return None
    return cal


def read_json(path: Path) -> dict[str, Any]:
    try:
        got = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: the view is rebuilt
    return got if isinstance(got, dict) else {}


def _seal(data: dict[str, Any]) -> int:
    body = {k: v for k, v in data.items() if k != "seal"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def read_sealed(path: Path) -> dict[str, Any] | None:
    """A record written by :func:`write_sealed`, or None when it is missing, not JSON,
    or its seal (a CRC-32 of the rest) does not match: edited or damaged."""
    got = read_json(path)
    if not got or got.get("seal") != _seal(got):
        return None
    return got


def write_sealed(path: Path, data: dict[str, Any]) -> None:
    """Write a record with its seal, atomically (a temporary file, fsync, rename)."""
    data = {**{k: v for k, v in data.items() if k != "seal"}}
    data["seal"] = _seal(data)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
