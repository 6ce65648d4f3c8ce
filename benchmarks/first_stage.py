"""Which graph index for the funnel's first stage: the experiment behind the local store's
choice (docs/benchmarks.md, "Choosing the first stage").

    python benchmarks/first_stage.py --n 1000000 --output benchmarks/results/first-stage-1m.json

On the generated MRL-like vectors: the recall@10 an exact prefix scan reaches once its
top m are reranked by the full vector (the ceiling of any index on that prefix), then
faiss HNSW on the prefix — float32, 8-bit and float16 codes, M = 16 and 32 — and binary
HNSW on sign bits, each at m candidates and a walk of ef, reranked the same way. One
thread per single query, as a search runs; two for the builds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from data import exact_truth, generate, recall
from mrlkit import vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--codes", default="sq8,flat,fp16")
    ap.add_argument("--output", default="benchmarks/results/first-stage.json")
    args = ap.parse_args()
    import faiss

    x, q = generate(args.n, args.dim, args.queries)
    truth = exact_truth(x, q)
    rows: list[dict] = []

    def rerank(cands: list[np.ndarray]) -> float:
        found = []
        for i, c in enumerate(cands):
            c = c[c >= 0]
            found.append(c[np.argsort(-(x[c] @ q[i]))[:10]])
        return round(recall(found, truth), 4)

    def walk(index, queries: np.ndarray, m: int, ef: int) -> tuple[float, float]:
        index.hnsw.efSearch = ef
        lat, cands = [], []
        for i in range(len(queries)):
            t0 = time.perf_counter()
            cands.append(index.search(queries[i:i + 1], m)[1][0])
            lat.append((time.perf_counter() - t0) * 1000)
        return round(float(np.median(lat)), 3), rerank(cands)

    for d in map(int, args.dims.split(",")):
        xd, qd = vectors.truncate(x, d), vectors.truncate(q, d)
        top = np.concatenate([vectors.top_k(qd[s:s + 50] @ xd.T, 400)[0]
                              for s in range(0, len(q), 50)])
        ceiling = {m: rerank(list(top[:, :m])) for m in (50, 100, 200, 400)}
        rows.append({"index": f"exact {d}-d prefix (ceiling)", "recall_by_m": ceiling})
        print(rows[-1], flush=True)
        for code in args.codes.split(","):
            for M in (16, 32):
                faiss.omp_set_num_threads(2)
                t0 = time.perf_counter()
                if code == "flat":
                    index = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
                else:
                    kind = (faiss.ScalarQuantizer.QT_8bit if code == "sq8"
                            else faiss.ScalarQuantizer.QT_fp16)
                    index = faiss.IndexHNSWSQ(d, kind, M, faiss.METRIC_INNER_PRODUCT)
                    index.train(xd[:100_000])
                index.hnsw.efConstruction = 40
                index.add(xd)
                build = round(time.perf_counter() - t0, 1)
                faiss.omp_set_num_threads(1)
                size = round(faiss.serialize_index(index).nbytes / 2**20)
                for m, ef in ((50, 50), (50, 150), (100, 100), (100, 200), (200, 200)):
                    p50, rec = walk(index, qd, m, ef)
                    rows.append({"index": f"HNSW {code} {d}-d M={M}", "m": m, "ef": ef,
                                 "build_s": build, "mb": size, "p50_ms": p50,
                                 "recall@10": rec})
                    print(rows[-1], flush=True)
    for bits in (256, 768):
        xb = np.packbits(x[:, :bits] > 0, axis=1)
        qb = np.packbits(q[:, :bits] > 0, axis=1)
        faiss.omp_set_num_threads(2)
        t0 = time.perf_counter()
        index = faiss.IndexBinaryHNSW(bits, 32)
        index.hnsw.efConstruction = 40
        index.add(xb)
        build = round(time.perf_counter() - t0, 1)
        faiss.omp_set_num_threads(1)
        for m in (200, 500):
            p50, rec = walk(index, qb, m, m)
            rows.append({"index": f"binary HNSW {bits} sign bits M=32", "m": m, "ef": m,
                         "build_s": build, "p50_ms": p50, "recall@10": rec})
            print(rows[-1], flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "dim": args.dim, "queries": len(q),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
