"""A mixed, partly hostile load on a live `mrlkit serve` (all to 127.0.0.1, bounded in
time): writers adding documents (texts the server embeds, and vectors), filtered
searchers, one large embeddings request, and sockets that hold connections open without
finishing a request (idle ones and slow unauthenticated bodies, reopened when the server
closes them). Used by tests/test_hostile.py (a short run: correctness) and by
benchmarks/hostile.py (60 s: latency figures).

Example::

    >>> got = run(url, port, WRITE, READ, seconds=15)     # doctest: +SKIP
    >>> got["server_errors"], got["small_p99_ms"]         # doctest: +SKIP
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import httpx
import numpy as np

MODEL = "all-MiniLM-L6-v2"
WORDS = ("matryoshka embedding prefix vector search funnel rerank store model dimension "
         "precision recall latency memory cosine query document index graph tier").split()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(8, 17))) + f" #{seed}-{i}"
            for i in range(n)]


def _hold(port: int, stop: float, slow: bool, closed: list[int]) -> None:
    """One hostile socket until ``stop``: idle, or a body that trickles (no key)."""
    while time.time() < stop:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if slow:
                s.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
                          .encode())
            s.settimeout(1)
            while time.time() < stop:
                try:
                    if not s.recv(4096):
                        closed[0] += 1  # the server let it go: open another
                        break
                except TimeoutError:
                    if slow:
                        s.sendall(b" ")
            s.close()
        except OSError:
            time.sleep(0.2)


def run(url: str, port: int, write_key: str, read_key: str, *, seconds: float = 60,
        writers: int = 8, searchers: int = 8, big: int = 1000, hostile: int = 64,
        set_name: str = "load") -> dict:
    """Run the load; return statuses, latencies (``series``: (t, ms, kind)), the ids
    every 200 acknowledged, and summary figures."""
    w = {"Authorization": f"Bearer {write_key}"}
    r = {"Authorization": f"Bearer {read_key}"}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 384)).astype(np.float32)
    with httpx.Client(base_url=url, headers=w, timeout=120) as c:
        c.post("/v1/sets", json={"name": set_name, "model": MODEL})
        c.post(f"/v1/sets/{set_name}/documents", json={"documents": [
            {"id": f"seed-{i}", "vector": x[i].tolist(), "metadata": {"g": i % 4}}
            for i in range(200)]}).raise_for_status()
    start = time.time()
    stop = start + seconds
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    series: list[tuple[float, float, str]] = []
    acked: list[str] = []
    errors: list[str] = []
    closed = [0]

    def record(kind: str, t0: float, status: int) -> None:
        with lock:
            statuses[status] += 1
            series.append((t0 - start, (time.time() - t0) * 1000, kind))

    def writer(n: int) -> None:
        texts = _texts(5000, seed=100 + n)
        with httpx.Client(base_url=url, headers=w, timeout=120) as c:
            b = 0
            while time.time() < stop:
                docs = [{"id": f"w{n}-{b}-t", "text": texts[b % 5000],
                         "metadata": {"g": b % 4}}] + [
                    {"id": f"w{n}-{b}-{i}", "vector": x[(n * 997 + b * 3 + i) % 20_000]
                     .tolist(), "metadata": {"g": (b + i) % 4}} for i in range(3)]
                t0 = time.time()
                try:
                    got = c.post(f"/v1/sets/{set_name}/documents", json={"documents": docs})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                record("add", t0, got.status_code)
                if got.status_code == 200:
                    with lock:
                        acked.extend(d["id"] for d in docs)
                b += 1

    def searcher(n: int) -> None:
        with httpx.Client(base_url=url, headers=r, timeout=120) as c:
            q = 0
            while time.time() < stop:
                body = {"vector": x[(n * 31 + q) % 20_000].tolist(), "k": 10,
                        "filter": {"g": q % 4}}
                if q % 4 == 3:  # a text query now and then: it needs the encoder
                    body = {"query": f"search {q} for nested dolls", "k": 10,
                            "filter": {"g": q % 4}}
                t0 = time.time()
                try:
                    got = c.post(f"/v1/sets/{set_name}/search", json=body)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                record("search", t0, got.status_code)
                q += 1

    def large() -> None:
        time.sleep(min(2.0, seconds / 10))
        with httpx.Client(base_url=url, headers=r, timeout=900) as c:
            t0 = time.time()
            got = c.post("/v1/embeddings", json={"model": MODEL, "input": _texts(big, 7)})
            record("large", t0, got.status_code)

    threads = ([threading.Thread(target=_hold, args=(port, stop, i % 2 == 1, closed))
                for i in range(hostile)]
               + [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
               + [threading.Thread(target=searcher, args=(i,)) for i in range(searchers)]
               + [threading.Thread(target=large)])
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 900)
    small = np.array([ms for _, ms, kind in series if kind != "large"]) if series else \
        np.zeros(1)
    return {
        "seconds": seconds, "writers": writers, "searchers": searchers,
        "large_request_texts": big, "hostile_sockets": hostile,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "client_errors": errors[:10], "n_client_errors": len(errors),
        "hostile_sockets_closed_by_server": closed[0],
        "small_requests": int(len(small)),
        "small_p50_ms": float(np.percentile(small, 50)),
        "small_p99_ms": float(np.percentile(small, 99)),
        "small_max_ms": float(small.max()),
        "large_ms": next((ms for _, ms, kind in series if kind == "large"), None),
        "acked": acked, "series": series,
    }
