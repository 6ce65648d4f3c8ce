"""Similarity retention: how pair similarities change as vectors are truncated.

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(20, 16)), rng.normal(size=(20, 16))
    >>> rows = pair_similarity_table(a, b, [8, 16])
    >>> rows[-1]["retention"]
    1.0
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr

from .. import vectors


def pair_similarities(a: np.ndarray, b: np.ndarray, dim: int) -> np.ndarray:
    """Cosine similarity of each row pair ``(a[i], b[i])`` after truncation to ``dim``.

    Example::

        >>> pair_similarities(np.eye(2), np.eye(2), 1).tolist()
        [1.0, 0.0]
    """
    ta, tb = vectors.truncate(a, dim), vectors.truncate(b, dim)
    return np.asarray(np.einsum("ij,ij->i", ta, tb))


def pair_similarity_table(a: np.ndarray, b: np.ndarray, dims: Sequence[int],
                          precision: str = "float32") -> list[dict[str, Any]]:
    """The seeds' retention table: per dimension, mean pair similarity, its ratio to the
    full dimension's ("retention"), and the rank agreement (Spearman) of the pair
    similarities with those at full dimension, which tells whether the *ordering* of
    pairs survives truncation (a rising mean similarity can hide a lost ordering).

    Example::

        >>> pair_similarity_table(np.eye(3), np.eye(3), [3])[0]["mean_similarity"]
        1.0
    """
    full_dim = a.shape[1]
    full = pair_similarities(a, b, full_dim)
    full_mean = float(full.mean())
    rows = []
    for dim in sorted(set(dims)):
        sims = full if dim == full_dim else pair_similarities(a, b, dim)
        rho = 1.0 if dim == full_dim else float(spearmanr(sims, full).statistic)
        rows.append({
            "dim": int(dim),
            "mean_similarity": round(float(sims.mean()), 4),
            "retention": round(float(sims.mean()) / full_mean, 4) if full_mean else None,
            "rank_agreement": round(rho, 4),
            "bytes_per_vector": vectors.bytes_per_vector(int(dim), precision),
        })
    return rows


def evaluate_similarity(folder: str, model: str, *, dims: Sequence[int] | None = None,
                        split: str = "test") -> dict[str, Any]:
    """STS-B: per dimension, Spearman correlation of cosine similarity with the gold
    scores, its retention against the native dimension, and the seeds' mean pair
    similarity table.

    Example::

        >>> evaluate_similarity("../shared/datasets/stsb", "all-MiniLM-L6-v2")  # doctest: +SKIP
    """
    from ..cache import cached_embed
    from ..registry import get_spec
    from .datasets import load_sts

    spec = get_spec(model)
    ds = load_sts(folder, split)
    dims = sorted(set(dims or spec.default_dims()) | {spec.native_dim})
    a = cached_embed(spec.name, ds.sentences1, kind="document")
    b = cached_embed(spec.name, ds.sentences2, kind="document")
    gold = np.asarray(ds.scores)
    table = {r["dim"]: r for r in pair_similarity_table(a, b, dims)}
    rows = []
    full = None
    for dim in sorted(dims, reverse=True):
        rho = float(spearmanr(pair_similarities(a, b, dim), gold).statistic)
        full = rho if full is None else full
        rows.append({"dim": dim, "spearman": round(rho, 4),
                     "retention": round(rho / full, 4),
                     "mean_similarity": table[dim]["mean_similarity"],
                     "bytes_per_vector": vectors.bytes_per_vector(dim, "float32"),
                     "non_mrl_truncation": not spec.supports_mrl and dim < spec.native_dim})
    return {"model": spec.name, "dataset": "stsb", "split": split, "pairs": len(gold),
            "results": sorted(rows, key=lambda r: r["dim"])}
