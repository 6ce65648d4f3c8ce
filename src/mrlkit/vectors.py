"""Vector math, pure vectorised NumPy, no I/O: truncate, normalise, quantise, score.

Every other module calls these. Rows are vectors; float inputs are checked for NaN/inf.

Example::

    >>> import numpy as np
    >>> v = truncate(np.array([[3.0, 4.0, 12.0]]), 2)
    >>> v.round(2).tolist()
    [[0.6, 0.8]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import DimensionError, InvalidVectorError

Precision = Literal["float32", "float16", "int8", "binary"]
PRECISIONS: tuple[str, ...] = ("float32", "float16", "int8", "binary")
_BLOCK = 65536  # rows scored per block, to bound temporary memory


def check_precision(precision: str) -> str:
    """Return ``precision`` if known, else raise a clear error.

    Example::

        >>> check_precision("int8")
        'int8'
    """
    if precision not in PRECISIONS:
        raise InvalidVectorError(f"precision must be one of {', '.join(PRECISIONS)}, "
                                 f"not {precision!r}")
    return precision


def as_matrix(x: np.ndarray | list[Any], *, name: str = "vectors") -> np.ndarray:
    """``x`` as a 2-D float32 array; NaN or inf are refused.

    Example::

        >>> as_matrix([1.0, 2.0]).shape
        (1, 2)
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise InvalidVectorError(f"{name} must be a 2-D array (n × dim), not {a.ndim}-D")
    if a.size and not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        raise InvalidVectorError(f"{name} hold NaN or inf values (rows {bad[:5].tolist()}"
                                 f"{'…' if bad.size > 5 else ''})")
    return a


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise each row; a zero row stays zero (it has no direction).

    Example::

        >>> normalize(np.array([[0.0, 2.0], [0.0, 0.0]])).tolist()
        [[0.0, 1.0], [0.0, 0.0]]
    """
    a = as_matrix(x)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    out = np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)
    tiny = norms[:, 0] < 1e-18
    if tiny.any():  # float32 squares underflow there: redo those rows in float64
        rows = a[tiny].astype(np.float64)
        n = np.linalg.norm(rows, axis=1, keepdims=True)
        out[tiny] = np.divide(rows, n, out=np.zeros_like(rows), where=n > 0)
    return np.asarray(out, np.float32)


def truncate(x: np.ndarray, dim: int, *, renormalize: bool = True) -> np.ndarray:
    """Keep the first ``dim`` components of each row and (by default) re-normalise.

    Re-normalising matters: a prefix of a unit vector is shorter than 1, and cosine
    scores computed as dot products are wrong without it.

    Example::

        >>> truncate(np.array([[1.0, 1.0, 5.0]]), 2).round(3).tolist()
        [[0.707, 0.707]]
    """
    a = as_matrix(x)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise DimensionError(f"dimension must be a positive integer, not {dim!r}")
    if dim > a.shape[1]:
        raise DimensionError(f"cannot truncate {a.shape[1]}-dimensional vectors to {dim}")
    out = a[:, :dim]
    return normalize(out) if renormalize else np.ascontiguousarray(out)


def layer_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Layer normalisation without affine parameters (nomic's pre-truncation step).

    Example::

        >>> layer_norm(np.array([[1.0, 3.0]])).round(3).tolist()
        [[-1.0, 1.0]]
    """
    a = as_matrix(x)
    mean = a.mean(axis=1, keepdims=True)
    var = a.var(axis=1, keepdims=True)
    return np.asarray((a - mean) / np.sqrt(var + eps), np.float32)


def prepare(raw: np.ndarray, dim: int | None = None, transform: str = "none") -> np.ndarray:
    """Model output → stored vector: transform, truncate to ``dim``, L2-normalise.

    Example::

        >>> prepare(np.array([[1.0, 2.0, 3.0, 4.0]]), 2, "layer_norm").shape
        (1, 2)
    """
    a = as_matrix(raw, name="embeddings")
    if transform == "layer_norm":
        a = layer_norm(a)
    elif transform != "none":
        raise InvalidVectorError(f"transform must be 'none' or 'layer_norm', not {transform!r}")
    return truncate(a, dim if dim is not None else a.shape[1])


# --- quantisation ------------------------------------------------------------
@dataclass(frozen=True)
class Int8Calibration:
    """Per-dimension ranges for int8 quantisation, fitted on a sample and then kept,
    so that documents and queries are quantised alike.

    Example::

        >>> cal = Int8Calibration.fit(np.array([[-1.0, 0.0], [1.0, 2.0]]))
        >>> cal.lo.tolist(), cal.hi.tolist()
        ([-1.0, 0.0], [1.0, 2.0])
    """

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def fit(cls, sample: np.ndarray) -> Int8Calibration:
        """Fit ranges on ``sample`` (rows are vectors)."""
        a = as_matrix(sample)
        if a.shape[0] == 0:
            raise InvalidVectorError("cannot calibrate int8 on an empty sample")
        return cls(a.min(axis=0).astype(np.float32), a.max(axis=0).astype(np.float32))

    @property
    def step(self) -> np.ndarray:
        # a constant dimension has no range: any step maps it to one code
        return np.asarray(np.maximum((self.hi - self.lo) / 255.0, 1e-12), np.float32)

    @property
    def dim(self) -> int:
        return int(self.lo.shape[0])

    def prefix(self, dim: int) -> Int8Calibration:
        """The calibration of the first ``dim`` dimensions."""
        return Int8Calibration(self.lo[:dim], self.hi[:dim])

    def to_dict(self) -> dict[str, list[float]]:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Int8Calibration:
        return cls(np.asarray(d["lo"], np.float32), np.asarray(d["hi"], np.float32))


def quantize(x: np.ndarray, precision: str,
             calibration: Int8Calibration | None = None) -> np.ndarray:
    """Quantise rows to ``precision``: float32, float16, int8 (needs a calibration; one is
    fitted on ``x`` if none is given) or binary (sign bits packed 8 per byte).

    Example::

        >>> quantize(np.array([[0.5, -0.2, 0.1]]), "binary").tolist()
        [[160]]
    """
    check_precision(precision)
    a = as_matrix(x)
    if precision == "float32":
        return a
    if precision == "float16":
        return a.astype(np.float16)
    if precision == "binary":
        return np.packbits(a > 0, axis=1)
    cal = calibration or Int8Calibration.fit(a)
    if cal.dim != a.shape[1]:
        raise DimensionError(f"int8 calibration has {cal.dim} dimensions, "
                             f"vectors have {a.shape[1]}")
    codes = np.rint((a - cal.lo) / cal.step) - 128.0
    return np.asarray(np.clip(codes, -128, 127), np.int8)


def dequantize_int8(codes: np.ndarray, calibration: Int8Calibration) -> np.ndarray:
    """Approximate float vectors from int8 codes.

    Example::

        >>> cal = Int8Calibration(np.zeros(1, np.float32), np.ones(1, np.float32))
        >>> float(dequantize_int8(np.array([[127]], np.int8), cal)[0, 0])
        1.0
    """
    return np.asarray(calibration.lo + (codes.astype(np.float32) + 128.0) * calibration.step,
                      np.float32)


def bytes_per_vector(dim: int, precision: str) -> int:
    """Storage of one vector of ``dim`` components at ``precision``.

    Example::

        >>> bytes_per_vector(384, "float32"), bytes_per_vector(64, "binary")
        (1536, 8)
    """
    check_precision(precision)
    return {"float32": 4 * dim, "float16": 2 * dim, "int8": dim,
            "binary": (dim + 7) // 8}[precision]


# --- scoring kernels (higher is better) --------------------------------------
def dot(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Dot products (cosine for unit vectors), shape (n_queries, n_docs).

    Example::

        >>> dot(np.eye(2), np.eye(2)).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    q = as_matrix(queries, name="queries")
    d = np.asarray(docs)
    if d.dtype != np.float32:
        d = d.astype(np.float32)
    return np.asarray(q @ d.T)


def cosine(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Cosine similarities, normalising both sides.

    Example::

        >>> cosine(np.array([[2.0, 0.0]]), np.array([[3.0, 3.0]])).round(3).tolist()
        [[0.707]]
    """
    return dot(normalize(queries), normalize(as_matrix(docs)))


def dot_int8(queries: np.ndarray, codes: np.ndarray, calibration: Int8Calibration,
             ) -> np.ndarray:
    """Dot products of float queries with int8-quantised documents.

    Equal to ``queries @ dequantize_int8(codes).T``, computed without materialising the
    float documents: the calibration's offset and step fold into the query.

    Example::

        >>> cal = Int8Calibration.fit(np.array([[0.0, 1.0], [1.0, 0.0]]))
        >>> codes = quantize(np.eye(2), "int8", cal)
        >>> dot_int8(np.eye(2), codes, cal).round(2).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    q = as_matrix(queries, name="queries")
    qs = q * calibration.step
    const = q @ (calibration.lo + 128.0 * calibration.step)
    out = np.empty((q.shape[0], codes.shape[0]), np.float32)
    for start in range(0, codes.shape[0], _BLOCK):
        block = codes[start:start + _BLOCK].astype(np.float32)
        out[:, start:start + _BLOCK] = qs @ block.T
    out += const[:, None]
    return out


def int8_codes_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer dot products of two int8 code matrices (both sides quantised).

    Example::

        >>> int8_codes_dot(np.array([[1, 2]], np.int8), np.array([[3, 4]], np.int8)).tolist()
        [[11]]
    """
    return a.astype(np.int32) @ b.astype(np.int32).T


def hamming(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Hamming distances between packed binary codes, shape (n_queries, n_docs).

    Example::

        >>> hamming(np.array([[0b1010]], np.uint8), np.array([[0b0110]], np.uint8)).tolist()
        [[2]]
    """
    q = np.ascontiguousarray(queries, dtype=np.uint8)
    d = np.ascontiguousarray(docs, dtype=np.uint8)
    if q.ndim == 1:
        q = q[None, :]
    if q.shape[1] != d.shape[1]:
        raise DimensionError(f"binary codes of {q.shape[1]} bytes cannot be compared "
                             f"with {d.shape[1]} bytes")
    nbytes = q.shape[1]
    # wider words mean fewer popcounts: compare 8 bytes at a time when the width allows
    if nbytes % 8 == 0:
        q, d = q.view(np.uint64), d.view(np.uint64)
    out = np.empty((q.shape[0], d.shape[0]), np.int32)
    rows = max(1, _BLOCK * 8 // max(1, nbytes * q.shape[0]))
    for start in range(0, d.shape[0], rows):
        x = np.bitwise_xor(q[:, None, :], d[None, start:start + rows, :])
        out[:, start:start + rows] = np.bitwise_count(x).sum(axis=2, dtype=np.int32)
    return out


def binary_scores(queries: np.ndarray, docs: np.ndarray, dim: int) -> np.ndarray:
    """Sign-agreement scores of packed codes: ``dim - 2·hamming``, the dot product of the
    ±1 vectors, so that higher is better like every other kernel.

    Example::

        >>> binary_scores(np.array([[255]], np.uint8), np.array([[255], [0]], np.uint8), 8).tolist()
        [[8.0, -8.0]]
    """
    return (dim - 2 * hamming(queries, docs)).astype(np.float32)


def score(queries: np.ndarray, docs: np.ndarray, precision: str, *, dim: int | None = None,
          calibration: Int8Calibration | None = None) -> np.ndarray:
    """Score float ``queries`` against documents stored at ``precision``.

    Queries are prepared (normalised, truncated) float vectors; binary queries are
    binarised here, int8 documents are scored against the float query.

    Example::

        >>> docs = quantize(np.eye(3), "binary")
        >>> score(np.array([[1.0, -1.0, -1.0]]), docs, "binary", dim=3).tolist()
        [[3.0, 1.0, 1.0]]
    """
    check_precision(precision)
    q = as_matrix(queries, name="queries")
    if precision in ("float32", "float16"):
        return dot(q, docs)
    if precision == "int8":
        if calibration is None:
            raise InvalidVectorError("int8 scoring needs the documents' calibration")
        return dot_int8(q, docs, calibration)
    return binary_scores(quantize(q, "binary"), docs, dim if dim is not None else q.shape[1])


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best columns of each row, best first.

    Among the selected columns, ties break by lower index.

    Example::

        >>> top_k(np.array([[0.1, 0.9, 0.5]]), 2)[0].tolist()
        [[1, 2]]
    """
    s = np.asarray(scores)
    n = s.shape[1]
    k = min(k, n)
    if k <= 0:
        return np.empty((s.shape[0], 0), np.int64), np.empty((s.shape[0], 0), s.dtype)
    if k < n:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), s.shape).copy()
    part_scores = np.take_along_axis(s, part, axis=1)
    # lexsort: primary key -score, secondary key index (stable tie-break)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(s, idx, axis=1)
