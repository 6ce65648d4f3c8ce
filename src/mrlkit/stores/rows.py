"""Row-level facts about a set's stored vectors, shared by the store core and engines:
which rows cannot be what mrlkit wrote, and an even spread of rows to sample.

Example::

    >>> even_rows(10, 3).tolist()
    [0, 4, 9]
"""

from __future__ import annotations

import numpy as np


def damaged_rows(x: np.ndarray, storage: str) -> np.ndarray:
    """Rows of stored vectors that cannot be what mrlkit wrote: every stored vector is
    finite and unit norm (float16 storage: within its rounding).

    Example::

        >>> damaged_rows(np.array([[1.0, 0.0], [3.0, 4.0]]), "float32").tolist()
        [1]
    """
    with np.errstate(over="ignore", invalid="ignore"):
        x64 = np.asarray(x, np.float64)
        norms = np.linalg.norm(x64, axis=1)
    tol = 2e-2 if storage == "float16" else 1e-3
    return np.asarray(np.flatnonzero(~np.isfinite(x64).all(axis=1)
                                     | ~(np.abs(norms - 1.0) <= tol)))


def even_rows(n: int, most: int) -> np.ndarray:
    """An even spread of up to ``most`` row numbers out of ``n`` (the first rows of a
    corpus are often one topic).

    Example::

        >>> even_rows(10, 3).tolist()
        [0, 4, 9]
    """
    return np.unique(np.linspace(0, max(0, n - 1), min(n, most)).astype(np.int64))
