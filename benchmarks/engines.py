"""The other backends in benchmarks/search.py (``--backend pgvector|chroma|qdrant``):
each engine's own search against mrlkit funnels whose first stage it runs."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from data import K, exact_truth, recall, timed
from mrlkit import Funnel
from mrlkit.registry import register


def run_pgvector(label: str, x: np.ndarray, q: np.ndarray, *, funnels: list[str],
                 url: str | None = None) -> dict:
    """The pgvector backend against a real PostgreSQL (an embedded one unless ``url``):
    binary-COPY ingest, exact SQL scan, pgvector's own HNSW on the full vector, and
    mrlkit funnels whose first stage is an HNSW expression index on a prefix."""
    from mrlkit.stores import start_embedded, stop_embedded
    from mrlkit.stores import open_store

    n, dim = x.shape
    print(f"\n== {label} on pgvector: n={n:,} dim={dim} queries={len(q)}", flush=True)
    truth = exact_truth(x, q)
    tmp = tempfile.mkdtemp(prefix="mrlb", dir="/tmp")
    own_server = url is None
    url = url or start_embedded(os.path.join(tmp, "pg"))
    register({"name": f"bench-{dim}", "provider": "openai", "native_dim": dim,
              "supports_mrl": True, "mrl_dims": "any"}, replace=True)
    store = open_store(url, native_from=0)
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

        exact_store = open_store(url, native_from=10**12)
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
        # pgvector's own HNSW as its users query it (ORDER BY distance LIMIT k): a first
        # stage that keeps k on the index, its exact scores ranking them (a one-stage
        # funnel is exact search in mrlkit, never an index walk)
        own = Funnel.parse(f"{dim}:float32:{K},{dim}")
        for ef in (40, 100):
            store.engine.ef_search = ef
            add(f"pgvector HNSW @{dim} ef_search={ef}", store, own, took, size)
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
    """Chroma (its persistent client): ingest through mrlkit, Chroma's own search on
    the full vector (ids only, and with the documents a search returns), and mrlkit
    funnels whose first stage Chroma runs."""
    n, dim = x.shape
    print(f"\n== {label} on {backend}: n={n:,} dim={dim} queries={len(q)}", flush=True)
    truth = exact_truth(x, q)
    tmp = tempfile.mkdtemp(prefix=f"mrlb-{backend}-", dir=os.environ.get("BENCH_TMP"))
    register({"name": f"bench-{dim}", "provider": "openai", "native_dim": dim,
              "supports_mrl": True, "mrl_dims": "any"}, replace=True)
    from mrlkit.stores import open_store

    store = open_store(f"chroma:{tmp}", native_from=0)
    store.create_set("bench", f"bench-{dim}", index=False)
    store.index("bench", Funnel.parse(funnels[0]))
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
    if backend == "chroma":  # the only engine left here (qdrant runs in search.py)
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

        def engine(qq, include=()):
            res = plain.query(query_embeddings=qq, n_results=K, include=list(include))
            return [np.array([int(i) for i in ids_]) for ids_ in res["ids"]]

        add("Chroma alone: HNSW @full, ids only", engine)
        add("Chroma alone: HNSW @full, with documents and metadata (its default)",
            lambda qq: engine(qq, ("documents", "metadatas", "distances")))
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


def run_backend(args, data: tuple[np.ndarray, np.ndarray]) -> dict:
    """``search.py --backend NAME``: the generated vectors on pgvector, Chroma or Qdrant."""
    x, q = data
    d = args.dim
    if args.backend == "pgvector":
        funnels = [f"{d // 6}:float32:200,{d}", f"{d // 6}:float32:500,{d}",
                   f"{d // 3}:binary:1000,{d}", f"{d // 6}:float16:200,{d}"]
        got = run_pgvector("generated MRL-like", x, q, funnels=funnels, url=args.store)
    else:
        got = run_engine(args.backend, "generated MRL-like", x, q,
                         funnels=[f"{d // 6}:float32:{keep},{d}" for keep in (50, 100, 200)])
    return {"n": args.n, "dim": d, "k": K, "backend": args.backend, **got}


# --- Qdrant Edge workers for search.py (one process each, like the local store's) ---
def _folder_mb(path: str) -> float:
    """Disk blocks in use (a WAL's preallocated, unwritten segments do not count)."""
    return round(sum(os.stat(os.path.join(d, f)).st_blocks * 512
                     for d, _, fs in os.walk(path) for f in fs) / 2**20, 1)


def build_qdrant(task: dict) -> dict:
    """A set on Qdrant Edge through mrlkit: ingest (durable upserts), then Qdrant's
    optimiser (segments merged, HNSW on the first-stage vector) via ``sets index``."""
    from mrlkit.stores import open_store

    x = np.load(task["x"], mmap_mode="r")
    register(task["model"], replace=True)
    store = open_store(f"qdrant:{task['store']}", native_from=0)
    funnel = Funnel.parse(task["funnel"])
    store.create_set("b", task["model"]["name"], storage=task["storage"], index=False,
                     allow_non_mrl=True)  # measured, not served
    store.index("b", funnel)  # the set is empty: only its collection's layout
    t0 = time.perf_counter()
    for start in range(0, len(x), 10_000):
        store.add("b", [str(i) for i in range(start, min(len(x), start + 10_000))],
                  np.asarray(x[start:start + 10_000]))
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.index("b", funnel)
    optimize_s = time.perf_counter() - t0
    store.close()
    return {"ingest_vectors_per_s": round(len(x) / ingest_s), "optimize_s": round(optimize_s, 1),
            "build_s": round(ingest_s + optimize_s, 1), "disk_mb": _folder_mb(task["store"])}


def build_qdrant_plain(task: dict) -> dict:
    """Qdrant alone, as a user would run it: one Edge shard of full vectors with HNSW at
    Qdrant's defaults (m 16, ef_construct 100)."""
    import uuid

    import qdrant_edge as qe

    x = np.load(task["x"], mmap_mode="r")
    shard = qe.EdgeShard.create(task["store"], qe.EdgeConfig(vectors=qe.EdgeVectorParams(
        size=x.shape[1], distance=qe.Distance.Cosine)))
    t0 = time.perf_counter()
    for start in range(0, len(x), 1_000):
        shard.update(qe.UpdateOperation.upsert_points([
            qe.Point(str(uuid.UUID(int=i)), x[i], {"id": i})
            for i in range(start, min(len(x), start + 1_000))]))
    ingest_s = time.perf_counter() - t0
    shard.optimize()
    shard.flush()
    build = time.perf_counter() - t0
    shard.close()
    return {"ingest_vectors_per_s": round(len(x) / ingest_s), "build_s": round(build, 1),
            "disk_mb": _folder_mb(task["store"])}


def shard_searcher(store: str, params):
    """(single, batch) over a plain Qdrant Edge shard of full vectors (payload ``id``:
    the row), searched with ``params``."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.load(store)

    def ask(v):
        return qe.QueryRequest(limit=K, query=qe.Query.Nearest(v.tolist()),
                               params=params, with_payload=True)

    def single(v):
        return np.array([p.payload["id"] for p in shard.query(ask(v[0]))])

    def batch(v):
        got = shard.query_batch(qe.QueryBatchRequest([ask(row) for row in v]))
        return [np.array([p.payload["id"] for p in r]) for r in got]

    return single, batch


def qdrant_searcher(task: dict):
    """(single, batch) for a query process: mrlkit's funnel on Edge, or the plain shard."""
    if task["kind"] == "qdrant-plain":
        import qdrant_edge as qe

        return shard_searcher(task["store"], qe.SearchParams(hnsw_ef=task["ef"]))
    from mrlkit.stores import open_store

    register(task["model"], replace=True)
    store = open_store(f"qdrant:{task['store']}", native_from=0)
    funnel = Funnel.parse(task["funnel"])

    def run(v):
        res = store.search("b", v, k=K, funnel=funnel)
        return [np.array([int(h.id) for h in hits]) for hits in res.hits]

    return (lambda v: run(v)[0]), run
