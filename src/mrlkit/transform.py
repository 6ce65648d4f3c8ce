"""One transform type: an orthogonal map that makes a model's prefixes meaningful.

A :class:`Transform` (``x → x @ matrix``, re-normalised) is fitted on stored vectors
with no model call — ``pca`` (principal directions, closed form) or ``adaptor`` (a learned
orthogonal matrix, the Matryoshka-Adaptor objective) — kept with an embedding set, and
applied alike to its stored vectors, later additions and every query. An orthogonal map
preserves every cosine, so full-dimension scores cannot move. Two transforms compose
(:meth:`Transform.then`); a set keeps the composition.

:func:`adapt` is the one call that fits a transform on a set and applies it.

Example::

    >>> import numpy as np
    >>> t = Transform("pca", np.eye(2, dtype=np.float32), [1, 2], 2)
    >>> t.then(t).method
    'pca+pca'
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Sequence

import numpy as np

from . import vectors
from .errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from .stores import SetInfo, Store

METHODS = ("pca", "adaptor")


@dataclass
class Transform:
    """An orthogonal map applied to stored vectors and to every query: ``x → x @ matrix``."""

    method: str
    matrix: np.ndarray
    mrl_dims: list[int]
    fitted_on: int
    details: dict[str, Any] = field(default_factory=dict)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform rows and re-normalise them.

        Example::

            >>> Transform("pca", np.eye(2, dtype=np.float32), [1, 2], 2).apply(
            ...     np.array([[3.0, 4.0]])).tolist()
            [[0.6000000238418579, 0.800000011920929]]
        """
        return vectors.normalize(vectors.normalize(vectors.as_matrix(x)) @ self.matrix)

    def undo(self, x: np.ndarray) -> np.ndarray:
        """The rows :meth:`apply` came from (the matrix is orthogonal): a set's stored
        vectors as the model's, so that used as queries they are not transformed twice.

        Example::

            >>> t = Transform("pca", np.array([[0.0, 1.0], [1.0, 0.0]], np.float32), [1], 2)
            >>> np.allclose(t.undo(t.apply(np.array([[3.0, 4.0]]))), [[0.6, 0.8]])
            True
        """
        return vectors.normalize(vectors.as_matrix(x) @ self.matrix.T)

    def then(self, new: Transform) -> Transform:
        """This transform followed by ``new`` (what a set keeps after a second adapt).

        Example::

            >>> eye = Transform("pca", np.eye(2, dtype=np.float32), [1, 2], 2)
            >>> eye.then(eye).matrix.tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        if new.matrix.shape != self.matrix.shape:
            raise InvalidInputError(
                f"a transform for this set must be {self.matrix.shape[0]}×"
                f"{self.matrix.shape[1]}, not {new.matrix.shape[0]}×{new.matrix.shape[1]}")
        return Transform(f"{self.method}+{new.method}",
                         (self.matrix @ new.matrix).astype(np.float32), list(new.mrl_dims),
                         new.fitted_on, dict(new.details))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "matrix": self.matrix.tolist(),
                "mrl_dims": self.mrl_dims, "fitted_on": self.fitted_on,
                "details": self.details}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        return cls(d["method"], np.asarray(d["matrix"], np.float32), list(d["mrl_dims"]),
                   int(d.get("fitted_on", 0)), dict(d.get("details", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @staticmethod
    def from_json(text: str | None) -> Transform | None:
        """A stored transform (JSON text; empty or None: no transform), parsed once per
        distinct text: stores read it with every search."""
        return _parse(text) if text else None


@lru_cache(maxsize=8)
def _parse(text: str) -> Transform:
    return Transform.from_dict(json.loads(text))


def default_prefix_dims(native: int) -> list[int]:
    """The prefixes a transform or a training run optimises: powers of two from 32 and
    the 1/2, 1/4, 1/8, 1/16 fractions of the native dimension, up to native.

    Example::

        >>> default_prefix_dims(384)
        [24, 32, 48, 64, 96, 128, 192, 256, 384]
    """
    dims = {native} | {native // f for f in (2, 4, 8, 16) if native // f >= 16}
    dims |= {d for d in (32, 64, 128, 256, 512, 1024, 2048) if d < native}
    return sorted(dims)


def pca_rotation(x: np.ndarray) -> np.ndarray:
    """The orthogonal matrix whose columns are the principal directions of ``x``, by
    decreasing variance (``x @ R`` puts the most variance in the first dimensions)."""
    x64 = np.asarray(x, np.float64)
    centred = x64 - x64.mean(axis=0)
    cov = centred.T @ centred / max(1, len(x64) - 1)
    values, vecs = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return np.asarray(vecs[:, order], np.float32)


def check_method(method: str) -> str:
    """``method`` if it names a transform, else one clear error (before any work)."""
    if method not in METHODS:
        raise InvalidInputError(f"method must be pca or adaptor, not {method!r}")
    return method


Progress = Callable[[int, int, float], None]


def fit_transform(x: np.ndarray, method: str = "pca", *, dims: Sequence[int] | None = None,
                  steps: int = 300, neighbours: int = 10, batch: int = 512, seed: int = 0,
                  lr: float = 5e-3, progress: Progress | None = None) -> Transform:
    """Fit an orthogonal transform on stored vectors (rows of ``x``, unit norm).

    ``adaptor`` trains, in torch on the CPU, an orthogonal matrix ``W`` (parametrised as
    the matrix exponential of a skew-symmetric one, starting from the PCA rotation) to
    minimise, over prefix lengths ``m`` in ``dims`` and anchors ``i``,
    ``(cos((x_i W)[:m], (x_j W)[:m]) − cos(x_i, x_j))²`` for ``j`` among ``i``'s
    ``neighbours`` nearest (weight 1) and random others (weight 0.25).

    Example::

        >>> fit_transform(np.eye(4, dtype=np.float32), "pca").matrix.shape
        (4, 4)
    """
    check_method(method)
    x = vectors.normalize(vectors.as_matrix(x, name="stored vectors"))
    n, d = x.shape
    if n < 2:
        raise InvalidInputError(f"a transform needs at least 2 stored vectors, not {n}")
    dims = sorted(int(m) for m in (dims or default_prefix_dims(d)) if 0 < m <= d)
    rotation = pca_rotation(x)
    if method == "pca":
        return Transform("pca", rotation, dims, n,
                         {"source": "principal directions of the stored vectors (closed form)"})
    return _fit_adaptor(x, rotation, dims, steps=steps, neighbours=neighbours, batch=batch,
                        seed=seed, lr=lr, progress=progress)


def _fit_adaptor(x: np.ndarray, rotation: np.ndarray, dims: list[int], *, steps: int,
                 neighbours: int, batch: int, seed: int, lr: float,
                 progress: Progress | None) -> Transform:
    import torch

    n, d = x.shape
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(x)
    # each vector's nearest neighbours at full dimension: the similarities to keep
    nn_idx = np.empty((n, neighbours), np.int64)
    for start in range(0, n, 2048):
        s = x[start:start + 2048] @ x.T
        s[np.arange(len(s)), np.arange(start, start + len(s))] = -np.inf
        nn_idx[start:start + 2048] = np.argpartition(-s, neighbours, axis=1)[:, :neighbours]
    nn = torch.from_numpy(nn_idx)
    skew = torch.zeros(d, d, requires_grad=True)
    base = torch.from_numpy(rotation)
    opt = torch.optim.Adam([skew], lr=lr)
    dims_t = [m for m in dims if m < d]
    weight = torch.cat([torch.ones(neighbours), torch.full((neighbours,), 0.25)])

    def objective(a: np.ndarray, others: np.ndarray) -> torch.Tensor:
        a_t = torch.from_numpy(a)
        j = torch.cat([nn[a_t], torch.from_numpy(others)], dim=1)   # (B, 2K)
        target = (xt[a_t, None, :] * xt[j]).sum(-1)                 # full cosines
        w = base @ torch.matrix_exp(skew - skew.T)
        za, zj = xt[a_t] @ w, xt[j] @ w
        loss = torch.zeros(())
        for m in dims_t:
            pa = torch.nn.functional.normalize(za[:, :m], dim=-1)
            pj = torch.nn.functional.normalize(zj[..., :m], dim=-1)
            loss = loss + (((pa[:, None, :] * pj).sum(-1) - target) ** 2 * weight).mean()
        return loss / max(1, len(dims_t))

    def draw() -> tuple[np.ndarray, np.ndarray]:
        return (rng.choice(n, size=min(batch, n), replace=False),
                rng.integers(0, n, size=(min(batch, n), neighbours)))

    # a fixed sample measures the objective before and after, free of batch noise
    probe = draw()
    with torch.no_grad():
        first = float(objective(*probe))
    t0 = time.perf_counter()
    for step in range(steps):
        loss = objective(*draw())
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if progress:
            progress(step + 1, steps, float(loss.detach()))
    with torch.no_grad():
        last = float(objective(*probe))
        w = (base @ torch.matrix_exp(skew - skew.T)).numpy().astype(np.float32)
    # re-orthogonalise in float64 (polar decomposition) so full-dimension scores stay put
    u, _, vt = np.linalg.svd(w.astype(np.float64))
    return Transform("adaptor", (u @ vt).astype(np.float32), dims, n, {
        "source": "Matryoshka-Adaptor (Yoon et al., EMNLP 2024), unsupervised objective, "
                  "orthogonal parametrisation", "steps": steps, "neighbours": neighbours,
        "first_loss": round(first, 6), "last_loss": round(last, 6), "lr": lr,
        "seconds": round(time.perf_counter() - t0, 1)})


def adapt(store: Store[Any], name: str, method: str = "pca", *, steps: int = 300,
          dims: Sequence[int] | None = None, progress: Progress | None = None) -> SetInfo:
    """Fit a transform on set ``name``'s stored vectors and apply it to the set: its
    stored vectors, later additions and every query. A second call composes with the
    first. No model call.

    Example::

        >>> import mrlkit
        >>> mrlkit.adapt(mrlkit.open_store("/tmp/demo"), "notes", "pca")  # doctest: +SKIP
    """
    check_method(method)
    _, x = store.vectors(name)
    transform = fit_transform(x, method, steps=steps, dims=dims, progress=progress)
    return store.adapt(name, transform)
