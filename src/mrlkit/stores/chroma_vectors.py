"""Where a chroma set keeps its full vectors, read by the funnel's rerank.

* Beside a persistent client (``chroma:PATH``): one append-only file per set generation
  under ``PATH/mrlkit-vectors/``, in the set's storage precision, and the id of each row
  beside it, written (and fsynced) before Chroma's documents collection. A rerank maps
  its candidates' ids to rows in memory and reads each row with one ``pread`` (the local
  store's reader): no metadata comes back from Chroma for it.
* On a Chroma server (``chroma+http``), and in sets made before mrlkit 0.4: a second
  collection of full vectors, read back by id.

Example::

    >>> fv = FileVectors(Path("/tmp/v"), "s-abc", 768, "float16")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from .local_files import _fsync_write, locked, storage_dtype
from .row_reader import RowReader

class FileVectors:
    """An append-only file of full vectors and, beside it, the id of each row (one JSON
    string per line: the file's commit record — rows past the last whole line are a torn
    write and get overwritten). Rows never move: an upsert takes a new row, the newest
    row of an id is its vector, and old rows are reclaimed when the set is rewritten."""

    def __init__(self, folder: Path, token: str, dim: int, storage: str) -> None:
        self.path = folder / f"{token}.bin"
        self.ids_path = folder / f"{token}.ids"
        self.dim, self.dtype = dim, storage_dtype(storage)
        self.row_bytes = dim * self.dtype.itemsize
        self._reader: RowReader | None = None
        self._rows: dict[str, int] = {}
        self._read_to = 0  # bytes of the ids file already in ``_rows``
        self._count = 0    # rows they name
        # threads of one process share this object: the ids are read by one at a time
        # (two at once counted rows twice: a row past the file's end, or a write
        # starting past it)
        self._mutex = threading.Lock()

    def write(self, ids: list[str], stored: np.ndarray) -> None:
        """Append ``stored`` (fsynced), then their ids (fsynced)."""
        with locked(self.path.with_suffix(".lock")):
            start = self._refresh()
            data = np.ascontiguousarray(stored, dtype=self.dtype).tobytes()
            _fsync_write(self.path, iter([data]), offset=start * self.row_bytes)
            lines = "".join(json.dumps(i) + "\n" for i in ids).encode()
            _fsync_write(self.ids_path, iter([lines]), offset=self._read_to)
            self._refresh()

    def _refresh(self) -> int:
        """Read ids appended since the last call (by any process); returns the rows."""
        with self._mutex:
            return self._refresh_locked()

    def _refresh_locked(self) -> int:
        try:
            with open(self.ids_path, "rb") as fh:
                fh.seek(self._read_to)
                tail = fh.read()
        except FileNotFoundError:
            tail = b""
        whole = tail[:tail.rfind(b"\n") + 1]
        if whole:  # one JSON array: 10× faster than a loads per line (1M ids: 0.9 s)
            new = json.loads(b"[" + whole[:-1].replace(b"\n", b",") + b"]")
            self._rows.update(zip(new, range(self._count, self._count + len(new))))
            self._count += len(new)
        self._read_to += len(whole)
        return self._count

    def read(self, ids: list[str]) -> np.ndarray:
        """float32 vectors of ``ids`` (in that order)."""
        if not ids:
            return np.empty((0, self.dim), np.float32)
        if self.ids_path.exists() and self.ids_path.stat().st_size != self._read_to:
            self._refresh()
        if self._reader is None:
            self._reader = RowReader(self.path, self.dim, self.dtype)
        try:
            rows = np.fromiter((self._rows[i] for i in ids), np.int64, len(ids))
        except KeyError as exc:
            raise StoreError(f"document {exc.args[0]!r} has no full vector in "
                             f"{self.path}: `mrlkit sets check` says more") from None
        return self._reader.read(rows)

    def delete(self, ids: list[str]) -> None:
        """The rows stay (Chroma no longer returns their ids); a byte appended to the
        deletion log changes :meth:`stamp`."""
        with open(self.path.with_suffix(".del"), "ab") as fh:
            fh.write(b"d")

    def stamp(self) -> tuple[int, int] | None:
        """Changes with every write and deletion through mrlkit (any process): what a
        cached record of the set is checked against. None: nothing written yet."""
        try:
            size = os.stat(self.ids_path).st_size
        except FileNotFoundError:
            return None
        try:
            return size, os.stat(self.path.with_suffix(".del")).st_size
        except FileNotFoundError:
            return size, 0

    def bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def drop(self) -> None:
        for path in (self.path, self.ids_path, self.path.with_suffix(".lock"),
                     self.path.with_suffix(".del")):
            path.unlink(missing_ok=True)


class CollectionVectors:
    """Full vectors in a Chroma collection of their own, read back by id."""

    def __init__(self, collection: Any, dim: int) -> None:
        self.collection, self.dim = collection, dim

    def write(self, ids: list[str], stored: np.ndarray) -> None:
        for s in range(0, len(ids), 5_000):
            self.collection.upsert(ids=ids[s:s + 5_000], embeddings=stored[s:s + 5_000])

    def read(self, ids: list[str]) -> np.ndarray:
        if not ids:
            return np.empty((0, self.dim), np.float32)
        got = self.collection.get(ids=ids, include=["embeddings"])
        where = {i: r for r, i in enumerate(got["ids"])}
        x = np.asarray(got["embeddings"], np.float32).reshape(len(got["ids"]), self.dim)
        return x[[where[i] for i in ids]]

    def delete(self, ids: list[str]) -> None:
        self.collection.delete(ids=ids)

    def stamp(self) -> None:
        return None  # a server's collection: no cheap change signal, nothing cached

    def bytes(self) -> int:
        return int(self.collection.count()) * self.dim * 4

    def drop(self) -> None:
        """The collection is dropped with the set's others."""
