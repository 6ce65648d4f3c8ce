"""A live set: searches while documents stream in and out, mrlkit's local store beside
Qdrant Edge on the same vectors, one run.

    python benchmarks/live.py --n 200000 --minutes 5          # ~15 min with the build
    python benchmarks/live.py --n 1000000 --minutes 5         # the 1M run (~1 h)
    python benchmarks/live.py --n 20000 --minutes 0.5 --data generated   # a smoke run

Each engine runs in a process of its own (resident memory from /proc/self/smaps_rollup),
through its public API, in phases:

1. build: the set made as a user makes it (mrlkit: created with the defaults, rows
   added, the automatic tune; Qdrant: one Edge shard, HNSW at its defaults, optimised);
2. static: single-query searches on one thread (p50, p99, max; recall@10 against an
   exact scan of the live rows);
3. after a write: one upsert (or one delete), then one search, timed, 30 times each,
   interleaved with a control (a search after an fsync of an unrelated file: what
   waiting on the disk costs any search);
4. threads: searches per second on one thread and on two;
5. live: a writer upserting ``--upserts`` a second (a tenth of them edits of existing
   documents), a deleter deleting ``--deletes`` a second, and a searcher, for
   ``--minutes``; every search timed against the clock; then every acknowledged write
   checked (upserted ids present with their latest vector's nearest neighbour being
   themselves, deleted ids absent) and recall@10 measured again on the live rows.

Writes JSON and a PNG (search latency over the live phase) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import K, calibrated, generate  # noqa: E402

BATCH_EVERY = 0.1  # seconds between a writer's batches


def memory_mb() -> float:
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Rss:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms) if ms else np.zeros(1)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3), "searches": len(ms)}


# --- the engines, behind one small surface ------------------------------------------
class Mrlkit:
    label = "mrlkit local (default search)"

    def __init__(self, folder: str, dim: int) -> None:
        from mrlkit.registry import register
        from mrlkit.stores import open_store

        register({"name": f"bench-{dim}", "provider": "openai", "native_dim": dim,
                  "supports_mrl": True, "mrl_dims": "any"}, replace=True)
        self.store = open_store(folder)
        self.dim = dim

    def build(self, x: np.ndarray) -> dict:
        self.store.create_set("b", f"bench-{self.dim}", storage="float16")
        for start in range(0, len(x), 100_000):
            self.store.add("b", [str(i) for i in range(start, min(len(x), start + 100_000))],
                           np.asarray(x[start:start + 100_000]))
        tuned = self.store.tune_if_needed("b")
        self.search(x[:1])  # the first stage's index, built on first use
        info = self.store.info("b")
        return {"default_funnel": info.default_funnel,
                "tuned_recall": None if tuned is None else tuned.recall}

    def search(self, v: np.ndarray) -> np.ndarray:
        res = self.store.search("b", v, k=K)
        return np.array([int(h.id) for h in res.hits[0]])

    def upsert(self, ids: list[int], v: np.ndarray) -> None:
        self.store.add("b", [str(i) for i in ids], v, upsert=True)

    def delete(self, ids: list[int]) -> None:
        self.store.delete("b", [str(i) for i in ids])

    def present(self, ids: list[int]) -> set[int]:
        return {int(d.id) for d in self.store.get("b", [str(i) for i in ids]) if d is not None}

    def settle(self) -> None:
        self.store.engine.settle()


class Qdrant:
    label = "Qdrant Edge (HNSW m 16, ef_construct 100)"

    def __init__(self, folder: str, dim: int, ef: int) -> None:
        import qdrant_edge as qe

        self.qe, self.folder, self.dim, self.ef = qe, folder, dim, ef
        self.shard = qe.EdgeShard.create(folder, qe.EdgeConfig(vectors=qe.EdgeVectorParams(
            size=dim, distance=qe.Distance.Cosine)))
        self.params = qe.SearchParams(hnsw_ef=ef)

    def _points(self, ids: list[int], v: np.ndarray) -> list:
        import uuid

        return [self.qe.Point(str(uuid.UUID(int=i)), row.tolist(), {"id": i})
                for i, row in zip(ids, v)]

    def build(self, x: np.ndarray) -> dict:
        for start in range(0, len(x), 1_000):
            stop = min(len(x), start + 1_000)
            self.shard.update(self.qe.UpdateOperation.upsert_points(
                self._points(list(range(start, stop)), np.asarray(x[start:stop]))))
        self.shard.optimize()
        self.shard.flush()
        return {"hnsw_ef": self.ef}

    def search(self, v: np.ndarray) -> np.ndarray:
        got = self.shard.query(self.qe.QueryRequest(
            limit=K, query=self.qe.Query.Nearest(v[0].tolist()), params=self.params,
            with_payload=True))
        return np.array([p.payload["id"] for p in got])

    def upsert(self, ids: list[int], v: np.ndarray) -> None:
        self.shard.update(self.qe.UpdateOperation.upsert_points(self._points(ids, v)))

    def delete(self, ids: list[int]) -> None:
        import uuid

        self.shard.update(self.qe.UpdateOperation.delete_points(
            [str(uuid.UUID(int=i)) for i in ids]))

    def present(self, ids: list[int]) -> set[int]:
        import uuid

        got = self.shard.retrieve([str(uuid.UUID(int=i)) for i in ids],
                                  with_payload=True, with_vector=False)
        return {p.payload["id"] for p in got}

    def settle(self) -> None:
        self.shard.flush()


# --- one engine's run, in a process of its own ---------------------------------------
class Truth:
    """Which row of the pool each live id holds: exact answers on the live rows."""

    def __init__(self, pool: np.ndarray, n: int) -> None:
        self.pool = pool
        self.row_of = {i: i for i in range(n)}
        self.next_id = n
        self.next_row = n

    def recall(self, engine, q: np.ndarray) -> float:
        ids = np.fromiter(self.row_of.keys(), np.int64, len(self.row_of))
        rows = np.fromiter(self.row_of.values(), np.int64, len(self.row_of))
        x = np.asarray(self.pool[np.sort(rows)], np.float32)
        order = np.argsort(rows)
        ids = ids[order]
        hits = 0
        for start in range(0, len(q), 50):
            s = q[start:start + 50] @ x.T
            top = np.argpartition(-s, K, axis=1)[:, :K]
            for j, t in enumerate(top):
                hits += len(set(ids[t].tolist()) & set(engine.search(
                    q[start + j:start + j + 1]).tolist()))
        return round(hits / (len(q) * K), 4)


def run_engine(task: dict) -> dict:
    pool = np.load(task["pool"], mmap_mode="r")
    q = np.load(task["queries"])
    n, minutes = task["n"], task["minutes"]
    rng = np.random.default_rng(7)
    if task["engine"] == "mrlkit":
        engine: Mrlkit | Qdrant = Mrlkit(task["folder"], pool.shape[1])
    else:
        engine = Qdrant(task["folder"], pool.shape[1], task["qdrant_ef"])
    out: dict = {"engine": engine.label}
    t0 = time.perf_counter()
    out["build"] = engine.build(pool[:n])
    engine.settle()
    out["build"]["build_s"] = round(time.perf_counter() - t0, 1)
    truth = Truth(pool, n)
    lock = threading.Lock()

    def timed_search(i: int) -> float:
        t = time.perf_counter()
        engine.search(q[i % len(q):i % len(q) + 1])
        return (time.perf_counter() - t) * 1000

    # --- static ---
    for i in range(50):
        timed_search(i)  # warm
    static = [timed_search(i) for i in range(task["static_searches"])]
    out["static"] = {**percentiles(static), "recall@10": truth.recall(engine, q)}
    print(f"[{engine.label}] static {out['static']}", file=sys.stderr, flush=True)

    # --- the first search after one write ---
    def one_upsert() -> None:
        i, row = truth.next_id, truth.next_row
        engine.upsert([i], np.asarray(pool[row:row + 1]))
        truth.row_of[i] = row
        truth.next_id, truth.next_row = i + 1, row + 1

    def one_delete() -> None:
        i = int(rng.integers(0, truth.next_id))
        while i not in truth.row_of:
            i = int(rng.integers(0, truth.next_id))
        engine.delete([i])
        del truth.row_of[i]

    scratch = os.open(os.path.join(task["folder"], "scratch.bin"), os.O_WRONLY | os.O_CREAT)

    def unrelated_fsync() -> None:
        # the control: a 4 KB write and fsync of another file, the engine untouched; a
        # search after it pays what waiting on the disk costs any process (a core gone
        # idle, its caches cold), so the gap to it is what the engine's write costs
        os.write(scratch, b"\0" * 4096)
        os.fsync(scratch)

    after: dict = {}
    for name, write in (("upsert", one_upsert), ("delete", one_delete)):
        ms, control = [], []
        for j in range(30):  # interleaved, so that a drifting machine moves both alike
            unrelated_fsync()
            control.append(timed_search(j))
            write()
            ms.append(timed_search(j))
        after[name] = percentiles(ms)
        after[name]["control_p50_ms"] = percentiles(control)["p50_ms"]
        after[name]["over_control_ms"] = round(after[name]["p50_ms"] -
                                               after[name]["control_p50_ms"], 3)
    os.close(scratch)
    out["after_one_write"] = after
    engine.settle()
    print(f"[{engine.label}] after one write {after}", file=sys.stderr, flush=True)

    # --- threads ---
    def qps(threads: int, seconds: float) -> float:
        done = [0] * threads
        stop = time.perf_counter() + seconds

        def loop(t: int) -> None:
            i = t * 1000
            while time.perf_counter() < stop:
                engine.search(q[i % len(q):i % len(q) + 1])
                i += 1
                done[t] += 1
        workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(done) / seconds
    one, two = qps(1, task["qps_seconds"]), qps(2, task["qps_seconds"])
    out["threads"] = {"qps_1": round(one, 1), "qps_2": round(two, 1),
                      "ratio": round(two / one, 2)}
    print(f"[{engine.label}] threads {out['threads']}", file=sys.stderr, flush=True)

    # --- live ---
    seconds = minutes * 60
    start = time.perf_counter()
    end = start + seconds
    timeline: list[tuple[float, float]] = []
    errors: list[str] = []
    upserted: dict[int, int] = {}
    deleted: set[int] = set()
    write_s = {"upserts": 0, "deletes": 0}

    def paced(per_s: float, step) -> None:
        per_batch = max(1, round(per_s * BATCH_EVERY))
        tick = time.perf_counter()
        while time.perf_counter() < end:
            try:
                step(per_batch)
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                errors.append(f"{type(exc).__name__}: {exc}")
            tick += BATCH_EVERY
            time.sleep(max(0.0, tick - time.perf_counter()))

    def upserts(m: int) -> None:
        with lock:
            edits = [i for i in rng.choice(truth.next_id, m // 10 + 1).tolist()
                     if i in truth.row_of][:m // 10]
            new = list(range(truth.next_id, truth.next_id + m - len(edits)))
            ids = edits + new
            rows = list(range(truth.next_row, truth.next_row + len(ids)))
            truth.next_id += len(new)
            truth.next_row += len(ids)
            if truth.next_row > len(pool):
                raise RuntimeError("the pool of new vectors ran out")
            for i, r in zip(ids, rows):  # claimed before the write: never deleted
                truth.row_of[i] = upserted[i] = r
        engine.upsert(ids, np.asarray(pool[rows[0]:rows[-1] + 1]))
        with lock:
            write_s["upserts"] += len(ids)

    def deletes(m: int) -> None:
        with lock:
            live = [i for i in dict.fromkeys(rng.integers(0, truth.next_id, 3 * m).tolist())
                    if i in truth.row_of and i not in upserted][:m]
            for i in live:
                del truth.row_of[i]
                deleted.add(i)
        engine.delete(live)
        with lock:
            write_s["deletes"] += len(live)

    def searcher() -> None:
        i = 0
        while time.perf_counter() < end:
            t = time.perf_counter()
            try:
                engine.search(q[i % len(q):i % len(q) + 1])
            except Exception as exc:  # noqa: BLE001
                errors.append(f"search {type(exc).__name__}: {exc}")
            timeline.append((t - start, (time.perf_counter() - t) * 1000))
            i += 1

    rss_before = memory_mb()
    workers = [threading.Thread(target=paced, args=(task["upserts"], upserts)),
               threading.Thread(target=paced, args=(task["deletes"], deletes)),
               threading.Thread(target=searcher)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    lat = [ms for _, ms in timeline]
    # every acknowledged write, visible
    up_ids = sorted(upserted)
    present = set()
    for s in range(0, len(up_ids), 900):
        present |= engine.present(up_ids[s:s + 900])
    gone = sorted(deleted)
    still = set()
    for s in range(0, len(gone), 900):
        still |= engine.present(gone[s:s + 900])
    live_recall = truth.recall(engine, q)
    engine.settle()
    settled_recall = truth.recall(engine, q)
    per_second = []
    if timeline:  # the searches of each second of the run (timeline is in time order)
        at = np.floor([t for t, _ in timeline]).astype(int)
        ms_all = np.asarray(lat)
        for sec, got in zip(np.unique(at), np.split(ms_all, np.flatnonzero(np.diff(at)) + 1)):
            per_second.append([int(sec), round(float(np.percentile(got, 50)), 3),
                               round(float(np.percentile(got, 99)), 3),
                               round(float(got.max()), 3)])
    out["live"] = {
        **percentiles(lat), "seconds": round(elapsed, 1),
        "upserts_per_s": round(write_s["upserts"] / elapsed, 1),
        "deletes_per_s": round(write_s["deletes"] / elapsed, 1),
        "searches_per_s": round(len(lat) / elapsed, 1),
        "errors": len(errors), "first_errors": errors[:5],
        "upserts_missing": len(up_ids) - len(present), "deletes_still_present": len(still),
        "recall@10_after": live_recall, "recall@10_settled": settled_recall,
        "rows_live": len(truth.row_of), "rss_mb_before": rss_before,
        "rss_mb": memory_mb(), "per_second": per_second,
        "over_50ms": int(sum(ms > 50 for ms in lat))}
    print(f"[{engine.label}] live " + json.dumps({k: v for k, v in out["live"].items()
                                                  if k != "per_second"}),
          file=sys.stderr, flush=True)
    return out


def spawn(task: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    got = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)],
                         stdout=subprocess.PIPE, text=True, env=env)
    if got.returncode != 0:
        raise SystemExit(f"worker {task['engine']} failed ({got.returncode})")
    return json.loads(got.stdout.strip().splitlines()[-1])


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in results:
        ps = np.array(r["live"]["per_second"])
        if not len(ps):
            continue
        line, = ax.plot(ps[:, 0], ps[:, 2], label=f"{r['engine']}: p99 per second")
        ax.plot(ps[:, 0], ps[:, 3], ":", color=line.get_color(), alpha=0.6,
                label=f"{r['engine']}: max per second")
        ax.axhline(r["static"]["p99_ms"], color=line.get_color(), ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the live phase")
    ax.set_ylabel("search latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--upserts", type=float, default=500.0, help="per second")
    ap.add_argument("--deletes", type=float, default=50.0, help="per second")
    ap.add_argument("--data", choices=("calibrated", "generated"), default="calibrated")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--static-searches", type=int, default=2000)
    ap.add_argument("--qps-seconds", type=float, default=10.0)
    ap.add_argument("--qdrant-ef", type=int, default=64)
    ap.add_argument("--no-qdrant", action="store_true")
    ap.add_argument("--out", default=None, help="path stem (default benchmarks/results/"
                    "live-<n>)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_engine(json.loads(args.worker))))
        return
    extra = int(args.upserts * args.minutes * 60 * 1.1) + 1000
    total = args.n + extra
    got = calibrated(total, args.queries) if args.data == "calibrated" else None
    if got is None:
        if args.data == "calibrated":
            print("calibrated data needs ../shared (datasets and the MRL model): using "
                  "the generator", file=sys.stderr)
        x, q = generate(total, 768, args.queries)[:2]
        data = "generated (easy)"
    else:
        x, q = got
        data = "calibrated"
    work = Path(tempfile.mkdtemp(prefix="mrlkit-live-", dir="/tmp"))
    np.save(work / "pool.npy", np.asarray(x, np.float32))
    np.save(work / "q.npy", np.asarray(q, np.float32))
    del x
    task = {"pool": str(work / "pool.npy"), "queries": str(work / "q.npy"), "n": args.n,
            "minutes": args.minutes, "upserts": args.upserts, "deletes": args.deletes,
            "static_searches": args.static_searches, "qps_seconds": args.qps_seconds,
            "qdrant_ef": args.qdrant_ef}
    results = [spawn({**task, "engine": "mrlkit", "folder": str(work / "mrlkit")})]
    if not args.no_qdrant:
        results.append(spawn({**task, "engine": "qdrant", "folder": str(work / "qdrant")}))
    stem = Path(args.out) if args.out else \
        Path(__file__).parent / "results" / f"live-{args.n // 1000}k"
    stem.parent.mkdir(parents=True, exist_ok=True)
    report = {"n": args.n, "dim": int(q.shape[1]), "data": data, "minutes": args.minutes,
              "upserts_per_s": args.upserts, "deletes_per_s": args.deletes,
              "cores": os.cpu_count(), "results": results}
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    plot(results, stem.with_suffix(".png"),
         f"{args.n:,} × {q.shape[1]} {data}: {args.upserts:g} upserts/s, "
         f"{args.deletes:g} deletes/s")
    for r in results:
        s, a, live, th = r["static"], r["after_one_write"], r["live"], r["threads"]
        print(f"{r['engine']}\n  static p50 {s['p50_ms']} p99 {s['p99_ms']} recall "
              f"{s['recall@10']}\n  after one upsert p50 {a['upsert']['p50_ms']} "
              f"({a['upsert']['over_control_ms']:+} ms over the control), one delete "
              f"p50 {a['delete']['p50_ms']} ({a['delete']['over_control_ms']:+} ms)\n  threads ×{th['ratio']}\n  live p50 "
              f"{live['p50_ms']} p99 {live['p99_ms']} max {live['max_ms']} (p99 ×"
              f"{live['p99_ms'] / s['p99_ms']:.2f} static), over 50 ms: "
              f"{live['over_50ms']}, recall {live['recall@10_after']}, errors "
              f"{live['errors']}, missing {live['upserts_missing']}, rss "
              f"{live['rss_mb']} MB")
    print(f"wrote {stem.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
