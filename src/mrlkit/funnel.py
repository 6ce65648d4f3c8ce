"""Funnel search: a cheap prefix first, the full vector to rerank.

A :class:`Funnel` is a list of :class:`Stage` ``(dim, precision, keep)``. Stage 1 scans a
resolution view of every live row (or asks the store's ANN index); each later stage
rescores only the survivors at a higher dimension or precision, computed from the stored
full vectors. Exact search is the one-stage funnel.

Example::

    >>> Funnel.parse("64:binary:1000,256:int8:100,384")
    Funnel(64:binary:1000,256:int8:100,384:float32)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol
from collections.abc import Callable, Sequence

import numpy as np

from . import vectors
from .errors import DimensionError, InvalidInputError
from .vectors import Int8Calibration

MAX_KEEP = 1_000_000  # candidates a stage may keep (and k): bounds memory per query
_SCORE_CELLS = 32_000_000  # queries × rows scored at once, to bound memory
_RERANK_FLOATS = 1_000_000  # candidate floats gathered at once in a rerank stage


@dataclass
class StageTiming:
    """Time a funnel stage took for the whole query batch."""

    dim: int
    precision: str
    keep: int
    ms: float
    method: str = "exact"  # exact, ann, rerank, or the engine's own (sql:hnsw, …)
    reads: int = 0         # stored vectors a rerank stage read (all queries together)


@dataclass
class View:
    """A resolution view over every row of a set (deleted rows included; the funnel
    masks them): ``codes`` at (``dim``, ``precision``), and the int8 calibration."""

    dim: int
    precision: str
    codes: np.ndarray
    calibration: Int8Calibration | None = None


Result = tuple[list[np.ndarray], list[np.ndarray], list[StageTiming], list[list[int]]]


@dataclass(frozen=True)
class Stage:
    """One funnel stage: score at ``dim`` and ``precision``, keep the ``keep`` best."""

    dim: int
    precision: str = "float32"
    keep: int | None = None

    def __str__(self) -> str:
        return f"{self.dim}:{self.precision}" + (f":{self.keep}" if self.keep else "")


@dataclass(frozen=True)
class Funnel:
    """Stages from cheapest to most exact; the last one's ``keep`` is the search's k."""

    stages: tuple[Stage, ...]

    def __repr__(self) -> str:
        return f"Funnel({self})"

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.stages)

    @classmethod
    def exact(cls, dim: int) -> Funnel:
        """The one-stage funnel: exact float32 search at ``dim``.

        Example::

            >>> str(Funnel.exact(384))
            '384:float32'
        """
        return cls((Stage(dim, "float32"),))

    @classmethod
    def parse(cls, spec: str) -> Funnel:
        """Parse ``DIM[:PRECISION][:KEEP]`` stages separated by commas.

        Example::

            >>> Funnel.parse("64:binary:200,384").stages[0]
            Stage(dim=64, precision='binary', keep=200)
        """
        stages = []
        for part in (p.strip() for p in spec.split(",")):
            tokens = part.split(":")
            try:
                if not part or len(tokens) > 3:
                    raise ValueError
                dim = _number(tokens[0])
                precision, keep = "float32", None
                for tok in tokens[1:]:
                    if tok[:1].isdigit():
                        keep = _number(tok)
                    else:
                        precision = vectors.check_precision(tok)
            except ValueError:
                raise InvalidInputError(
                    f"bad funnel stage {part!r}: expected DIM[:PRECISION][:KEEP], e.g. "
                    "64:binary:1000,256:int8:100,384") from None
            stages.append(Stage(dim, precision, keep))
        return cls(tuple(stages))

    def check(self, stored_dim: int, k: int) -> Funnel:
        """Validate against a set; return the funnel with the last stage keeping ``k``."""
        if not self.stages:
            raise InvalidInputError("a funnel needs at least one stage")
        if not 0 < k <= MAX_KEEP:
            raise InvalidInputError(f"k must be 1..{MAX_KEEP:,}, not {k}")
        for i, s in enumerate(self.stages):
            if not 0 < s.dim <= stored_dim:
                raise DimensionError(f"funnel stage {s} asks {s.dim} dimensions; the set "
                                     f"keeps {stored_dim}, so 1..{stored_dim} are possible")
            vectors.check_precision(s.precision)
            if s.keep is not None and not 0 < s.keep <= MAX_KEEP:
                raise InvalidInputError(f"funnel stage {s} keeps {s.keep}: a stage keeps "
                                        f"1..{MAX_KEEP:,} candidates")
            last = i == len(self.stages) - 1
            if not last and (s.keep is None or s.keep < k):
                raise InvalidInputError(f"funnel stage {s} must keep at least k={k} "
                                        "candidates for the next stage")
        *head, tail = self.stages
        return Funnel(tuple(head) + (Stage(tail.dim, tail.precision, k),))


@dataclass(frozen=True)
class Adaptive:
    """Per-query early exit: after a non-final stage, a query whose gap between rank k
    and rank k+1 is at least ``margin`` × the spread of its top scores is decided there
    and skips the remaining stages.

    Example::

        >>> Adaptive(margin=0.3).margin
        0.3
    """

    margin: float = 0.25


class Index(Protocol):
    """A nearest-neighbour index over a float prefix (faiss's search signature)."""

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class FunnelSource(Protocol):
    """What the generic executor needs from one set's vectors."""

    def view(self, dim: int, precision: str) -> View: ...

    def full_vectors(self, rows: np.ndarray) -> np.ndarray: ...

    def calibration(self, dim: int) -> Int8Calibration: ...

    def ann(self, dim: int) -> Index | None: ...


class MatrixSource:
    """Vectors already in memory (a backend's candidates, or every row it read) served to
    the generic executor; views are computed on the fly, ``calibrate(dim)`` gives the
    set's int8 calibration.

    Example::

        >>> src = MatrixSource(np.eye(2, dtype=np.float32), calibrate=Int8Calibration.fit)
        >>> src.view(1, "binary").codes.shape
        (2, 1)
    """

    def __init__(self, matrix: np.ndarray, calibrate: Callable[[int], Int8Calibration]
                 ) -> None:
        self.matrix, self._calibrate = matrix, calibrate

    def view(self, dim: int, precision: str) -> View:
        cal = self._calibrate(dim) if precision == "int8" else None
        codes = vectors.quantize(vectors.truncate(self.matrix, dim), precision, cal)
        return View(dim, precision, codes, cal)

    def full_vectors(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[rows], np.float32)

    def calibration(self, dim: int) -> Int8Calibration:
        return self._calibrate(dim)

    def ann(self, dim: int) -> Index | None:
        return None


def _score_rows(q: np.ndarray, cand: np.ndarray, stage: Stage,
                cal: Int8Calibration | None) -> np.ndarray:
    """Scores of each query against its own candidates: q (Q, D), cand (Q, S, D), both
    unit-norm float32 at the stored dimension."""
    x, qd = cand, q
    if stage.dim != cand.shape[-1]:  # a prefix: re-normalise both sides
        x = cand[..., :stage.dim]
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        qd = vectors.normalize(q[:, :stage.dim])
    if stage.precision == "float16":
        x = x.astype(np.float16).astype(np.float32)
    elif stage.precision == "int8":
        assert cal is not None, "an int8 stage is scored with its calibration"
        flat = x.reshape(-1, stage.dim)
        x = vectors.dequantize_int8(vectors.quantize(flat, "int8", cal), cal).reshape(x.shape)
    elif stage.precision == "binary":
        x = np.where(x > 0, 1.0, -1.0).astype(np.float32)
        qd = np.where(qd > 0, 1.0, -1.0).astype(np.float32)
    return np.asarray(np.matmul(x, qd[:, :, None])[..., 0])


def execute(source: FunnelSource, queries: np.ndarray, funnel: Funnel, *,
            n_rows: int, live: np.ndarray | None = None, candidates: np.ndarray | None = None,
            adaptive: Adaptive | None = None, dead: int | None = None,
            index: bool = False) -> Result:
    """Run ``funnel`` for prepared float32 ``queries`` at the set's stored dimension.

    ``live`` is a boolean mask of live rows (None: all ``n_rows`` are live), ``dead`` the
    number of rows it masks (counted when not given);
    ``candidates`` restricts the search to these rows (a metadata filter); with ``index``
    (the planner's choice) a float32 first stage walks the source's ANN index.
    Returns, per query, the rows and scores of its hits, the stage timings and the
    dimensions each query used.
    """
    q = vectors.as_matrix(queries, name="queries")
    nq = q.shape[0]
    first, rest = funnel.stages[0], funnel.stages[1:]
    timings: list[StageTiming] = []
    dims_used = [[first.dim] for _ in range(nq)]
    keep = first.keep or 10

    # --- stage 1: every candidate row --------------------------------------------
    t0 = time.perf_counter()
    method = "exact"
    # the source's ANN index (None: it has none, or the planner did not choose it)
    ann = (source.ann(first.dim)
           if index and candidates is None and first.precision == "float32" else None)
    if ann is not None:
        method = "ann"
        if dead is None:
            dead = 0 if live is None else n_rows - int(np.count_nonzero(live))
        # an index that still holds deleted rows and cannot skip them in its walk:
        # fetch past them, and more when many died
        fetch = keep
        if not getattr(ann, "masks_dead", False):
            fetch = min(n_rows, keep + dead if dead < 10 * keep else 2 * keep + dead)
        scores, rows = ann.search(vectors.truncate(q, first.dim), fetch)
        top_rows, top_scores = [], []
        for r, s in zip(rows, scores):
            ok = r >= 0
            if live is not None and dead:
                ok &= live[np.clip(r, 0, None)]
            top_rows.append(r[ok][:keep])
            top_scores.append(s[ok][:keep])
    else:
        if candidates is not None:
            pool = candidates
        elif live is not None and not live.all():
            pool = np.flatnonzero(live)
        else:
            pool = None  # all rows
        n_pool = n_rows if pool is None else len(pool)
        view = source.view(first.dim, first.precision)
        codes = view.codes if pool is None else view.codes[pool]
        qd = vectors.truncate(q, first.dim)
        top_rows, top_scores = [], []
        step = max(1, _SCORE_CELLS // max(1, n_pool))
        for start in range(0, nq, step):
            s = vectors.score(qd[start:start + step], codes, first.precision,
                              dim=first.dim, calibration=view.calibration)
            idx, sc = vectors.top_k(s, keep)
            top_rows.extend(idx if pool is None else pool[idx])
            top_scores.extend(sc.astype(np.float32))
    timings.append(StageTiming(first.dim, first.precision, keep,
                               (time.perf_counter() - t0) * 1000, method))

    final_rows, final_scores, more_timings, more_dims = rerank(
        source, q, rest, top_rows, top_scores,
        final_k=funnel.stages[-1].keep or 10, adaptive=adaptive)
    for used, extra in zip(dims_used, more_dims):
        used.extend(extra)
    return final_rows, final_scores, timings + more_timings, dims_used


def rerank(source: FunnelSource, queries: np.ndarray, stages: Sequence[Stage],
           rows: list[np.ndarray], scores: list[np.ndarray], *, final_k: int,
           adaptive: Adaptive | None = None) -> Result:
    """Rescore each query's candidate ``rows`` (current ``scores`` best first) through
    ``stages``, reading the candidates' stored vectors from ``source``.

    This is the part of a funnel after its first stage; a backend that runs the first
    stage natively (pgvector SQL) hands its survivors here for stages it cannot run.
    Returns rows, scores, the stage timings and the dimensions each query went through.
    """
    q = vectors.as_matrix(queries, name="queries")
    timings: list[StageTiming] = []
    dims_used: list[list[int]] = [[] for _ in range(q.shape[0])]
    everyone = np.arange(q.shape[0])
    active = everyone
    final_rows = list(rows)
    final_scores = list(scores)
    for i, stage in enumerate(stages):
        if adaptive is not None:
            active = np.array([a for a in active if not _decided(final_scores[a], final_k,
                                                                 adaptive)], dtype=int)
            if i == len(stages) - 1:
                # a query decided early keeps its top k, rescored here all the same:
                # every score a user sees is on the last stage's scale
                for a in np.setdiff1d(everyone, active):
                    final_rows[a] = final_rows[a][:final_k]
                    final_scores[a] = final_scores[a][:final_k]
                active = everyone
        t0 = time.perf_counter()
        cal = (source.calibration(stage.dim)
               if stage.precision == "int8" and len(active) else None)
        reads = 0
        keep_i = stage.keep or 10
        # a few queries at a time: a small candidate block is reused by the allocator,
        # where one block for the whole batch costs a page fault per page, every batch
        widest = max((len(final_rows[a]) for a in active), default=1)
        chunk = max(1, _RERANK_FLOATS // max(1, widest * q.shape[1]))
        for start in range(0, len(active), chunk):
            part = active[start:start + chunk]
            lengths = [len(final_rows[a]) for a in part]
            width = max(lengths)
            if min(lengths) == width:  # as many candidates each (one query, most batches)
                matrix = np.array([final_rows[a] for a in part], np.int64).reshape(
                    len(part), width)
                valid = None
            else:
                matrix = np.zeros((len(part), width), np.int64)
                valid = np.zeros((len(part), width), bool)
                for j, a in enumerate(part):
                    r = final_rows[a]
                    matrix[j, :len(r)] = r
                    valid[j, :len(r)] = True
            order = np.argsort(matrix, axis=None)  # read the stored file in row order
            flat = np.empty((matrix.size, q.shape[1]), np.float32)
            flat[order] = source.full_vectors(matrix.ravel()[order])
            reads += matrix.size if valid is None else int(valid.sum())
            cand = flat.reshape(matrix.shape[0], matrix.shape[1], q.shape[1])
            s = _score_rows(q[part], cand, stage, cal)
            if valid is not None:
                s[~valid] = -np.inf
            idx, sc = vectors.top_k(s, keep_i)
            for j, a in enumerate(part):
                ok = np.isfinite(sc[j])
                final_rows[a] = matrix[j][idx[j]][ok]
                final_scores[a] = sc[j][ok]
                dims_used[a].append(stage.dim)
        timings.append(StageTiming(stage.dim, stage.precision, stage.keep or 10,
                                   (time.perf_counter() - t0) * 1000, "rerank", reads))
    return ([r[:final_k] for r in final_rows], [s[:final_k] for s in final_scores],
            timings, dims_used)


def _decided(scores: np.ndarray, k: int, policy: Adaptive) -> bool:
    """Is the top-k of this query already settled by its current scores?"""
    if len(scores) <= k:
        return True
    spread = float(scores[0] - scores[-1])
    if spread <= 0:
        return False
    return float(scores[k - 1] - scores[k]) >= policy.margin * spread


def _number(token: str) -> int:
    """A stage's number: ASCII digits only (``int`` would also take ``３８４`` and
    ``3_84``, which no one means)."""
    if not (token.isascii() and token.isdigit()):
        raise ValueError(token)
    return int(token)
