"""Which way out keeps the most at short prefixes: plain truncation, a PCA rotation, the
learned orthogonal adaptor, or a MatryoshkaLoss fine-tune — measured on one dataset.

Transforms are fitted on documents only (a BEIR corpus, or STS-B's *train* sentences),
never on the queries or pairs they are evaluated with.

Example::

    >>> compare("../shared/datasets/scifact", "all-MiniLM-L6-v2")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

from typing import Any

import numpy as np
from scipy.stats import spearmanr

from .. import vectors
from ..cache import cached_embed
from ..registry import get_spec
from ..transform import default_prefix_dims, fit_transform
from .datasets import BeirDataset, load_beir, load_sts
from .retrieval import embed_beir, score_run


def _ndcg(ds: BeirDataset, docs: np.ndarray, queries: np.ndarray, dim: int) -> float:
    d, q = vectors.truncate(docs, dim), vectors.truncate(queries, dim)
    run = {}
    for start in range(0, len(q), 64):
        idx, sc = vectors.top_k(q[start:start + 64] @ d.T, 100)
        for qi, (rows, scores) in enumerate(zip(idx, sc)):
            run[ds.query_ids[start + qi]] = {ds.doc_ids[r]: float(s)
                                             for r, s in zip(rows, scores)}
    return score_run(ds.qrels, run)["ndcg@10"]


def _spearman(a: np.ndarray, b: np.ndarray, gold: np.ndarray, dim: int) -> float:
    sims = np.einsum("ij,ij->i", vectors.truncate(a, dim), vectors.truncate(b, dim))
    return float(spearmanr(sims, gold).statistic)


def compare(folder: str, model: str, *, trained: str | None = None,
            dims: Sequence[int] | None = None, adaptor_steps: int = 300) -> dict[str, Any]:
    """nDCG@10 (BEIR folder) or Spearman (STS-B folder) at each prefix, and its retention
    against the same method's full dimension, for every method."""
    spec = get_spec(model)
    native = spec.native_dim
    dims = sorted(set(dims or default_prefix_dims(native)) | {native})
    path = Path(folder)
    beir = (path / "corpus.jsonl").exists()
    ds: Any
    inputs: dict[str, tuple[np.ndarray, ...]]
    if beir:
        ds = load_beir(path, "test")
        docs, queries = embed_beir(ds, spec.name)
        fit_on, metric = docs, "ndcg@10"
        inputs = {"truncation": (docs, queries)}
    else:
        ds = load_sts(path, "test")
        train = load_sts(path, "train")
        a = cached_embed(spec.name, ds.sentences1, kind="document")
        b = cached_embed(spec.name, ds.sentences2, kind="document")
        fit_on = cached_embed(spec.name, sorted(set(train.sentences1 + train.sentences2)),
                              kind="document")
        metric, gold = "spearman", np.asarray(ds.scores)
        inputs = {"truncation": (a, b)}
    details = {}
    for method in ("pca", "adaptor"):
        t = fit_transform(fit_on, method, dims=dims, steps=adaptor_steps)
        details[method] = t.details
        inputs[method] = tuple(t.apply(x) for x in inputs["truncation"])
    if trained:
        tspec = get_spec(trained)
        if beir:
            inputs["matryoshka fine-tune"] = embed_beir(ds, tspec.name)
        else:
            inputs["matryoshka fine-tune"] = (
                cached_embed(tspec.name, ds.sentences1, kind="document"),
                cached_embed(tspec.name, ds.sentences2, kind="document"))
    rows = []
    for method, (x, y) in inputs.items():
        scores = {d: (_ndcg(ds, x, y, d) if beir else _spearman(x, y, gold, d)) for d in dims}
        for d in dims:
            rows.append({"method": method, "dim": d, metric: round(scores[d], 4),
                         "retention": round(scores[d] / scores[native], 4)})
    return {"model": spec.name, "trained": trained, "dataset": path.name, "metric": metric,
            "split": "test", "fitted_on": "corpus" if beir else "train sentences",
            "dims": dims, "results": rows, "details": details}


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Retention against dimension, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in report["results"]):
        pts = [(r["dim"], r["retention"]) for r in report["results"] if r["method"] == method]
        ax.plot(*zip(*pts), marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(report["dims"], [str(d) for d in report["dims"]])
    ax.set_xlabel("prefix dimensions")
    ax.set_ylabel(f"retention of {report['metric']}")
    ax.set_title(f"{report['model']} on {report['dataset']}: keeping meaning in short prefixes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
