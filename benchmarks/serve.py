"""`mrlkit serve` under load on 127.0.0.1, side by side in one run (ratios count, the
machine is noisy):

    python benchmarks/serve.py --output benchmarks/results/serve.json

1. Embeddings: the same short texts encoded in-process (``provider.embed`` at batch 32),
   through `mrlkit serve` (16 concurrent clients, 8 texts per request: the server batches
   them into model calls), and through a plain FastAPI app that encodes each request as it
   comes (one request, one model call). Texts/s, p50/p99 latency, error rate.
2. Search: a 100,000-row set searched by vector in-process and over HTTP: 1 client (the
   HTTP overhead in ms) and 8 clients (QPS), with the server's search pool at one thread
   per core and at one thread (``--search-threads``). The load comes from wrk (C, one
   thread) when it is installed (Debian's ``wrk``), so that the client costs the 2-core
   machine little; else from Python threads (httpx), which take a core of their own.
3. Memory: the server's resident memory (``/proc/PID/smaps_rollup``) at the start and end
   of a mixed load of ``--soak`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).parent))
from data import generate  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
WORDS = ("matryoshka embedding prefix vector search funnel rerank store model dimension "
         "precision recall latency memory cosine query document index graph tier").split()


def texts(n: int, seed: int = 0) -> list[str]:
    """Short texts (8–16 words), distinct, so that no cache answers for the model."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(8, 17))) + f" #{seed}-{i}"
            for i in range(n)]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Rss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, path: str = "/ready") -> None:
    import httpx

    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def run_threads(target, n: int) -> float:
    """``target(i)`` on ``n`` threads at once; the seconds until all have ended."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def load(url: str, body_of, *, clients: int, seconds: float, path: str) -> dict:
    """``clients`` threads posting ``body_of(i)`` to ``path`` for ``seconds``."""
    import httpx

    lat: list[float] = []
    errors = [0]
    done = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as h:
            i = 0
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    ok = h.post(path, json=body_of(c * 1_000_000 + i)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    lat.append((time.perf_counter() - t0) * 1000)
                    done[0] += 1
                    errors[0] += not ok
                i += 1

    took = run_threads(client, clients)
    return {"requests": done[0], "requests_per_s": round(done[0] / took, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "error_rate": round(errors[0] / max(1, done[0]), 4)}


WRK_SCRIPT = """
bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%f %%f\\n", summary.requests, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_load(url: str, bodies: list[str], *, clients: int, seconds: float,
             path: str) -> dict | None:
    """``clients`` connections from one wrk thread posting ``bodies`` in turn; None when
    wrk is not installed."""
    if not shutil.which("wrk"):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % ", ".join(f"[==[{b}]==]" for b in bodies))
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "-s",
                              f.name, url + path], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(f.name)
    n, us, errors, p50, p99 = next(line.split()[1:] for line in out.splitlines()
                                   if line.startswith("WRK "))
    return {"requests": int(n), "requests_per_s": round(int(n) / (int(us) / 1e6), 1),
            "p50_ms": round(float(p50) / 1000, 2), "p99_ms": round(float(p99) / 1000, 2),
            "error_rate": round(int(errors) / max(1, int(n)), 4), "client": "wrk"}


def threads_qps(store, q: np.ndarray, seconds: float) -> dict:
    """Single-query searches per second in-process on one thread, then on one per core."""
    def run(threads: int) -> float:
        done = [0] * threads
        stop = time.perf_counter() + seconds / 2

        def loop(t: int) -> None:
            i = t
            while time.perf_counter() < stop:
                store.search("bench", q[i % len(q)][None], k=10)
                done[t] += 1
                i += threads

        took = run_threads(loop, threads)
        return sum(done) / took

    one, many = run(1), run(os.cpu_count() or 1)
    return {"qps_one_thread": round(one, 1), "qps_threads_per_core": round(many, 1),
            "threads_ratio": round(many / one, 3)}


def search_load(url: str, q: np.ndarray, *, clients: int, seconds: float) -> dict:
    path = "/v1/sets/bench/search"
    bodies = [json.dumps({"vector": v.tolist(), "k": 10}) for v in q]
    got = wrk_load(url, bodies, clients=clients, seconds=seconds, path=path)
    if got is None:
        got = {**load(url, lambda i: json.loads(bodies[i % len(bodies)]), clients=clients,
                      seconds=seconds, path=path), "client": "python threads (httpx)"}
    return got


def start_server(store: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mrlkit.cli", "serve", "--store",
                             str(store), "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(url, proc)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def search_over_http(store: Path, q: np.ndarray, in_process_p50: float,
                     seconds: float) -> dict:
    """1 and 8 clients with the search pool at one thread per core, then 8 clients with
    it at one thread: the second ratio is what the pool buys."""
    cores = os.cpu_count() or 1
    out: dict = {"cores": cores}
    for threads, clients in ((cores, (1, 8)), (1, (8,))):
        proc, url = start_server(store, "--search-threads", str(threads))
        try:
            for c in clients:
                key = f"threads_{threads}_clients_{c}"
                out[key] = search_load(url, q, clients=c, seconds=seconds)
                print(f"search over HTTP, {threads} search thread(s), {c} client(s): "
                      f"{out[key]}", flush=True)
        finally:
            stop_server(proc)
    qps = {k: v["requests_per_s"] for k, v in out.items() if isinstance(v, dict)}
    many, one = f"threads_{cores}_clients_8", f"threads_{cores}_clients_1"
    out["ratios"] = {"eight_clients_vs_one": round(qps[many] / qps[one], 3),
                     "search_threads_cores_vs_one": round(
                         qps[many] / qps["threads_1_clients_8"], 3)}
    out["http_overhead_p50_ms"] = round(out[one]["p50_ms"] - in_process_p50, 3)
    return out


class Body(BaseModel):
    model: str
    input: list[str]


def baseline_app():  # a plain FastAPI service: one request, one model call
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool

    from mrlkit.providers import get_provider

    provider = get_provider(MODEL, show_progress=False)
    provider.embed(["warm-up"])
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"ok": True}

    @app.post("/v1/embeddings")
    async def embeddings(body: Body) -> dict:
        x = await run_in_threadpool(provider.embed, body.input)
        return {"data": [{"embedding": row.tolist()} for row in x]}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="per embeddings load")
    ap.add_argument("--soak", type=float, default=120.0, help="the memory run")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--search-seconds", type=float, default=15.0, help="per search load")
    ap.add_argument("--only", choices=("all", "search"), default="all",
                    help="search: the search section alone (no embeddings, no soak)")
    ap.add_argument("--output", default="benchmarks/results/serve.json")
    ap.add_argument("--baseline-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_port:
        import uvicorn

        uvicorn.run(baseline_app(), host="127.0.0.1", port=args.baseline_port,
                    log_level="warning")
        return
    from mrlkit.providers import get_provider
    from mrlkit.stores import open_store

    report: dict = {"model": MODEL, "clients": 16, "texts_per_request": 8,
                    "rows": args.rows}
    work = Path(tempfile.mkdtemp(prefix="mrlserve-", dir=os.environ.get("BENCH_TMP")))
    store = open_store(str(work / "store"))
    x, q = generate(args.rows, 384, 500)
    store.create_set("bench", MODEL, storage="float16")
    for s in range(0, len(x), 50_000):
        store.add("bench", [str(i) for i in range(s, min(len(x), s + 50_000))],
                  x[s:s + 50_000])
    store.close()
    store = open_store(str(work / "store"))  # opened as the server opens it
    store.search("bench", q[:1], k=10)       # and warmed, as the server's first request
    lat = []
    for v in q[:300]:
        t = time.perf_counter()
        store.search("bench", v[None], k=10)
        lat.append((time.perf_counter() - t) * 1000)
    report["search_in_process"] = {"p50_ms": round(float(np.percentile(lat, 50)), 3),
                                   "p99_ms": round(float(np.percentile(lat, 99)), 3),
                                   **threads_qps(store, q, args.search_seconds)}
    store.close()
    print(f"in-process search: {report['search_in_process']}", flush=True)

    def emb_body(i: int) -> dict:
        return {"model": MODEL, "input": texts(8, seed=100 + i)}

    def embeddings_load(url: str) -> dict:
        got = load(url, emb_body, clients=16, seconds=args.seconds, path="/v1/embeddings")
        return {**got, "texts_per_s": round(got["requests_per_s"] * 8, 1)}

    report["serve_search"] = search_over_http(
        work / "store", q, report["search_in_process"]["p50_ms"], args.search_seconds)
    if args.only == "search":
        return write(report, args.output)
    # in-process encoding at batch 32
    provider = get_provider(MODEL, show_progress=False)
    provider.embed(["warm-up"])
    corpus = texts(4_000, seed=1)
    t0 = time.perf_counter()
    for s in range(0, len(corpus), 32):
        provider.embed(corpus[s:s + 32])
    inproc = len(corpus) / (time.perf_counter() - t0)
    report["in_process_texts_per_s"] = round(inproc, 1)
    print(f"in-process encode, batch 32: {inproc:,.0f} texts/s", flush=True)

    proc, url = start_server(work / "store")
    try:
        report["serve_embeddings"] = got = embeddings_load(url)
        print(f"mrlkit serve, 16 clients × 8 texts: {got}", flush=True)
        start_rss = rss_mb(proc.pid)
        half = max(1.0, args.soak / 2)
        mixed = [threading.Thread(target=lambda: report.setdefault("soak_embeddings", load(
            url, emb_body, clients=4, seconds=args.soak, path="/v1/embeddings"))),
            threading.Thread(target=lambda: report.setdefault("soak_search", load(
                url, lambda i: {"vector": q[i % 500].tolist(), "k": 10}, clients=4,
                seconds=args.soak, path="/v1/sets/bench/search")))]
        for t in mixed:
            t.start()
        time.sleep(half)
        mid_rss = rss_mb(proc.pid)
        for t in mixed:
            t.join()
        report["memory_mb"] = {"start": round(start_rss, 1), "middle": round(mid_rss, 1),
                               "end": round(rss_mb(proc.pid), 1), "soak_s": args.soak}
        print(f"server RSS over the soak: {report['memory_mb']}", flush=True)
    finally:
        stop_server(proc)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = subprocess.Popen([sys.executable, __file__, "--baseline-port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(url, base)
        report["plain_fastapi_embeddings"] = got = embeddings_load(url)
        print(f"plain FastAPI, one request one encode: {got}", flush=True)
    finally:
        stop_server(base)
    serve_tps = report["serve_embeddings"]["texts_per_s"]
    report["ratios"] = {
        "serve_vs_in_process": round(serve_tps / inproc, 3),
        "serve_vs_plain_fastapi": round(
            serve_tps / report["plain_fastapi_embeddings"]["texts_per_s"], 3)}
    print(f"ratios: {report['ratios']}")
    write(report, args.output)


def write(report: dict, output: str) -> None:
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot(report, str(out.with_suffix(".png")))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    embedded = "serve_embeddings" in report
    fig, axes = plt.subplots(1, 2 if embedded else 1, figsize=(11 if embedded else 6, 4),
                             squeeze=False)
    if embedded:
        a = axes[0][0]
        names = ["in-process\nbatch 32", "mrlkit serve\n16 clients",
                 "plain FastAPI\n16 clients"]
        vals = [report["in_process_texts_per_s"], report["serve_embeddings"]["texts_per_s"],
                report["plain_fastapi_embeddings"]["texts_per_s"]]
        a.bar(names, vals, color=["tab:gray", "tab:red", "tab:blue"])
        a.set_ylabel("texts embedded per second")
        a.set_title(f"Embeddings ({report['model']}, 8 short texts per request)",
                    fontsize=10)
    b = axes[0][-1]
    s, p, cores = report["serve_search"], report["search_in_process"], \
        report["serve_search"]["cores"]
    b.bar(["in-process\n1 thread", f"in-process\n{cores} threads",
           f"HTTP 1 client\n{cores} search thr.", f"HTTP 8 clients\n{cores} search thr.",
           "HTTP 8 clients\n1 search thr."],
          [p["qps_one_thread"], p["qps_threads_per_core"],
           s[f"threads_{cores}_clients_1"]["requests_per_s"],
           s[f"threads_{cores}_clients_8"]["requests_per_s"],
           s["threads_1_clients_8"]["requests_per_s"]],
          color=["tab:gray", "tab:gray", "tab:red", "tab:red", "tab:orange"])
    b.set_ylabel("searches per second")
    b.tick_params(axis="x", labelsize=8)
    b.set_title(f"Search by vector, {report['rows']:,} rows × 384", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
