"""Search benchmark: mrlkit funnels against faiss HNSW, side by side in one run.

    python benchmarks/search.py --n 1000000 --dim 768 --queries 1000 \\
        --output benchmarks/results/search-1m.json

Every method runs in a process of its own, so that one's memory does not count in
another's: a build process (faiss's HNSW over the full vectors; mrlkit's local store and
its graph index), then a fresh query process per method that opens the index or store,
answers the first query (timed from the process's start, imports included), then every
query one at a time (p50/p95), then all of them in one batch (QPS), and reads its
resident memory from /proc/self/smaps_rollup: anonymous memory plus the file-backed
pages it touched (the page cache it did not touch does not count).

Vectors come from a seeded generator that behaves like MRL embeddings (data.generate);
then, when ../shared is present, real SciFact vectors from all-MiniLM-L6-v2 (not
Matryoshka-trained) and from its Matryoshka fine-tune minilm-scifact-mrl. Recall@10 is
against the exact float32 scan at the full dimension. Read the ratios, not the absolute
times: the machine is shared and noisy.

``--backend pgvector|chroma|qdrant`` runs benchmarks/engines.py instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()  # a query process's first query is timed from here

import numpy as np  # noqa: E402

from data import K, exact_truth, generate, recall, scifact_vectors  # noqa: E402

HNSW_EFS = (16, 32, 64, 128, 256)


# --- workers: one process each ------------------------------------------------------
def memory() -> dict[str, float]:
    """Resident memory of this process (MB): all of it, and its anonymous part."""
    got = {}
    for line in open("/proc/self/smaps_rollup"):
        key, _, rest = line.partition(":")
        if key in ("Rss", "Anonymous"):
            got[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": round(got["Rss"], 1), "anon_mb": round(got["Anonymous"], 1)}


def build_hnsw(task: dict) -> dict:
    import faiss

    x = np.load(task["x"], mmap_mode="r")
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    # 200 as its users build it (hnswlib's default; Qdrant 100, pgvector 64); 40 is
    # faiss's own default, kept as a labelled row
    index.hnsw.efConstruction = task.get("efc", 200)
    for start in range(0, len(x), 100_000):
        index.add(np.ascontiguousarray(x[start:start + 100_000]))
    build = time.perf_counter() - t0
    faiss.write_index(index, task["index"])
    return {"build_s": round(build, 2)}


def build_store(task: dict) -> dict:
    from mrlkit import Funnel
    from mrlkit.registry import register
    from mrlkit.stores import open_store

    x = np.load(task["x"], mmap_mode="r")
    register(task["model"], replace=True)
    store = open_store(task["store"])
    # measured, not served: prefixes of a model not Matryoshka-trained are allowed here
    store.create_set("b", task["model"]["name"], storage=task["storage"], allow_non_mrl=True)
    t0 = time.perf_counter()
    for start in range(0, len(x), 100_000):
        store.add("b", [str(i) for i in range(start, min(len(x), start + 100_000))],
                  np.asarray(x[start:start + 100_000]))
    ingest = len(x) / (time.perf_counter() - t0)
    builds, times = {}, {}
    default = store.info("b").default_funnel
    for spec in [default, *task["funnels"]]:
        first = Funnel.parse(spec).stages[0]   # what gets built: funnels sharing it share it
        key = (first.dim, first.precision)
        if key not in times:
            t0 = time.perf_counter()
            store.index("b", Funnel.parse(spec))
            times[key] = round(time.perf_counter() - t0, 2)
        builds[spec] = times[key]
    info = store.info("b").as_dict()
    return {"ingest_vectors_per_s": round(ingest), "build_s": builds, "default_funnel": default,
            "files_mb": {f"{v['kind']} d{v['dim']} {v['precision']}": round(v["bytes"] / 2**20, 1)
                         for v in info["views"]},
            "stored_mb": round(info["stored_bytes"] / 2**20, 1)}


def query(task: dict) -> dict:
    """Open the index or the store, then answer every query; timings and memory."""
    q = np.load(task["q"])
    if task["kind"] == "hnsw":
        import faiss

        index = faiss.read_index(task["index"])
        index.hnsw.efSearch = task["ef"]

        def single(v):
            return index.search(v, K)[1][0]

        def batch(v):
            return index.search(v, K)[1]
    elif task["kind"].startswith("qdrant"):
        from engines import qdrant_searcher

        single, batch = qdrant_searcher(task)
    elif task["kind"] == "numpy":
        x = np.load(task["x"])

        def single(v):
            return np.argsort(-(x @ v[0]))[:K]

        def batch(v):
            return exact_truth(x, v)
    else:
        from mrlkit import Adaptive, Funnel
        from mrlkit.registry import register
        from mrlkit.stores.local import LocalStore

        register(task["model"], replace=True)
        store = LocalStore(task["store"], ef_search=task.get("ef"))
        funnel = Funnel.parse(task["funnel"]) if task.get("funnel") else None
        adaptive = Adaptive(task["adaptive"]) if task.get("adaptive") else None
        reads, stage_ms = [], []

        def run(v):
            res = store.search("b", v, k=K, funnel=funnel, adaptive=adaptive)
            reads.append(sum(t.reads for t in res.timings))
            stage_ms.append(sum(t.ms for t in res.timings))
            return [np.array([int(h.id) for h in hits]) for hits in res.hits]

        def single(v):
            return run(v)[0]

        batch = run
    first = single(q[:1])
    first_s = time.perf_counter() - START
    lat, found = [], []
    for i in range(len(q)):
        t0 = time.perf_counter()
        found.append(np.asarray(single(q[i:i + 1])))
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    batched = batch(q)
    qps = len(q) / (time.perf_counter() - t0)
    truth = np.load(task["truth"])[:len(q)]
    same = all(list(a[:K]) == list(b[:K]) for a, b in zip(found, batched))
    out = {"recall@10": round(recall(found, truth), 4),
           "p50_ms": round(float(np.percentile(lat, 50)), 3),
           "p95_ms": round(float(np.percentile(lat, 95)), 3), "qps": round(qps, 1),
           "first_query_s": round(first_s, 3), "batch_equals_single": same,
           **memory()}
    del first
    if task["kind"] == "mrlkit":
        out["reads_per_query"] = round(float(np.mean(reads[1:len(q) + 1])), 1)
        # what a search costs outside its stages (index walk, rerank): validation, the
        # set's record, documents from SQLite, result objects
        out["overhead_p50_ms"] = round(float(np.percentile(
            np.array(lat) - np.array(stage_ms[1:len(q) + 1]), 50)), 3)
    return out


def spawn(task: dict) -> dict:
    """Run one worker in a fresh process; its result is the last line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    got = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)],
                         capture_output=True, text=True, env=env)
    if got.returncode != 0:
        raise SystemExit(f"worker {task['kind']} failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


# --- one dataset --------------------------------------------------------------------
def run_dataset(label: str, x: np.ndarray, q: np.ndarray, *, model: dict,
                funnels: list[str], adaptive: list[str], storages: tuple[str, ...],
                numpy_queries: int, work: Path, efs: tuple[int, ...] = HNSW_EFS,
                qdrant: list[str] = (), qdrant_alone: bool = False) -> dict:
    n, dim = x.shape
    print(f"\n== {label}: n={n:,} dim={dim} queries={len(q)}", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    paths = {name: str(work / f"{name}.npy") for name in ("x", "q", "truth", "q_small")}
    np.save(paths["x"], x)
    np.save(paths["q"], q)
    np.save(paths["q_small"], q[:numpy_queries])
    np.save(paths["truth"], exact_truth(x, q))
    methods: list[dict] = []

    def add(name: str, got: dict, **extra) -> None:
        row = {"name": name, **got, **extra}
        methods.append(row)
        print(f"{name:<52} recall@10 {row['recall@10']:.3f}  p50 {row['p50_ms']:7.3f} ms  "
              f"p95 {row['p95_ms']:7.3f} ms  {row['qps']:8.0f} q/s  RSS {row['rss_mb']:7.1f} MB"
              f"  build {row.get('build_s', 0):6.1f} s  first {row['first_query_s']:.2f} s",
              flush=True)

    add(f"exact float32 numpy @{dim}",
        spawn({"kind": "numpy", "x": paths["x"], "q": paths["q_small"],
               "truth": paths["truth"]}), build_s=0.0)
    index = str(work / "hnsw.faiss")
    for efc in (200, 40):
        built = spawn({"kind": "build-hnsw", "x": paths["x"], "index": index, "efc": efc})
        for ef in efs:
            add(f"faiss HNSW M=32 efC={efc} efSearch={ef}"
                + (" (faiss's default build)" if efc == 40 else ""),
                spawn({"kind": "hnsw", "index": index, "ef": ef, **paths}), **built)
        os.unlink(index)
    ingest = {}
    for storage in storages:
        store = str(work / f"store-{storage}")
        built = spawn({"kind": "build-store", "x": paths["x"], "store": store,
                       "storage": storage, "model": model, "funnels": funnels})
        ingest[storage] = built["ingest_vectors_per_s"]
        print(f"local store ({storage}): ingest {built['ingest_vectors_per_s']:,} vectors/s, "
              f"files {built['files_mb']}", flush=True)
        suffix = "" if storage == "float32" else f" [{storage} store]"
        default = built["default_funnel"]
        add(f"mrlkit default funnel ({default})" + suffix,
            spawn({"kind": "mrlkit", "store": store, "funnel": None, "model": model,
                   **paths}), build_s=built["build_s"].get(default, 0.0), storage=storage)
        for spec in funnels:
            for ef in (None, 300) if spec == funnels[0] else (None,):
                add(f"mrlkit funnel {spec}" + (f" ef={ef}" if ef else "") + suffix,
                    spawn({"kind": "mrlkit", "store": store, "funnel": spec, "ef": ef,
                           "model": model, **paths}),
                    build_s=built["build_s"][spec], storage=storage)
        if storage == storages[0]:
            for spec in adaptive:
                for margin in (None, 0.05, 0.25):
                    add(f"mrlkit funnel {spec}" + (f" adaptive {margin}" if margin else ""),
                        spawn({"kind": "mrlkit", "store": store, "funnel": spec,
                               "adaptive": margin, "model": model, **paths}),
                        build_s=built["build_s"].get(spec, 0.0), storage=storage)
        shutil.rmtree(store)
    for spec in qdrant:  # Qdrant Edge through mrlkit: a set per first stage
        store = str(work / "qdrant")
        built = spawn({"kind": "build-qdrant", "x": paths["x"], "store": store,
                       "storage": storages[0], "model": model, "funnel": spec})
        ingest[f"qdrant {spec}"] = built["ingest_vectors_per_s"]
        print(f"qdrant edge ({spec}): {built}", flush=True)
        add(f"mrlkit funnel {spec} [qdrant edge]",
            spawn({"kind": "qdrant", "store": store, "funnel": spec, "model": model, **paths}),
            build_s=built["build_s"], ingest_vectors_per_s=built["ingest_vectors_per_s"],
            disk_mb=built["disk_mb"])
        shutil.rmtree(store)
    if qdrant_alone:
        store = str(work / "qdrant-plain")
        built = spawn({"kind": "build-qdrant-plain", "x": paths["x"], "store": store})
        ingest["qdrant alone"] = built["ingest_vectors_per_s"]
        for ef in (64, 128, 256):
            add(f"Qdrant Edge alone: HNSW @{dim} hnsw_ef={ef}",
                spawn({"kind": "qdrant-plain", "store": store, "ef": ef, **paths}), **built)
        shutil.rmtree(store)
    return {"dataset": label, "n": n, "dim": dim, "queries": len(q),
            "ingest_vectors_per_s": ingest, "methods": methods}


def targets(report: dict) -> dict:
    """The issue's targets, checked against the first HNSW efSearch reaching 0.98."""
    ms = report["methods"]
    ref = next((m for m in ms if m["name"].startswith("faiss HNSW")
                and m["recall@10"] >= 0.98), None)
    ours = [m for m in ms if m["name"].startswith("mrlkit") and m["recall@10"] >= 0.98]
    if ref is None or not ours:
        return {"reference": ref and ref["name"], "best": None}
    best = min(ours, key=lambda m: m["p50_ms"])
    return {"reference": ref["name"], "best": best["name"],
            "p50_ratio": round(best["p50_ms"] / ref["p50_ms"], 2),
            "qps_ratio": round(best["qps"] / ref["qps"], 2),
            "memory_ratio": round(best["rss_mb"] / ref["rss_mb"], 3),
            "build_ratio": round((best.get("build_s") or 0) / ref["build_s"], 3),
            "first_query_s": best["first_query_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--output", "--json", dest="output",
                    default="benchmarks/results/search.json")
    ap.add_argument("--plot", default=None, help="PNG of recall against latency "
                    "(default: beside the JSON)")
    ap.add_argument("--no-real", action="store_true", help="skip the SciFact vectors")
    ap.add_argument("--no-generated", action="store_true", help="only the SciFact vectors")
    ap.add_argument("--backend", default="local",
                    choices=["local", "pgvector", "chroma", "qdrant"])
    ap.add_argument("--store", default=None,
                    help="pgvector: an existing server's URL (default: an embedded one)")
    ap.add_argument("--no-hnsw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        task = json.loads(args.worker)
        from engines import build_qdrant, build_qdrant_plain

        run = {"build-hnsw": build_hnsw, "build-store": build_store,
               "build-qdrant": build_qdrant, "build-qdrant-plain": build_qdrant_plain
               }.get(task["kind"], query)
        print(json.dumps(run(task)))
        return
    d = args.dim
    if args.backend == "qdrant":  # beside faiss HNSW and the local store, in one run
        x, q = generate(args.n, d, args.queries)
        work = Path(tempfile.mkdtemp(prefix="mrlb-", dir=os.environ.get("BENCH_TMP")))
        report = {"n": args.n, "dim": d, "k": K, "backend": "qdrant",
                  **run_dataset("generated MRL-like", x, q, model={
                      "name": f"bench-{d}", "provider": "openai", "native_dim": d,
                      "supports_mrl": True, "mrl_dims": "any"},
                      funnels=[f"{d // 6}:float32:200,{d}"], adaptive=[],
                      storages=("float16",), numpy_queries=min(100, args.queries),
                      work=work, efs=(64, 128, 256),
                      qdrant=[f"{d // 6}:float32:200,{d}", f"{d // 6}:binary:1000,{d}"],
                      qdrant_alone=args.n <= 200_000)}
    elif args.backend != "local":
        from engines import run_backend

        report = run_backend(args, generate(args.n, d, args.queries))
    elif args.backend == "local":
        report = {"n": args.n, "dim": d, "k": K, "backend": "local", "methods": []}
        work = Path(tempfile.mkdtemp(prefix="mrlb-", dir=os.environ.get("BENCH_TMP")))
        model = {"name": f"bench-{d}", "provider": "openai", "native_dim": d,
                 "supports_mrl": True, "mrl_dims": "any"}
        if not args.no_generated:
            x, q = generate(args.n, d, args.queries)
            first = max(64, d // 12)
            report.update(run_dataset(
                "generated MRL-like", x, q, model=model,
                funnels=[f"{first}:float32:50,{d}", f"{first}:float32:100,{d}",
                         f"{2 * first}:float32:50,{d}", f"{d // 3}:binary:500,{d}"],
                adaptive=[f"{first}:float32:50,{d}"], storages=("float32", "float16"),
                numpy_queries=min(100, args.queries), work=work / "generated"))
            report["targets"] = targets(report)
            del x
        for name in () if args.no_real else ("all-MiniLM-L6-v2", "minilm-scifact-mrl"):
            real = scifact_vectors(name)
            if real is None:
                continue
            rx, rq = real
            mrl = name != "all-MiniLM-L6-v2"
            spec = {"name": f"bench-{name}", "provider": "openai", "native_dim": 384,
                    "supports_mrl": mrl, **({"mrl_dims": "any"} if mrl else {})}
            sub = run_dataset(f"SciFact {name}", rx, rq[:args.queries], model=spec,
                              funnels=["64:float32:50,384", "128:float32:50,384",
                                       "384:binary:200,384"],
                              adaptive=["64:float32:50,384"] if mrl else [],
                              storages=("float32",), numpy_queries=len(rq[:args.queries]),
                              work=work / name)
            sub["targets"] = targets(sub)
            report[f"scifact_{name}"] = sub
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    if report.get("methods"):
        plot = args.plot or str(out.with_suffix(".png"))
        plot_recall_latency(report, plot)
        print(f"wrote {plot}")


def plot_recall_latency(report: dict, path: str) -> None:
    """Recall@10 against p50 latency; points are numbered, names and resident memory
    listed beside the plot (labels next to close points would overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, side) = plt.subplots(1, 2, figsize=(14, 6.5), width_ratios=[3, 2.4])
    names = []
    for i, m in enumerate(report["methods"], 1):
        family = ("qdrant" if "qdrant" in m["name"].lower() else
                  "mrlkit" if m["name"].startswith("mrlkit") else
                  "faiss" if m["name"].startswith("faiss") else "numpy")
        colour = {"mrlkit": "tab:red", "faiss": "tab:blue", "numpy": "tab:gray",
                  "qdrant": "tab:purple"}[family]
        ax.scatter(m["p50_ms"], m["recall@10"], color=colour, s=40)
        ax.annotate(str(i), (m["p50_ms"], m["recall@10"]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points", color=colour)
        names.append((i, m["name"] + (f"  [{m['rss_mb']:,.0f} MB]" if "rss_mb" in m else ""),
                      colour))
    ax.set_xscale("log")
    ax.set_xlabel("single-query p50 latency (ms, log scale)")
    ax.set_ylabel("recall@10 vs exact float32")
    ax.set_title(f"Recall against latency — n={report['n']:,}, dim={report['dim']}\n"
                 "(red: mrlkit, blue: faiss, grey: numpy; [resident memory])", fontsize=10)
    ax.grid(True, alpha=0.3)
    side.axis("off")
    for row, (i, name, colour) in enumerate(names):
        side.text(0, 1 - row / max(len(names), 20), f"{i:>2}  {name}", color=colour,
                  fontsize=7.5, family="monospace", va="top", transform=side.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
