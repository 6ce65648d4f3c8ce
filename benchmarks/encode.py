"""Encoders side by side on the same SciFact texts, in one run (ratios count):

    python benchmarks/encode.py --output benchmarks/results/encode.json

For torch (sentence-transformers), onnx and onnx-int8 (ONNX Runtime, exported from the
model's own weights): documents per second at batch 32 and 128 on ``--docs`` SciFact
documents (each backend warmed first), the mean and minimum cosine of each document's
vector to torch's, and nDCG@10 on SciFact's test queries over the whole corpus (through
`evaluate_retrieval`, the same code as `mrlkit eval retrieval`; embeddings are cached per
backend, so a second run re-times but does not re-embed the corpus).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from data import ROOT  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--ray-docs", type=int, default=1000,
                    help="documents for the Ray-against-single-process run (0: skip)")
    ap.add_argument("--output", default="benchmarks/results/encode.json")
    args = ap.parse_args()
    from mrlkit.evaluation.retrieval import evaluate_retrieval
    from mrlkit.providers import configure, get_provider

    folder = ROOT.parent / "shared" / "datasets" / "scifact"
    if not folder.is_dir():
        raise SystemExit(f"needs {folder}")
    with open(folder / "corpus.jsonl") as fh:
        rows = [json.loads(line) for _, line in zip(range(args.docs), fh)]
    texts = [f"{r.get('title', '')} {r['text']}".strip() for r in rows]
    report: dict = {"model": args.model, "docs_timed": len(texts), "backends": {}}
    reference = None
    for backend in BACKENDS:
        entry: dict = {}
        for batch in (32, 128):
            provider = get_provider(args.model, backend=backend, batch_size=batch,
                                    show_progress=False)
            provider.embed(texts[:batch])  # load, export on first use, warm up
            t0 = time.perf_counter()
            x = provider.embed(texts)
            entry[f"docs_per_s_batch{batch}"] = round(len(texts) / (time.perf_counter() - t0),
                                                      1)
        if reference is None:
            reference = x
        cos = (x * reference).sum(axis=1)
        entry["cosine_to_torch_mean"] = round(float(cos.mean()), 5)
        entry["cosine_to_torch_min"] = round(float(cos.min()), 5)
        configure(backend=backend)
        got = evaluate_retrieval(str(folder), args.model, dims=[384], precisions=["float32"])
        entry["ndcg@10"] = round(got["results"][0]["ndcg@10"], 4)
        report["backends"][backend] = entry
        print(backend, entry, flush=True)
    report["ray"] = ray_overhead(texts[:args.ray_docs]) if args.ray_docs else None
    base = report["backends"]["torch"]
    for backend in BACKENDS[1:]:
        e = report["backends"][backend]
        e["speedup_batch32"] = round(e["docs_per_s_batch32"] / base["docs_per_s_batch32"], 2)
        e["speedup_batch128"] = round(e["docs_per_s_batch128"] / base["docs_per_s_batch128"],
                                      2)
        e["ndcg_change"] = round(e["ndcg@10"] - base["ndcg@10"], 4)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot(report, str(out.with_suffix(".png")))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def ray_overhead(texts: list[str]) -> dict:
    """The same documents through `mrlkit add` (one process) and `mrlkit add --ray local`
    (a Ray cluster of this machine, 2 actors), each into a fresh store, timed whole."""
    import subprocess
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="mrlray-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                              for i, t in enumerate(texts)))
    got = {}
    for label, extra in (("single_process", []), ("ray_local_2_actors", ["--ray", "local"])):
        store = str(work / label)
        subprocess.run([sys.executable, "-m", "mrlkit.cli", "sets", "create", "s", "--model",
                        "all-MiniLM-L6-v2", "--store", store], check=True,
                       capture_output=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mrlkit.cli", "add", "s", str(corpus),
                        "--store", store, "-q", *extra], check=True, capture_output=True)
        took = time.perf_counter() - t0
        got[label] = {"seconds": round(took, 1), "docs_per_s": round(len(texts) / took, 1)}
        print(label, got[label], flush=True)
    got["overhead_s"] = round(got["ray_local_2_actors"]["seconds"]
                              - got["single_process"]["seconds"], 1)
    return got


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    b = report["backends"]
    xs = np.arange(len(BACKENDS))
    ax.bar(xs - 0.2, [b[k]["docs_per_s_batch32"] for k in BACKENDS], 0.4, label="batch 32")
    ax.bar(xs + 0.2, [b[k]["docs_per_s_batch128"] for k in BACKENDS], 0.4, label="batch 128")
    ax.set_xticks(xs, [f"{k}\nnDCG@10 {b[k]['ndcg@10']:.4f}" for k in BACKENDS])
    ax.set_ylabel("SciFact documents per second")
    ax.set_title(f"{report['model']} on 2 CPU cores", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
