"""Search benchmark: mrlkit funnels against exact scans and faiss, side by side in one run.

    python benchmarks/search.py --n 200000 --dim 768 --queries 100 --json out.json

Vectors come from a seeded generator that behaves like MRL embeddings (see `generate`),
plus, when ../shared/datasets/scifact is present, real all-MiniLM-L6-v2 vectors of the
SciFact corpus and queries (embedded once, then read from mrlkit's embedding cache).

For every method: recall@10 against the exact float32 full-dimension ground truth, p50 and
p95 single-query latency, batched QPS, memory and build time. Figures are ratios measured
in one run on one machine; compare them, not their absolute values across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mrlkit import Adaptive, Funnel, vectors  # noqa: E402
from mrlkit.registry import register  # noqa: E402
from mrlkit.stores.local import LocalStore  # noqa: E402

K = 10
ROOT = Path(__file__).resolve().parents[1]


def generate(n: int, dim: int, n_queries: int, seed: int = 0):
    """Clustered vectors whose variance decays along the dimensions, like MRL embeddings.

    * ``n // 100`` cluster centres drawn from N(0, diag(s²)) with ``s_j = (1 + j/16)^-0.5``:
      the leading dimensions carry most of the spread, as Matryoshka training arranges;
    * each document = a centre + noise of the same shape at 0.7× scale;
    * each query = a random document's centre + fresh noise (a near, not identical, point).
    Rows are L2-normalised. Isotropic Gaussian data would be useless here: with no
    structure, no index (and no prefix) can find neighbours.
    """
    rng = np.random.default_rng(seed)
    scale = ((1.0 + np.arange(dim) / 16.0) ** -0.5).astype(np.float32)
    n_centres = max(10, n // 100)
    centres = rng.standard_normal((n_centres, dim), dtype=np.float32) * scale
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x[start:start + m] = (centres[rng.integers(0, n_centres, m)]
                              + 0.7 * rng.standard_normal((m, dim), dtype=np.float32) * scale)
    q = centres[rng.integers(0, n_centres, n_queries)] + \
        0.7 * rng.standard_normal((n_queries, dim), dtype=np.float32) * scale
    return vectors.normalize(x), vectors.normalize(q)


def scifact_vectors():
    """Real MiniLM vectors of SciFact (corpus and test queries), or None when absent."""
    folder = ROOT.parent / "shared" / "datasets" / "scifact"
    if not folder.is_dir():
        return None
    from mrlkit.cache import cached_embed

    docs = [json.loads(line) for line in open(folder / "corpus.jsonl")]
    queries = [json.loads(line) for line in open(folder / "queries.jsonl")]
    x = cached_embed("all-MiniLM-L6-v2", [(d["title"] + " " + d["text"]).strip()
                                          for d in docs], kind="document")
    q = cached_embed("all-MiniLM-L6-v2", [d["text"] for d in queries], kind="query")
    return x, q


def exact_truth(x: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    out = []
    for start in range(0, len(q), 16):
        out.append(vectors.top_k(q[start:start + 16] @ x.T, k)[0])
    return np.concatenate(out)


def recall(found: list[np.ndarray] | np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(map(int, f[:K])) & set(map(int, t))) / K
                          for f, t in zip(found, truth)]))


def timed(single, batched, q: np.ndarray):
    """Per-query latencies (ms) of ``single`` and the QPS of ``batched`` over ``q``."""
    single(q[:1])  # warm-up: caches, lazy views
    lat = []
    found = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        found.append(single(q[i:i + 1])[0])
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    batched(q)
    qps = len(q) / (time.perf_counter() - t0)
    return found, float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), qps


def run_dataset(label: str, x: np.ndarray, q: np.ndarray, *, mrl: bool, hnsw: bool,
                funnels: list[str], prefixes: list[int]) -> dict:
    n, dim = x.shape
    print(f"\n== {label}: n={n:,} dim={dim} queries={len(q)}", flush=True)
    truth = exact_truth(x, q)
    methods = []

    def add(name, found, p50, p95, qps, memory_bytes, build_s, **extra):
        row = {"name": name, "recall@10": round(recall(found, truth), 4),
               "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "qps": round(qps, 1),
               "memory_mb": round(memory_bytes / 2**20, 1), "build_s": round(build_s, 2),
               **extra}
        methods.append(row)
        print(f"{name:<42} recall@10 {row['recall@10']:.3f}  p50 {row['p50_ms']:8.2f} ms  "
              f"p95 {row['p95_ms']:8.2f} ms  {row['qps']:9.1f} q/s  "
              f"{row['memory_mb']:8.1f} MB  build {row['build_s']:.1f} s", flush=True)

    # exact NumPy scans: full dimension, then each prefix (truncated + re-normalised)
    def scan(data, qq):
        return vectors.top_k(qq @ data.T, K)[0]

    found, p50, p95, qps = timed(lambda qq: scan(x, qq), lambda qq: exact_truth(x, qq), q)
    add(f"exact float32 numpy @{dim}", found, p50, p95, qps, x.nbytes, 0.0)
    for d in prefixes:
        if d >= dim:
            continue
        xd = vectors.truncate(x, d)
        qd = vectors.truncate(q, d)
        found, p50, p95, qps = timed(lambda qq: scan(xd, qq), lambda qq: exact_truth(xd, qq), qd)
        add(f"exact float32 numpy @{d} (prefix only)", found, p50, p95, qps, xd.nbytes, 0.0)
        del xd

    import faiss

    flat = faiss.IndexFlatIP(dim)
    flat.add(x)
    found, p50, p95, qps = timed(lambda qq: flat.search(qq, K)[1],
                                 lambda qq: flat.search(qq, K), q)
    add("faiss IndexFlatIP", found, p50, p95, qps, x.nbytes, 0.0)
    del flat

    if hnsw:
        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(x)
        build = time.perf_counter() - t0
        size = faiss.serialize_index(index).nbytes
        for ef in (32, 64, 128):
            index.hnsw.efSearch = ef
            found, p50, p95, qps = timed(lambda qq: index.search(qq, K)[1],
                                         lambda qq: index.search(qq, K), q)
            add(f"faiss HNSW M=32 efSearch={ef}", found, p50, p95, qps, size, build)
        del index

    # mrlkit: the same vectors in a local store; funnels over its views
    from mrlkit.funnel import ANN_THRESHOLD

    ingest = {}
    for storage in ("float32", "float16"):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            register({"name": f"bench-{dim}", "provider": "openai", "native_dim": dim,
                      "supports_mrl": True, "mrl_dims": "any"}, replace=True)
            store = LocalStore(tmp)
            store.create_set("b", f"bench-{dim}", storage=storage)
            t0 = time.perf_counter()
            step = 100_000
            for start in range(0, n, step):
                store.add("b", [str(i) for i in range(start, min(n, start + step))],
                          x[start:start + step])
            ingest[storage] = n / (time.perf_counter() - t0)
            print(f"ingest into local store ({storage}): {ingest[storage]:,.0f} vectors/s",
                  flush=True)
            # float16 storage halves the stored vectors; run the first two funnels on it
            for spec in (funnels if storage == "float32" else funnels[:2]):
                funnel = Funnel.parse(spec).check(dim, K)
                t0 = time.perf_counter()
                store.search("b", q[:1], k=K, funnel=funnel)  # builds views and indexes
                build = time.perf_counter() - t0
                first = funnel.stages[0]
                ann = first.precision == "float32" and n >= ANN_THRESHOLD
                views = store.info("b").as_dict()["views"]
                first_bytes = sum(v["bytes"] for v in views if v["dim"] == first.dim and (
                    v["kind"] == "IVF index" if ann else v["precision"] == first.precision))
                if first.dim == dim and not ann:
                    first_bytes = 0  # the stored vectors themselves
                stored_bytes = n * vectors.bytes_per_vector(dim, storage)
                for adaptive in ((None, Adaptive(0.25)) if len(funnel.stages) > 2 else (None,)):
                    def one(qq, f=funnel, a=adaptive):
                        res = store.search("b", qq, k=K, funnel=f, adaptive=a)
                        return [np.array([int(h.id) for h in hits]) for hits in res.hits]

                    found, p50, p95, qps = timed(one, one, q)
                    extra = {"storage": storage, "first_stage": "ann (IVF)" if ann else "exact scan",
                             "first_stage_mb": round(first_bytes / 2**20, 1)}
                    if adaptive is not None:
                        res = store.search("b", q, k=K, funnel=funnel, adaptive=adaptive)
                        extra["mean_stages"] = float(np.mean([len(d) for d in res.dims_used]))
                    # memory: the first stage's view or index plus the stored vectors
                    add(f"mrlkit funnel {spec}" + (" adaptive" if adaptive else "")
                        + (" [float16 store]" if storage == "float16" else ""), found, p50,
                        p95, qps, first_bytes + stored_bytes, build, **extra)
            store.close()
    return {"dataset": label, "n": n, "dim": dim, "queries": len(q),
            "ingest_vectors_per_s": {k: round(v) for k, v in ingest.items()},
            "methods": methods}


def run_pgvector(label: str, x: np.ndarray, q: np.ndarray, *, funnels: list[str],
                 url: str | None = None) -> dict:
    """The pgvector backend against a real PostgreSQL (an embedded one unless ``url``):
    binary-COPY ingest, exact SQL scan, pgvector's own HNSW on the full vector, and
    mrlkit funnels whose first stage is an HNSW expression index on a prefix."""
    from mrlkit.stores.pgvector import PgvectorStore, start_embedded, stop_embedded

    n, dim = x.shape
    print(f"\n== {label} on pgvector: n={n:,} dim={dim} queries={len(q)}", flush=True)
    truth = exact_truth(x, q)
    tmp = tempfile.mkdtemp(prefix="mrlb", dir="/tmp")
    own_server = url is None
    url = url or start_embedded(os.path.join(tmp, "pg"))
    register({"name": f"bench-{dim}", "provider": "openai", "native_dim": dim,
              "supports_mrl": True, "mrl_dims": "any"}, replace=True)
    store = PgvectorStore(url, exact_below=0)
    methods: list[dict] = []
    try:
        for name in [s.name for s in store.list_sets() if s.name.startswith("bench")]:
            store.drop_set(name)
        store.create_set("bench", f"bench-{dim}", index=False)
        t0 = time.perf_counter()
        for start in range(0, n, 10_000):
            store.add("bench", [str(i) for i in range(start, min(n, start + 10_000))],
                      x[start:start + 10_000])
        ingest = n / (time.perf_counter() - t0)
        print(f"ingest (binary COPY, no index): {ingest:,.0f} vectors/s", flush=True)
        # the same rows into a set that maintains an HNSW index on a 128-d prefix as rows land
        m = min(n, 20_000)
        store.create_set("bench-indexed", f"bench-{dim}", index=False)
        store.index("bench-indexed", Funnel.parse(f"{dim // 6}:float32:10,{dim}"))
        t0 = time.perf_counter()
        for start in range(0, m, 10_000):
            store.add("bench-indexed", [str(i) for i in range(start, min(m, start + 10_000))],
                      x[start:start + 10_000])
        ingest_indexed = m / (time.perf_counter() - t0)
        store.drop_set("bench-indexed")
        print(f"ingest (binary COPY into a set with an HNSW index, first {m:,} rows): "
              f"{ingest_indexed:,.0f} vectors/s", flush=True)
        table_mb = store.info("bench").stored_bytes / 2**20

        def add(name, store_, funnel, build_s, index_mb):
            def one(qq):
                res = store_.search("bench", qq, k=K, funnel=funnel)
                return [np.array([int(h.id) for h in hits]) for hits in res.hits]

            found, p50, p95, qps = timed(one, one, q)
            row = {"name": name, "recall@10": round(recall(found, truth), 4),
                   "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "qps": round(qps, 1),
                   "memory_mb": round(table_mb + index_mb, 1), "index_mb": round(index_mb, 1),
                   "build_s": round(build_s, 2)}
            methods.append(row)
            print(f"{name:<46} recall@10 {row['recall@10']:.3f}  p50 {p50:8.2f} ms  "
                  f"p95 {p95:8.2f} ms  index {index_mb:7.1f} MB  build {build_s:6.1f} s",
                  flush=True)

        exact_store = PgvectorStore(url, exact_below=10**12)
        add(f"pgvector exact scan @{dim} (SQL)", exact_store, Funnel.exact(dim), 0.0, 0.0)
        exact_store.close()

        def build(spec):
            before = {(v["dim"], v["precision"]) for v in store.info("bench").as_dict()["views"]}
            t0 = time.perf_counter()
            store.index("bench", Funnel.parse(spec))
            took = time.perf_counter() - t0
            first = Funnel.parse(spec).stages[0]
            size = [v["bytes"] for v in store.info("bench").as_dict()["views"]
                    if v["dim"] == first.dim and v["precision"] == first.precision]
            print(f"  HNSW index {first}: {took:.1f} s", flush=True)
            return (took if (first.dim, first.precision) not in before else 0.0), \
                size[0] / 2**20

        took, size = build(f"{dim}:float32")
        for ef in (40, 100):
            store.engine.ef_search = ef
            add(f"pgvector HNSW @{dim} ef_search={ef}", store, Funnel.exact(dim), took, size)
        store.engine.ef_search = 100
        for spec in funnels:
            took, size = build(spec)
            add(f"mrlkit funnel {spec} (one SQL statement)", store, Funnel.parse(spec),
                took, size)
    finally:
        store.close()
        if own_server:
            stop_embedded(os.path.join(tmp, "pg"))
    return {"dataset": label, "n": n, "dim": dim, "queries": len(q),
            "ingest_vectors_per_s": {"binary_copy": round(ingest),
                                     "binary_copy_into_hnsw_indexed_set": round(ingest_indexed)},
            "methods": methods}


def run_engine(backend: str, label: str, x: np.ndarray, q: np.ndarray, *,
               funnels: list[str]) -> dict:
    """Chroma or Qdrant (embedded: Chroma's persistent client, Qdrant's local mode):
    ingest through mrlkit, each engine's own default single-vector search on the full
    vector, and mrlkit funnels whose first stage the engine runs."""
    n, dim = x.shape
    print(f"\n== {label} on {backend}: n={n:,} dim={dim} queries={len(q)}", flush=True)
    truth = exact_truth(x, q)
    tmp = tempfile.mkdtemp(prefix=f"mrlb-{backend}-", dir=os.environ.get("BENCH_TMP"))
    register({"name": f"bench-{dim}", "provider": "openai", "native_dim": dim,
              "supports_mrl": True, "mrl_dims": "any"}, replace=True)
    if backend == "chroma":
        from mrlkit.stores.chroma import ChromaStore

        store = ChromaStore(f"chroma:{tmp}", exact_below=0)
    else:
        from mrlkit.stores.qdrant import QdrantStore

        store = QdrantStore(f"qdrant:{tmp}", exact_below=0)
    store.create_set("bench", f"bench-{dim}")
    t0 = time.perf_counter()
    step = 5_000
    for start in range(0, n, step):
        store.add("bench", [str(i) for i in range(start, min(n, start + step))],
                  x[start:start + step])
    ingest = n / (time.perf_counter() - t0)
    print(f"ingest through mrlkit: {ingest:,.0f} vectors/s", flush=True)
    methods: list[dict] = []

    def add(name, single):
        found, p50, p95, qps = timed(single, single, q)
        row = {"name": name, "recall@10": round(recall(found, truth), 4),
               "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "qps": round(qps, 1)}
        methods.append(row)
        print(f"{name:<52} recall@10 {row['recall@10']:.3f}  p50 {p50:8.2f} ms  "
              f"p95 {p95:8.2f} ms", flush=True)

    engine_ingest = None
    if backend == "chroma":
        # the engine alone: one collection of full vectors at Chroma's defaults (cosine)
        plain = store.engine._client.create_collection("bench-plain", embedding_function=None,
                                                configuration={"hnsw": {"space": "cosine"}})
        t0 = time.perf_counter()
        for start in range(0, n, step):
            plain.add(ids=[str(i) for i in range(start, min(n, start + step))],
                      embeddings=x[start:start + step])
        engine_ingest = n / (time.perf_counter() - t0)
        print(f"ingest into a plain Chroma collection: {engine_ingest:,.0f} vectors/s",
              flush=True)

        def engine(qq):
            res = plain.query(query_embeddings=qq, n_results=K, include=[])
            return [np.array([int(i) for i in ids_]) for ids_ in res["ids"]]

        add("Chroma default HNSW @full (its defaults)", engine)
    else:
        collection = store.record("bench").collection

        def engine(qq):
            return [np.array([int(p.payload["id"]) for p in store.engine._client.query_points(
                collection, query=v.tolist(), using="full", limit=K,
                with_payload=["id"]).points]) for v in qq]

        add("Qdrant query @full (local mode)", engine)
    for spec in funnels:
        funnel = Funnel.parse(spec)
        store.index("bench", funnel)

        def one(qq, f=funnel):
            res = store.search("bench", qq, k=K, funnel=f)
            return [np.array([int(h.id) for h in hits]) for hits in res.hits]

        add(f"mrlkit funnel {spec} ({backend} first stage + rerank)", one)
    store.close()
    return {"dataset": label, "n": n, "dim": dim, "queries": len(q), "backend": backend,
            "ingest_vectors_per_s": round(ingest),
            **({"engine_alone_ingest_vectors_per_s": round(engine_ingest)}
               if engine_ingest else {}),
            "methods": methods}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--json", default="benchmarks/out/search.json")
    ap.add_argument("--no-hnsw", action="store_true", help="skip the faiss HNSW build")
    ap.add_argument("--no-real", action="store_true", help="skip the SciFact vectors")
    ap.add_argument("--backend", default="local",
                    choices=["local", "pgvector", "chroma", "qdrant"])
    ap.add_argument("--store", default=None,
                    help="pgvector: an existing server's URL (default: an embedded one)")
    ap.add_argument("--plot", default=None, help="PNG of recall against latency")
    args = ap.parse_args()

    x, q = generate(args.n, args.dim, args.queries)
    d = args.dim
    # float32 first stages run on the store's IVF index once n >= 200,000 rows;
    # binary first stages are exact scans of the packed codes
    funnels = [f"{d // 6}:float32:{m},{d}" for m in (200, 500)] + \
        [f"{d // 12}:float32:500,{d}", f"{d // 3}:binary:1000,{d}",
         f"{d // 6}:float32:1000,{d // 3}:float32:100,{d}"]
    funnels = [f for f in funnels if int(f.split(":")[0]) >= 8]
    prefixes = [p for p in (64, 128, 256) if p < d]
    if args.backend in ("chroma", "qdrant"):
        report = {"n": args.n, "dim": d, "k": K, "backend": args.backend,
                  **run_engine(args.backend, "generated MRL-like", x, q,
                               funnels=[f"{d // 6}:float32:200,{d}", f"{d // 6}:float32:500,{d}"])}
        args.no_real = True
    elif args.backend == "pgvector":
        funnels = [f"{d // 6}:float32:200,{d}", f"{d // 6}:float32:500,{d}",
                   f"{d // 3}:binary:1000,{d}", f"{d // 6}:float16:200,{d}"]
        report = {"n": args.n, "dim": d, "k": K, "backend": args.backend,
                  **run_pgvector("generated MRL-like", x, q, funnels=funnels, url=args.store)}
        args.no_real = True
    else:
        report = {"n": args.n, "dim": d, "k": K, "backend": args.backend,
                  **run_dataset("generated MRL-like", x, q, mrl=True, hnsw=not args.no_hnsw,
                                funnels=funnels, prefixes=prefixes)}
    del x
    real = None if args.no_real else scifact_vectors()
    if real is not None:
        rx, rq = real
        report["scifact_minilm"] = run_dataset(
            "SciFact all-MiniLM-L6-v2", rx, rq[:args.queries], mrl=False, hnsw=True,
            funnels=["384:binary:200,384", "384:binary:500,384", "64:binary:1000,384"],
            prefixes=[64, 128, 256])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    plot = args.plot or str(out.with_suffix(".png"))
    plot_recall_latency(report, plot)
    print(f"wrote {plot}")


def plot_recall_latency(report: dict, path: str) -> None:
    """Recall@10 against p50 latency; points are numbered, names listed beside the plot
    (labels written next to close points would overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, side) = plt.subplots(1, 2, figsize=(13, 6), width_ratios=[3, 2])
    names = []
    for i, m in enumerate(report["methods"], 1):
        family = ("mrlkit" if m["name"].startswith("mrlkit") else
                  "faiss" if m["name"].startswith("faiss") else "numpy")
        colour = {"mrlkit": "tab:red", "faiss": "tab:blue", "numpy": "tab:gray"}[family]
        ax.scatter(m["p50_ms"], m["recall@10"], color=colour, s=40)
        ax.annotate(str(i), (m["p50_ms"], m["recall@10"]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points", color=colour)
        names.append((i, m["name"], colour))
    ax.set_xscale("log")
    ax.set_xlabel("single-query p50 latency (ms, log scale)")
    ax.set_ylabel("recall@10 vs exact float32")
    ax.set_title(f"Recall against latency — n={report['n']:,}, dim={report['dim']}\n"
                 "(red: mrlkit, blue: faiss, grey: numpy)", fontsize=10)
    ax.grid(True, alpha=0.3)
    side.axis("off")
    for row, (i, name, colour) in enumerate(names):
        side.text(0, 1 - row / max(len(names), 20), f"{i:>2}  {name}", color=colour,
                  fontsize=8, family="monospace", va="top", transform=side.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
