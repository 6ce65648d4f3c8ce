"""Is the benchmark data as hard as real vectors? The prefix-ceiling curve — recall@10 of
a d-dim prefix scan keeping m candidates reranked at full length, against exact search —
of real Matryoshka embeddings of real texts (benchmarks/data.py ``real_vectors``),
beside the calibrated generator (``calibrated``: real vectors plus noise shaped like
their own covariance) at each noise scale tried, and the old generator (``generate``,
kept as the labelled easy case). Writes JSON and a PNG.

    python benchmarks/calibrate.py --output benchmarks/results/calibrate.json \\
        --plot benchmarks/results/calibrate.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from data import calibrated, generate, real_vectors

from mrlkit import vectors

SETTINGS = [(64, 20), (64, 50), (64, 100), (64, 200), (128, 50), (128, 200)]
SIZES = (5_000, 25_000)
ALPHAS = (0.1, 0.2, 0.3, 0.5)


def curve(x: np.ndarray, q: np.ndarray, k: int = 10) -> dict[str, float]:
    """Ceiling recall@k of each (prefix dim, keep) against exact full-vector search."""
    full = q @ x.T
    truth = np.argsort(-full, axis=1)[:, :k]
    out = {}
    for dim, keep in SETTINGS:
        s = vectors.truncate(q, dim) @ vectors.truncate(x, dim).T
        cand = np.argpartition(-s, keep, axis=1)[:, :keep]
        rescored = np.take_along_axis(full, cand, axis=1)
        top = np.take_along_axis(cand, np.argsort(-rescored, axis=1)[:, :k], axis=1)
        out[f"{dim}:{keep}"] = round(float(np.mean(
            [len(set(a) & set(b)) / k for a, b in zip(top, truth)])), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    real = real_vectors()
    if real is None:
        sys.exit("needs ../shared/datasets (scifact, stsb, banking77) and "
                 "../shared/models/minilm-scifact-mrl")
    x, q, _ = real
    t0 = time.time()
    report: dict[str, object] = {"docs": len(x), "queries": len(q), "settings": SETTINGS,
                                 "real": {}, "easy": {}, "calibrated": {}}
    for n in SIZES:
        rows = np.unique(np.linspace(0, len(x) - 1, n).astype(np.int64))
        report["real"][n] = curve(x[rows], q)  # type: ignore[index]
        ex, eq = generate(n, x.shape[1], len(q), seed=1)
        report["easy"][n] = curve(ex, eq)  # type: ignore[index]
        for a in ALPHAS:
            gx, gq = calibrated(n, len(q), alpha=a, seed=1, real=(x, q))
            report["calibrated"].setdefault(str(a), {})[n] = curve(gx, gq)  # type: ignore
        print(f"n={n:,}: real {report['real'][n]}", flush=True)  # type: ignore[index]
    gaps = {a: max(abs(c[n][s] - report["real"][n][s])  # type: ignore[index]
                   for n in SIZES for s in c[n])
            for a, c in report["calibrated"].items()}  # type: ignore[union-attr]
    best = min(gaps, key=gaps.get)  # type: ignore[arg-type]
    report["gap_by_alpha"] = gaps
    report["alpha"] = float(best)
    report["easy_gap"] = max(abs(report["easy"][n][s] - report["real"][n][s])  # type: ignore
                             for n in SIZES for s in report["real"][n])  # type: ignore
    report["seconds"] = round(time.time() - t0, 1)
    print(f"calibrated generator: noise scale {best}, widest gap to the real curve "
          f"{gaps[best]:.3f} (target ≤ 0.03); the easy generator's: "
          f"{report['easy_gap']:.3f}")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.output}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(SIZES), figsize=(11, 4), sharey=True)
        labels = [f"{d}-d keep {m}" for d, m in SETTINGS]
        for ax, n in zip(axes, SIZES):
            for name, c, style in (("real MRL vectors", report["real"][n], "o-k"),
                                   (f"calibrated (noise {best})",
                                    report["calibrated"][best][n], "s--C0"),
                                   ("easy generator (old)", report["easy"][n], "^:C3")):
                ax.plot(labels, [c[f"{d}:{m}"] for d, m in SETTINGS], style, label=name)
            ax.set_title(f"N = {n:,}")
            ax.tick_params(axis="x", rotation=45)
            ax.set_ylim(0, 1.02)
        axes[0].set_ylabel("ceiling recall@10 (prefix scan, full rerank)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
