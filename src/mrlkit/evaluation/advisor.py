"""The advisor (cheapest configuration that keeps a target retention) and the MRL check
(does truncation behave as in a Matryoshka-trained model?).

Example::

    >>> advise("../shared/datasets/scifact", "all-MiniLM-L6-v2", target=0.95)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import get_spec
from .retrieval import evaluate_retrieval

# Published Matryoshka retention, as the fraction of the native dimension kept → share of
# the native score. Source: the nomic-embed-text-v1.5 model card, "Adjusting
# Dimensionality" (MTEB average: 768 → 62.28, 512 → 61.96, 256 → 61.04, 128 → 59.34,
# 64 → 56.10). OpenAI's text-embedding-3-large announcement (Jan 2024) agrees: 256 of
# 3072 dimensions keep 62.0 of 64.6 MTEB (96%).
REFERENCE_CURVE = {512 / 768: 61.96 / 62.28, 256 / 768: 61.04 / 62.28,
                   128 / 768: 59.34 / 62.28, 64 / 768: 56.10 / 62.28}
TOLERANCE = 0.05


def reference_retention(fraction: float) -> float:
    """Reference retention at a fraction of the native dimension (log-linear
    interpolation of :data:`REFERENCE_CURVE`, extrapolated below 1/12).

    Example::

        >>> round(reference_retention(0.25), 3)
        0.967
    """
    xs = np.log2(sorted(REFERENCE_CURVE))
    ys = np.array([REFERENCE_CURVE[f] for f in sorted(REFERENCE_CURVE)])
    x = np.log2(fraction)
    if x >= xs[-1]:
        return float(np.interp(x, [xs[-1], 0.0], [ys[-1], 1.0]))
    if x < xs[0]:
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return float(ys[0] + slope * (x - xs[0]))
    return float(np.interp(x, xs, ys))


def default_funnels(native: int) -> list[str]:
    """Funnels the advisor considers besides plain settings."""
    return [f"{native}:binary:100,{native}", f"{native}:binary:200,{native}",
            f"{native // 2}:binary:200,{native}", f"{native // 4}:int8:200,{native}"]


def advise(folder: str, model: str, *, target: float = 0.95, metric: str = "ndcg@10",
           split: str = "test", report: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cheapest configuration (bytes per vector, then latency) whose ``metric``
    retention meets ``target``, with the table it chose from."""
    spec = get_spec(model)
    if metric not in ("ndcg@10", "recall@100", "mrr@10"):
        from ..errors import InvalidInputError

        raise InvalidInputError(f"metric must be ndcg@10, recall@100 or mrr@10, not {metric!r}")
    report = report or evaluate_retrieval(folder, spec.name, split=split,
                                          funnels=default_funnels(spec.native_dim))
    results = report["results"]
    base = next(r for r in results if r["funnel"] is None and r["dim"] == spec.native_dim
                and r["precision"] == "float32")
    for r in results:
        r["metric_retention"] = round(r[metric] / base[metric], 4) if base[metric] else 0.0
    ok = [r for r in results if r["metric_retention"] >= target]
    choice = min(ok, key=lambda r: (r["bytes_per_vector"], r["p50_ms"])) if ok else None
    n = report.get("queries", 0)
    if choice is None:
        why = (f"no setting kept {target:.0%} of {metric} on {n} queries: keep float32 at "
               "full dimension")
    else:
        lo, hi = choice["retention_ci"][metric] if "retention_ci" in choice else (None, None)
        ties = [r for r in ok if r["bytes_per_vector"] == choice["bytes_per_vector"]]
        why = (f"the fewest bytes scanned per vector ({choice['bytes_per_vector']}) among "
               f"the {len(ok)} settings that kept ≥ {target:.0%} of {metric}"
               + (f", the fastest ({choice['p50_ms']:.2f} ms p50) of the {len(ties)} that "
                  "scan as few" if len(ties) > 1 else "")
               + f"; retention {choice['metric_retention']:.1%}"
               + (f" (95% CI {lo:.1%}–{hi:.1%} on {n} queries)" if lo is not None else
                  f" on {n} queries"))
        if lo is not None and lo < target:
            why += (f"; the lower end of its interval is under the target: {n} queries "
                    "cannot promise it, measure on more before relying on it")
    return {"model": spec.name, "dataset": report["dataset"], "metric": metric,
            "target": target, "queries": n, "choice": choice, "why": why, "baseline": base,
            "table": results}


def check_mrl(folder: str, model: str, *, split: str = "test") -> dict[str, Any]:
    """Retention of nDCG@10 at 1/2, 1/4, 1/8 and 1/16 of the native dimension, against
    the reference curve; says whether the model behaves like a Matryoshka model."""
    spec = get_spec(model)
    native = spec.native_dim
    dims = sorted({max(1, native // f) for f in (2, 4, 8, 16)} | {native})
    report = evaluate_retrieval(folder, spec.name, dims=dims, precisions=["float32"],
                                split=split)
    rows = []
    for r in sorted(report["results"], key=lambda r: -r["dim"]):
        if r["dim"] == native:
            continue
        ref = reference_retention(r["dim"] / native)
        # below the published curve's last point (1/12) the reference is an
        # extrapolation: shown, but not a fact to judge a model by
        published = r["dim"] / native >= min(REFERENCE_CURVE) - 1e-9
        lo, hi = r["retention_ci"]["ndcg@10"]
        line = ref - TOLERANCE
        rows.append({"dim": r["dim"], "fraction": f"1/{native // r['dim']}",
                     "ndcg@10": r["ndcg@10"], "retention": r["retention"],
                     "retention_ci": [lo, hi], "reference": round(ref, 4),
                     "ok": (r["retention"] >= line) if published else None,
                     # does the sample of queries decide it? (the interval on one side)
                     "decided": (lo >= line or hi < line) if published else None})
    judged = [r for r in rows if r["ok"] is not None]
    matryoshka_like = all(r["ok"] for r in judged)
    n = report["queries"]
    sample = f"on {n} queries of {report['dataset']}"
    if matryoshka_like:
        verdict = (f"{spec.name} behaves like a Matryoshka model {sample}: its prefixes "
                   "keep about as much as published MRL models'.")
    else:
        worst = min(judged, key=lambda r: r["retention"] - r["reference"])
        lo, hi = worst["retention_ci"]
        verdict = (f"truncation hurts {spec.name} {sample}: at {worst['dim']} dimensions it "
                   f"keeps {worst['retention']:.0%} of nDCG@10 (95% CI {lo:.0%}–{hi:.0%}) "
                   f"where MRL models keep about {worst['reference']:.0%}. Do not truncate "
                   "it; use binary or int8 at full dimension to save space, or fit a "
                   "rotation (`mrlkit adapt`) first.")
    open_rows = [r for r in judged if not r["decided"]]
    if open_rows:
        unsure = ", ".join(str(r["dim"]) for r in open_rows)
        verdict += (f" Not settled: at {unsure} dimensions the 95% interval of the retention "
                    f"spans the line (the reference − {TOLERANCE:.0%}); {n} queries cannot "
                    "tell, measure on more.")
    return {"model": spec.name, "dataset": report["dataset"], "native_dim": native,
            "queries": n, "settled": not open_rows,
            "native_ndcg@10": next(r["ndcg@10"] for r in report["results"]
                                   if r["dim"] == native),
            "curve": rows, "matryoshka_like": matryoshka_like, "verdict": verdict,
            "reference_source": "nomic-embed-text-v1.5 model card (MTEB average by "
                                "dimension, 1/1.5 to 1/12 of native); rows below 1/12 are "
                                "extrapolated and not judged (ok = null); see "
                                "docs/evaluation.md"}
