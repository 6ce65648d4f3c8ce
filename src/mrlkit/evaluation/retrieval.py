"""Retrieval quality against dimension, precision and funnel, on a BEIR folder.

Corpus and queries are embedded once at the native dimension (through the embedding
cache); every setting is a search through the public store and funnel API over those
vectors. Metrics come from ``pytrec_eval`` (pytrec-eval-terrier): nDCG@10 and
Recall@100 on the top 100, MRR@10 on the top 10.

Example::

    >>> report = evaluate_retrieval("../shared/datasets/scifact", "all-MiniLM-L6-v2",
    ...                             dims=[384], precisions=["float32"])  # doctest: +SKIP
    >>> round(report["results"][0]["ndcg@10"], 3)                        # doctest: +SKIP
    0.645
"""

from __future__ import annotations

from dataclasses import replace

import tempfile
import time
from collections.abc import Sequence

from typing import Any

import numpy as np

from .. import vectors
from ..cache import cached_embed
from ..funnel import Funnel, Stage
from ..registry import get_spec
from ..stores import open_store
from .datasets import BeirDataset, load_beir

METRICS = ("ndcg@10", "recall@100", "mrr@10")
LATENCY_QUERIES = 50


def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
              ) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 of ``run`` against ``qrels``.

    MRR@10 is trec_eval's reciprocal rank on the run cut to its 10 best documents.

    Example::

        >>> score_run({"q": {"d1": 1}}, {"q": {"d1": 0.9, "d2": 0.5}})["mrr@10"]
        1.0
    """
    return {m: float(v.mean()) for m, v in per_query(qrels, run).items()}


def per_query(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
              ) -> dict[str, np.ndarray]:
    """Each judged query's nDCG@10, Recall@100 and MRR@10 (in ``sorted(qrels)`` order; a
    query with no retrieved document scores 0, as in BEIR)."""
    import pytrec_eval

    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10])
             for q, docs in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    ids = sorted(qrels)
    return {"ndcg@10": np.array([full.get(q, {}).get("ndcg_cut_10", 0.0) for q in ids]),
            "recall@100": np.array([full.get(q, {}).get("recall_100", 0.0) for q in ids]),
            "mrr@10": np.array([rr.get(q, {}).get("recip_rank", 0.0) for q in ids])}


def retention_interval(part: np.ndarray, full: np.ndarray, *, rounds: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """95% interval of a retention (mean of ``part`` ÷ mean of ``full``, per query,
    paired) by the bootstrap over queries: how far the sample of queries lets it move.

    Example::

        >>> lo, hi = retention_interval(np.full(50, 0.5), np.ones(50))
        >>> (round(lo, 3), round(hi, 3))
        (0.5, 0.5)
    """
    if len(full) < 2:
        return (0.0, float("inf"))
    idx = np.random.default_rng(seed).integers(0, len(full), (rounds, len(full)))
    den = full[idx].mean(axis=1)
    ratio = np.divide(part[idx].mean(axis=1), den, out=np.zeros(rounds), where=den > 0)
    lo, hi = np.percentile(ratio, [2.5, 97.5])
    return (round(float(lo), 4), round(float(hi), 4))


def embed_beir(ds: BeirDataset, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Native-dimension document and query vectors, through the embedding cache."""
    docs = cached_embed(model, ds.doc_texts, kind="document")
    queries = cached_embed(model, ds.query_texts, kind="query")
    return docs, queries


def evaluate_retrieval(folder: str, model: str, *, dims: Sequence[int] | None = None,
                       precisions: Sequence[str] = ("float32", "float16", "int8", "binary"),
                       funnels: Sequence[str] = (), split: str = "test",
                       ignore_identical_ids: bool = False,
                       max_queries: int | None = None) -> dict[str, Any]:
    """Evaluate every ``dims`` × ``precisions`` setting, and each funnel.

    Returns ``{"model", "dataset", "split", "native_dim", "supports_mrl", "results": [...]}``
    with, per setting: dim, precision, funnel (None for plain settings), nDCG@10,
    Recall@100, MRR@10, retention (nDCG@10 ÷ nDCG@10 at native float32), bytes per vector
    and p50 single-query latency.
    """
    spec = get_spec(model)
    if max_queries is not None and max_queries < 1:
        from ..errors import InvalidInputError

        raise InvalidInputError(f"--max-queries must be at least 1, not {max_queries}")
    ds = load_beir(folder, split)
    if max_queries is not None and max_queries < len(ds.query_ids):
        # the first queries in the split's order: the same subset every run
        keep = ds.query_ids[:max_queries]
        ds = replace(ds, query_ids=keep, query_texts=ds.query_texts[:max_queries],
                     qrels={q: ds.qrels[q] for q in keep})
    dims = sorted(set(dims or spec.default_dims()))
    for d in dims:
        if not 0 < d <= spec.native_dim:
            from ..errors import DimensionError

            raise DimensionError(f"{spec.name} has {spec.native_dim} dimensions; "
                                 f"cannot evaluate at {d}")
    precisions = [vectors.check_precision(p) for p in precisions]
    docs, queries = embed_beir(ds, spec.name)
    settings: list[tuple[int | None, str | None, Funnel]] = [
        (d, p, Funnel((Stage(d, p),))) for d in dims for p in precisions]
    if (spec.native_dim, "float32") not in {(d, p) for d, p, _ in settings}:
        settings.insert(0, (spec.native_dim, "float32", Funnel.exact(spec.native_dim)))
    settings += [(None, None, Funnel.parse(f)) for f in funnels]

    results: list[dict[str, Any]] = []
    each: list[dict[str, np.ndarray]] = []  # per-query metrics, for the intervals
    with tempfile.TemporaryDirectory(prefix="mrlkit-eval-") as tmp:
        store = open_store(tmp)
        store.create_set("eval", spec.name, allow_non_mrl=True)  # measuring is the point
        store.add("eval", ds.doc_ids, docs)
        for dim, precision, funnel in settings:
            res = store.search("eval", queries, k=100, funnel=funnel)
            run = {}
            for qid, hits in zip(ds.query_ids, res.hits):
                run[qid] = {h.id: h.score for h in hits
                            if not (ignore_identical_ids and h.id == qid)}
            scored = per_query(ds.qrels, run)
            metrics = {m: float(v.mean()) for m, v in scored.items()}
            each.append(scored)
            lat = []
            for i in range(min(LATENCY_QUERIES, len(queries))):
                t0 = time.perf_counter()
                store.search("eval", queries[i:i + 1], k=100, funnel=funnel)
                lat.append((time.perf_counter() - t0) * 1000)
            first = funnel.stages[0]
            is_funnel = dim is None
            results.append({
                "dim": first.dim if not is_funnel else funnel.stages[-1].dim,
                "precision": precision if not is_funnel else funnel.stages[-1].precision,
                "funnel": str(funnel) if is_funnel else None,
                **{m: round(v, 5) for m, v in metrics.items()},
                # a funnel holds its first-stage view in memory; later stages read the
                # stored vectors of the survivors only
                "bytes_per_vector": vectors.bytes_per_vector(first.dim, first.precision),
                # what must be kept on disk: the setting itself, or for a funnel its
                # first-stage view plus the vectors its last stage rescores
                "disk_bytes_per_vector": vectors.bytes_per_vector(first.dim, first.precision)
                + (vectors.bytes_per_vector(funnel.stages[-1].dim, funnel.stages[-1].precision)
                   if len(funnel.stages) > 1 else 0),
                "p50_ms": round(float(np.median(lat)), 3),
                "non_mrl_truncation": (not spec.supports_mrl
                                       and min(s.dim for s in funnel.stages) < spec.native_dim),
            })
        store.close()
    base = next(r for r in results if r["funnel"] is None and r["dim"] == spec.native_dim
                and r["precision"] == "float32")
    full = each[results.index(base)]
    for r, scored in zip(results, each):
        r["retention"] = round(r["ndcg@10"] / base["ndcg@10"], 4) if base["ndcg@10"] else None
        # per metric: how far the sample of queries lets the retention move (95%)
        r["retention_ci"] = {m: list(retention_interval(scored[m], full[m])) for m in full}
    out = {"model": spec.name, "dataset": ds.name, "split": split,
           "native_dim": spec.native_dim, "supports_mrl": spec.supports_mrl,
           "queries": len(ds.query_ids), "documents": len(ds.doc_ids), "results": results}
    fidelity = encoder_fidelity(spec, ds.doc_texts[:200], docs[:200])
    if fidelity:
        out["encoder"] = fidelity
    return out


def encoder_fidelity(spec: Any, texts: Sequence[str], got: np.ndarray) -> dict[str, Any] | None:
    """When a faster encoder (onnx, onnx-int8) made ``got``: the cosine of each vector to
    the model's own (torch) one for the same texts — what the encoder costs, measured
    on the data at hand. None for torch itself."""
    from ..providers import backend_of

    backend = backend_of(spec, {})
    if backend == "torch" or not len(texts):
        return None
    ref = cached_embed(spec.name, list(texts), kind="document", backend="torch")
    cos = (vectors.normalize(np.asarray(got, np.float32)) * vectors.normalize(ref)).sum(1)
    return {"backend": backend, "sample": len(texts),
            "cosine_to_torch_mean": round(float(cos.mean()), 5),
            "cosine_to_torch_min": round(float(cos.min()), 5)}
