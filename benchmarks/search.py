"""Search benchmark: mrlkit's default search against its peers, side by side in one run.

    python benchmarks/search.py --n 1000000 --queries 1000 \\
        --output benchmarks/results/search-1m.json

Every method runs in a process of its own, so that one's memory does not count in
another's: a build process (faiss's HNSW over the full vectors; mrlkit's local store and
its graph index), then a fresh query process per method that opens the index or store,
answers the first query (timed from the process's start, imports included), then every
query one at a time (p50/p95), then all of them in one batch (QPS), and reads its
resident memory from /proc/self/smaps_rollup: anonymous memory plus the file-backed
pages it touched (the page cache it did not touch does not count).

Vectors (``--data``): ``calibrated`` (the default) — real Matryoshka embeddings of real
texts plus noise of their own covariance (data.calibrated, as hard as the real ones:
benchmarks/calibrate.py), at any ``--n``, 384-d (the shared MRL model's dimension);
``generated`` — the old seeded generator at ``--dim``, a labelled easy case. Then, always
when ../shared is present, the real vectors themselves (data.real_vectors). Queries to
tune on are held out from the queries measured.

Peers, as their users build them, each swept cheap to dear until it reaches recall 0.99
(benchmarks/peers.py): faiss HNSW M=32 at efConstruction 200 (and 40, labelled), faiss
HNSW with 8-bit codes + full rerank, the binary scan + int8 rescore recipe of
sentence-transformers, Qdrant Edge with binary quantization + rescore + oversampling.
mrlkit as a user gets it: a set with the defaults, its automatic tune, a search with no
funnel (and with recall=0.99), then tuned on held-out queries. Recall@10 is against the
exact float32 scan at the full dimension. Read the ratios, not the absolute times: the
machine is shared and noisy.

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

from report import plot_recall_latency, report_targets  # noqa: E402
from data import (K, add_and_save, calibrated, exact_truth, generate, real_vectors, recall,  # noqa: E402
                  split_queries)

HNSW_EFS = (16, 32, 64, 128, 256, 512)


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
    return add_and_save(index, x, task["index"], t0)


def build_store(task: dict) -> dict:
    """A set as a user makes one: created with the defaults, the vectors added, then the
    automatic tune `mrlkit add` (and EmbeddingSet.add) runs when a set has passed the
    rows where a first stage pays: 200 of its documents as probes, self excluded."""
    from mrlkit import Funnel
    from mrlkit.registry import register
    from mrlkit.stores import open_store

    x = np.load(task["x"], mmap_mode="r")
    register(task["model"], replace=True)
    store = open_store(task["store"])
    store.create_set("b", task["model"]["name"], storage=task["storage"],
                     allow_non_mrl=True)  # measured, not served
    t0 = time.perf_counter()
    for start in range(0, len(x), 100_000):
        store.add("b", [str(i) for i in range(start, min(len(x), start + 100_000))],
                  np.asarray(x[start:start + 100_000]))
    ingest = len(x) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    tuned = store.tune_if_needed("b")
    tune_s = time.perf_counter() - t0
    builds = {}
    for spec in task.get("funnels", ()):
        t0 = time.perf_counter()
        store.index("b", Funnel.parse(spec))
        builds[spec] = round(time.perf_counter() - t0, 2)
    info = store.info("b").as_dict()
    return {"ingest_vectors_per_s": round(ingest), "tune_s": round(tune_s, 1),
            "build_s": builds, "default_funnel": info["default_funnel"],
            "tuned": _tuned(tuned),
            "files_mb": {f"{v['kind']} d{v['dim']} {v['precision']}": round(v["bytes"] / 2**20, 1)
                         for v in info["views"]},
            "stored_mb": round(info["stored_bytes"] / 2**20, 1)}


def tune_store(task: dict) -> dict:
    """`mrlkit sets tune NAME --queries FILE`: the set tuned on held-out real queries."""
    from mrlkit.registry import register
    from mrlkit.stores import open_store

    register(task["model"], replace=True)
    store = open_store(task["store"])
    t0 = time.perf_counter()
    tuned = store.tune("b", queries=np.load(task["q_tune"]))
    return {"tune_s": round(time.perf_counter() - t0, 1), "tuned": _tuned(tuned)}


def _tuned(tuned) -> dict | None:
    if tuned is None:
        return None
    return {"funnel": tuned.funnel, "recall": tuned.recall, "ci": [tuned.low, tuned.high],
            "probes": tuned.probes, "source": tuned.source, "p50_ms": tuned.p50_ms,
            "tried": [(t["funnel"], t["recall"], t["p50_ms"]) for t in tuned.tried]}


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
    elif task["kind"] in ("sq8", "binary", "qdrant-bq"):
        from peers import searcher

        single, batch = searcher(task)
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
        reads, stage_ms, ran = [], [], []

        def run(v):
            res = store.search("b", v, k=K, funnel=funnel, adaptive=adaptive,
                               recall=task.get("recall"))
            ran.append(f"{res.funnel} ({res.path})")
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
        out["ran"] = ran[0]
    return out


def bench_model(dim: int) -> dict:
    """The model a benchmark set is registered with: Matryoshka, any prefix."""
    return {"name": f"bench-{dim}", "provider": "openai", "native_dim": dim,
            "supports_mrl": True, "mrl_dims": "any"}


def spawn(task: dict) -> dict:
    """Run one worker in a fresh process; its result is the last line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    got = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)],
                         capture_output=True, text=True, env=env)
    if got.returncode != 0:
        raise SystemExit(f"worker {task['kind']} failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


# --- one dataset --------------------------------------------------------------------
TARGET = 0.95   # recall@10 a default search keeps (the set's target)
HIGH = 0.99     # and with recall=0.99; every sweep goes on until it reaches this


def run_dataset(label: str, x: np.ndarray, q: np.ndarray, q_tune: np.ndarray, *,
                model: dict, numpy_queries: int, work: Path, efs: tuple[int, ...] = HNSW_EFS,
                storage: str = "float16", funnels: tuple[str, ...] = (),
                qdrant_bq: bool = True, qdrant: list[str] = (),
                qdrant_alone: bool = False) -> dict:
    """Every peer swept cheap to dear until it reaches recall@10 ≥ 0.99, and mrlkit as a
    user gets it: a set with the defaults, its automatic tune, searches with no funnel
    (and with recall=0.99), then tuned on ``q_tune`` (held-out queries) and again."""
    n, dim = x.shape
    print(f"\n== {label}: n={n:,} dim={dim} queries={len(q)} (+{len(q_tune)} to tune on)",
          flush=True)
    work.mkdir(parents=True, exist_ok=True)
    paths = {name: str(work / f"{name}.npy") for name in ("x", "q", "truth", "q_small")}
    np.save(paths["x"], x)
    np.save(paths["q"], q)
    np.save(paths["q_small"], q[:numpy_queries])
    np.save(paths["truth"], exact_truth(x, q))
    np.save(work / "q_tune.npy", q_tune)
    methods: list[dict] = []

    def add(name: str, got: dict, **extra) -> dict:
        row = {"name": name, **got, **extra}
        methods.append(row)
        print(f"{name:<60} recall@10 {row['recall@10']:.3f}  p50 {row['p50_ms']:7.3f} ms  "
              f"p95 {row['p95_ms']:7.3f} ms  {row['qps']:8.0f} q/s  RSS {row['rss_mb']:7.1f} MB"
              f"  build {row.get('build_s', 0) or 0:6.1f} s", flush=True)
        return row

    def sweep(family: str, settings, task, name, built: dict) -> None:
        """Cheap to dear, until the setting reaching HIGH."""
        for setting in settings:
            row = add(name(setting), spawn({**paths, **task(setting)}), family=family, **built)
            if row["recall@10"] >= HIGH:
                break

    add(f"exact float32 numpy @{dim}",
        spawn({"kind": "numpy", "x": paths["x"], "q": paths["q_small"],
               "truth": paths["truth"]}), build_s=0.0, family="exact")
    index = str(work / "peer.index")
    for efc in (200, 40):
        built = spawn({"kind": "build-hnsw", "x": paths["x"], "index": index, "efc": efc})
        sweep("faiss HNSW" if efc == 200 else "faiss HNSW efC40", efs,
              lambda ef: {"kind": "hnsw", "index": index, "ef": ef},
              lambda ef, c=efc: f"faiss HNSW M=32 efC={c} efSearch={ef}"
              + (" (faiss's default build)" if c == 40 else ""), built)
        os.unlink(index)
    from peers import BINARY_MULTIPLIERS, QDRANT_BQ_SETTINGS, SQ8_SETTINGS

    built = spawn({"kind": "build-sq8", "x": paths["x"], "index": index})
    sweep("faiss HNSW SQ8", SQ8_SETTINGS,
          lambda st: {"kind": "sq8", "index": index, "setting": st},
          lambda st: f"faiss HNSW SQ8 M=32 efC=200 efSearch={st[0]} + rerank ×{st[1]}", built)
    os.unlink(index)
    codes = str(work / "int8.npy")
    built = spawn({"kind": "build-binary", "x": paths["x"], "index": index, "int8": codes})
    sweep("binary + rescore", BINARY_MULTIPLIERS,
          lambda m: {"kind": "binary", "index": index, "int8": codes, "setting": m},
          lambda m: f"binary scan (faiss IndexBinaryFlat) + int8 rescore ×{m}", built)
    os.unlink(index)
    os.unlink(codes)
    if qdrant_bq:
        shard = str(work / "qdrant-bq")
        built = spawn({"kind": "build-qdrant-bq", "x": paths["x"], "store": shard})
        sweep("Qdrant Edge BQ", QDRANT_BQ_SETTINGS,
              lambda st: {"kind": "qdrant-bq", "store": shard, "setting": st},
              lambda st: f"Qdrant Edge BQ hnsw_ef={st[0]} oversampling={st[1]:g} + rescore",
              built)
        shutil.rmtree(shard)
    store = str(work / "store")
    built = spawn({"kind": "build-store", "x": paths["x"], "store": store,
                   "storage": storage, "model": model, "funnels": list(funnels)})
    print(f"local store ({storage}): {built}", flush=True)
    extra = {"build_s": built["tune_s"], "storage": storage, "ingest_vectors_per_s":
             built["ingest_vectors_per_s"]}
    for how, tuned in (("tuned on 200 of its documents", built["tuned"]), ("queries", None)):
        if how == "queries":
            got = spawn({"kind": "tune-store", "store": store, "model": model,
                         "q_tune": str(work / "q_tune.npy")})
            how, tuned = f"tuned on {len(q_tune)} held-out queries", got["tuned"]
            extra = {**extra, "build_s": got["tune_s"]}
        elif tuned is None:
            how = f"untuned: {built['default_funnel']}"
        for want in (None, HIGH):
            add(f"mrlkit default{'' if want is None else ' recall=0.99'} ({how})",
                spawn({"kind": "mrlkit", "store": store, "funnel": None, "model": model,
                       "recall": want, **paths}),
                family="mrlkit default" + ("" if want is None else " 0.99"),
                tuned=tuned, **extra)
    for spec in funnels:
        add(f"mrlkit funnel {spec}", spawn({"kind": "mrlkit", "store": store, "funnel": spec,
                                            "model": model, **paths}),
            family="mrlkit funnel", build_s=built["build_s"][spec], storage=storage)
    shutil.rmtree(store)
    for spec in qdrant:  # Qdrant Edge through mrlkit: a set per first stage
        store = str(work / "qdrant")
        built = spawn({"kind": "build-qdrant", "x": paths["x"], "store": store,
                       "storage": storage, "model": model, "funnel": spec})
        add(f"mrlkit funnel {spec} [qdrant edge]",
            spawn({"kind": "qdrant", "store": store, "funnel": spec, "model": model, **paths}),
            build_s=built["build_s"], ingest_vectors_per_s=built["ingest_vectors_per_s"],
            disk_mb=built["disk_mb"], family="mrlkit on qdrant")
        shutil.rmtree(store)
    if qdrant_alone:
        store = str(work / "qdrant-plain")
        built = spawn({"kind": "build-qdrant-plain", "x": paths["x"], "store": store})
        sweep("Qdrant Edge", (64, 128, 256),
              lambda ef: {"kind": "qdrant-plain", "store": store, "ef": ef},
              lambda ef: f"Qdrant Edge alone: HNSW @{dim} hnsw_ef={ef}", built)
        shutil.rmtree(store)
    report = {"dataset": label, "n": n, "dim": dim, "queries": len(q),
              "tune_queries": len(q_tune), "methods": methods}
    report["targets"] = {str(t): report_targets(methods, t, TARGET) for t in (TARGET, HIGH)}
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--output", "--json", dest="output",
                    default="benchmarks/results/search.json")
    ap.add_argument("--plot", default=None, help="PNG of recall against latency "
                    "(default: beside the JSON)")
    ap.add_argument("--data", default="calibrated", choices=["calibrated", "generated"],
                    help="calibrated: real MRL embeddings plus noise of their own shape, as "
                    "hard as real ones (data.calibrated); generated: the old, easy generator")
    ap.add_argument("--no-real", action="store_true",
                    help="skip the real vectors (all the shared data, embedded once)")
    ap.add_argument("--no-generated", action="store_true", help="only the real vectors")
    ap.add_argument("--no-qdrant", action="store_true", help="skip the Qdrant Edge peer")
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
        from peers import build_binary, build_qdrant_bq, build_sq8

        run = {"build-hnsw": build_hnsw, "build-store": build_store, "tune-store": tune_store,
               "build-qdrant": build_qdrant, "build-qdrant-plain": build_qdrant_plain,
               "build-sq8": build_sq8, "build-binary": build_binary,
               "build-qdrant-bq": build_qdrant_bq}.get(task["kind"], query)
        print(json.dumps(run(task)))
        return
    d = args.dim
    if args.backend == "qdrant":  # beside faiss HNSW and the local store, in one run
        x, q = generate(args.n, d, args.queries)
        work = Path(tempfile.mkdtemp(prefix="mrlb-", dir=os.environ.get("BENCH_TMP")))
        report = {"n": args.n, "dim": d, "k": K, "backend": "qdrant",
                  **run_dataset("generated MRL-like", x, q[:args.queries - 200],
                                q[args.queries - 200:], model=bench_model(d),
                                funnels=(f"{d // 6}:float32:200,{d}",),
                                numpy_queries=min(100, args.queries), work=work,
                                efs=(64, 128, 256),
                                qdrant=[f"{d // 6}:float32:200,{d}",
                                        f"{d // 6}:binary:1000,{d}"],
                                qdrant_alone=args.n <= 200_000)}
    elif args.backend != "local":
        from engines import run_backend

        report = run_backend(args, generate(args.n, d, args.queries))
    elif args.backend == "local":
        report = {"n": args.n, "dim": d, "k": K, "backend": "local", "data": args.data}
        work = Path(tempfile.mkdtemp(prefix="mrlb-", dir=os.environ.get("BENCH_TMP")))
        real = None if args.no_real and args.data != "calibrated" else real_vectors()
        if args.data == "calibrated" and real is None:
            raise SystemExit("--data calibrated needs ../shared (its datasets and the MRL "
                             "model minilm-scifact-mrl); --data generated runs without")
        if not args.no_generated:
            if args.data == "calibrated":
                x, q, q_tune = calibrated(args.n, args.queries, real=real[:2], held_out=200)
                label = "calibrated to real MRL embeddings"
            else:  # the old generator: a labelled easy case
                x, q = generate(args.n, d, args.queries + 200)
                q, q_tune = q[:args.queries], q[args.queries:]
                label = "generated MRL-like (the easy generator)"
            report.update(run_dataset(label, x, q, q_tune, model=bench_model(x.shape[1]),
                                      numpy_queries=min(100, args.queries), work=work / "main",
                                      qdrant_bq=not args.no_qdrant))
            del x
        if real is not None and not args.no_real:  # always in the run when present
            rx, rq, _ = real
            q_tune, q_measure = split_queries(rq)
            report["real"] = run_dataset(
                "real MRL embeddings (minilm-scifact-mrl over SciFact, STS-B, Banking77)",
                rx, q_measure, q_tune, model=bench_model(rx.shape[1]),
                numpy_queries=len(q_measure), work=work / "real",
                qdrant_bq=not args.no_qdrant)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    if report.get("methods"):
        plot = args.plot or str(out.with_suffix(".png"))
        plot_recall_latency(report, plot)
        print(f"wrote {plot}")


if __name__ == "__main__":
    main()
