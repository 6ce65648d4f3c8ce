"""Chosen rows of a vector file, read with one ``pread`` each (the rerank's reads on
the local engine and beside Chroma).

Example::

    >>> RowReader.__name__
    'RowReader'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError

_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)


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

    def block(self, start: int, stop: int) -> np.ndarray:
        """float32 rows ``[start, stop)``, with one ``pread``."""
        size = self.row_bytes
        data = os.pread(self.fd, (stop - start) * size, start * size)
        if len(data) != (stop - start) * size:
            raise StoreError("the vector file is shorter than its committed rows: "
                             "`mrlkit sets check` says what can be recovered")
        got = np.frombuffer(data, self.dtype).reshape(stop - start, self.dim)
        return np.asarray(got, np.float32)

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
