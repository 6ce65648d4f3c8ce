"""`mrlkit serve` against careless and hostile clients (issue 24, cases 1–8 and 14 and the
minor ones): live servers on 127.0.0.1 started with the CLI, traffic bounded in count and
time. Waits are generous and stated; nothing here asserts how fast anything is."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from . import live_server  # noqa: E402

WRITE, READ, OTHER = "write-key-0123", "read-key-0123", "other-read-key-0123"
MODEL = "all-MiniLM-L6-v2"
SLOW = 64  # hostile sockets


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("hostile-store"))
    srv = live_server.start(store, "--allow-non-mrl", "--max-in-flight", "8",
                            "--header-timeout", "3", "--body-timeout", "3",
                            "--max-batch", "16",
                            keys=f"{WRITE}:write,{READ}:read,{OTHER}:read", key=WRITE)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyless(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("keyless-store"))
    srv = live_server.start(store)
    yield srv
    srv.stop()


def _raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(data)
    return s


def _answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (generous: 60 s)."""
    s.settimeout(60)
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        got += chunk
    return got


def _post(c, path, body, **kw):
    """JSON as a client sends it: ASCII-escaped (httpx's own encoder cannot send a lone
    surrogate, which is what a hostile client sends as \\ud800)."""
    return c.post(path, content=json.dumps(body),
                  headers={"Content-Type": "application/json"}, **kw)


def _embed(c, text="a short text", **kw):
    return _post(c, "/v1/embeddings", {"model": MODEL, "input": text, **kw})


# --- 1: sockets and slots -------------------------------------------------------------
def _slow_post(port: int, key: str | None) -> socket.socket:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    return _raw(port, head.encode())


@pytest.mark.parametrize("key, answer", [(None, b"401"), (OTHER, b"408")])
def test_slow_bodies_lock_out_no_one_else(keyed, key, answer):
    """64 slow bodies (Content-Length 1000, one byte sent). Without a key: refused with
    401 at once, before the body is read or a slot taken. With one key: the body is read
    before a slot is taken, so no slot is held; each is refused with 408 after
    --body-timeout. Either way other keys are served meanwhile."""
    socks = [_slow_post(keyed.port, key) for _ in range(SLOW)]
    try:
        with keyed.client(READ) as c:
            assert all(_embed(c).status_code == 200 for _ in range(5))
        answers = [_answer(s) for s in socks]
        assert all(a.startswith(b"HTTP/1.1 " + answer) for a in answers), answers[0][:300]
    finally:
        for s in socks:
            s.close()
    if key is not None:
        assert b"body_timeout" in answers[0]
        with keyed.client(key) as c:
            assert _embed(c).status_code == 200


def test_idle_and_trickling_sockets_are_closed_at_the_header_deadline(keyed):
    idle = [socket.create_connection(("127.0.0.1", keyed.port), timeout=60)
            for _ in range(SLOW)]
    trickle = _raw(keyed.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        with keyed.client(READ) as c:
            assert _embed(c).status_code == 200
        assert all(_answer(s) == b"" for s in idle)  # closed (--header-timeout 3)
        assert _answer(trickle) == b""
    finally:
        for s in [*idle, trickle]:
            s.close()


def test_each_key_has_its_own_slots(keyed):
    """--max-in-flight 8 per key: 24 concurrent large requests of one key get some 429s;
    another key's requests, sent meanwhile, all pass."""
    texts = [f"sentence number {i} about tea and dolls" for i in range(60)]

    def flood(_: int) -> int:
        with keyed.client(OTHER) as c:
            return c.post("/v1/embeddings", json={"model": MODEL, "input": texts}).status_code

    with ThreadPoolExecutor(24) as pool:
        floods = [pool.submit(flood, i) for i in range(24)]
        time.sleep(0.5)
        with keyed.client(READ) as c:
            mine = [_embed(c).status_code for _ in range(4)]
        statuses = [f.result() for f in floods]
    assert mine == [200] * 4
    assert set(statuses) <= {200, 429} and 429 in statuses


# --- 2: secrets ----------------------------------------------------------------------
def test_a_password_in_the_store_url_is_shown_to_no_one(pg_url, tmp_path):
    secret = "hunter2-secret-pw"
    url = pg_url + ("&" if "?" in pg_url else "?") + f"password={secret}"
    srv = live_server.start(url, keys=f"{WRITE}:write", key=WRITE)
    try:
        ready = httpx.get(srv.url + "/ready", timeout=30)
        assert ready.json() == {"status": "ready"}
        with srv.client() as c:
            texts = [c.get("/v1/sets/nope").text,
                     c.post("/v1/sets", json={"name": "s", "model": MODEL}).text,
                     c.post("/v1/sets", json={"name": "s", "model": MODEL}).text,
                     c.get("/v1/sets/s").text]
            # 6 and 14 on pgvector: refused by the core, never a 5xx from PostgreSQL
            for doc in ({"id": "a", "text": "x", "metadata": {"k\u0000": 1}},
                        {"id": "a", "text": "x\ud800"}, {"id": "a\u0000", "text": "x"}):
                r = _post(c, "/v1/sets/s/documents", {"documents": [doc]})
                assert r.status_code == 400, r.text
            r = _post(c, "/v1/sets/s/search", {"query": "x", "filter": {"k\u0000": 1}})
            assert r.status_code == 400, r.text
    finally:
        srv.stop()
    assert all(secret not in t for t in texts), texts
    assert "no embedding set named 'nope'" in texts[0]
    r = subprocess.run([sys.executable, "-m", "mrlkit.cli", "sets", "info", "nope",
                        "--store", url], capture_output=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and secret.encode() not in r.stdout + r.stderr


# --- 3: metrics ----------------------------------------------------------------------
def test_unmatched_paths_do_not_grow_the_metrics(keyed):
    before = len(httpx.get(keyed.url + "/metrics", timeout=30).text)
    with httpx.Client(base_url=keyed.url, timeout=30) as c:
        for i in range(500):
            c.get(f"/random-{i}-{os.urandom(4).hex()}")
            c.request("FOO" if i % 2 else "GET", f"/v1/nope-{i}")
    after = httpx.get(keyed.url + "/metrics", timeout=30).text
    assert len(after) - before < 5_000, len(after) - before
    assert 'route="unmatched"' in after and "random-" not in after


# --- 4: keys -------------------------------------------------------------------------
def test_keys_are_parsed_strictly(tmp_path):
    from mrlkit.errors import InvalidInputError
    from mrlkit.server.config import parse_env_keys, parse_keys

    assert parse_keys("abc#defgh-key read\n# comment\n\tkey-two-123\twrite\n") == {
        "abc#defgh-key": "read", "key-two-123": "write"}
    assert parse_env_keys("a-long-key-1:read,another-key-2") == {
        "a-long-key-1": "read", "another-key-2": "write"}
    for bad, why in (("short", "8 or more"), ("a-long-key-1 read extra", "3 fields"),
                     ("a-long-key-1 admin", "read or write"), ("café-key-123", "ASCII")):
        with pytest.raises(InvalidInputError, match=why):
            parse_keys(bad)
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("a-long-key-1 read extra\n")
    r = subprocess.run([sys.executable, "-m", "mrlkit.cli", "serve", "--api-key-file",
                        str(keyfile)], capture_output=True, timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and "line 1" in err and "'read' or 'write'" in err, err
    r = subprocess.run([sys.executable, "-m", "mrlkit.cli", "serve", "--help"],
                       capture_output=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert "KEY [read|write]" in r.stdout.decode()


def test_a_hash_inside_a_key_is_part_of_the_key(tmp_path):
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("# the server's keys\nabc#defgh-key\tread\n")
    srv = live_server.start(str(tmp_path / "store"), "--api-key-file", str(keyfile))
    try:
        with srv.client("abc#defgh-key") as c:
            assert _embed(c).status_code == 200
            assert c.post("/v1/sets", json={"name": "s", "model": MODEL}).status_code == 403
        with srv.client("abc") as c:
            assert _embed(c).status_code == 401
    finally:
        srv.stop()


# --- 5: DNS rebinding ----------------------------------------------------------------
def test_a_keyless_server_answers_loopback_hosts_only(keyless):
    with keyless.client() as c:
        assert c.post("/v1/sets", json={"name": "mine", "model": MODEL}).status_code == 201
        evil = c.delete("/v1/sets/mine", headers={"Host": "evil.example:8000"})
        assert evil.status_code == 421 and evil.json()["error"]["code"] == "not_loopback"
        cross = c.delete("/v1/sets/mine", headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        assert c.get("/v1/sets/mine").status_code == 200     # nothing was deleted
        for host in ("localhost:1234", "127.0.0.1", "[::1]:8000"):
            assert c.get("/v1/sets", headers={"Host": host}).status_code == 200, host
        assert c.get("/v1/sets", headers={"Origin": f"http://127.0.0.1:{keyless.port}"}
                     ).status_code == 200


def test_a_keyless_server_refuses_to_listen_beyond_loopback(tmp_path):
    from mrlkit.errors import InvalidInputError
    from mrlkit.server import ServerConfig, create_app

    with pytest.raises(InvalidInputError, match="loopback only"):
        create_app(ServerConfig(store=str(tmp_path), host="0.0.0.0"))


def test_search_threads_out_of_range_is_refused(tmp_path):
    from mrlkit.errors import InvalidInputError
    from mrlkit.server import ServerConfig

    with pytest.raises(InvalidInputError, match="search threads must be 1..256, not 0"):
        ServerConfig(store=str(tmp_path), search_threads=0)


# --- 6: a lone surrogate -------------------------------------------------------------
def test_a_lone_surrogate_fails_only_its_own_request(keyed):
    def one(i: int) -> int:
        with keyed.client(READ) as c:
            text = "bad \ud800 text" if i == 3 else f"a good text number {i}"
            return _embed(c, [text, "and another"]).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(8)))
    assert statuses[3] == 400 and statuses[:3] + statuses[4:] == [200] * 7, statuses


@pytest.mark.parametrize("where", ["text", "metadata value", "metadata key", "id",
                                   "filter value", "filter key", "search text",
                                   "set name"])
@pytest.mark.parametrize("bad", ["\ud800", "\u0000"])
def test_bad_text_anywhere_is_a_400_naming_the_field(keyed, where, bad):
    """Cases 6 and 14 on the local store (pgvector: the secrets test above)."""
    with keyed.client() as c:
        c.post("/v1/sets", json={"name": "texts", "model": MODEL})
        doc = {"id": "d", "text": "fine", "metadata": {"k": "v"}}
        if where in ("text", "metadata value", "metadata key", "id"):
            if where == "text":
                doc["text"] = f"x{bad}"
            elif where == "metadata value":
                doc["metadata"] = {"k": bad}
            elif where == "metadata key":
                doc["metadata"] = {f"k{bad}": 1}
            else:
                doc["id"] = f"d{bad}"
            r = _post(c, "/v1/sets/texts/documents", {"documents": [doc]})
        elif where == "set name":
            r = _post(c, "/v1/sets", {"name": f"n{bad}", "model": MODEL})
        else:
            body = {"query": "fine"}
            if where == "search text":
                body["query"] = f"x{bad}"
            else:
                body["filter"] = {"k": f"v{bad}"} if where == "filter value" else {
                    f"k{bad}": 1}
            r = _post(c, "/v1/sets/texts/search", body)
        assert r.status_code == 400, (r.status_code, r.text)
        message = r.json()["error"]["message"]
        assert ("NUL" if bad == "\u0000" else "surrogate") in message or \
            "bad set name" in message, message
        assert c.get("/v1/sets/texts").json()["count"] == 0


def test_the_cli_refuses_a_lone_surrogate_in_one_line(tmp_path):
    code = ("import sys; sys.argv = ['mrlkit', 'embed', 'caf\\udce9']; "
            "from mrlkit.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300,
                       cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 2 and "surrogate" in err and "unexpected" not in err, err


# --- 7: filtered searches during adds ------------------------------------------------
def test_filtered_searches_during_concurrent_adds_never_fail(keyed):
    with keyed.client() as c:
        c.post("/v1/sets", json={"name": "live", "model": MODEL})
        seed = np.random.default_rng(0).normal(size=(50, 384)).tolist()
        c.post("/v1/sets/live/documents", json={"documents": [
            {"id": f"s{i}", "vector": v, "metadata": {"g": i % 3}} for i, v in
            enumerate(seed)]})
    stop, statuses, lock = time.time() + 8, [], threading.Lock()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 384)).astype(np.float32)

    def writer(w: int) -> None:
        n = 0
        with keyed.client() as c:
            while time.time() < stop:
                docs = [{"id": f"w{w}-{n}-{i}", "vector": x[(n * 4 + i) % 4000].tolist(),
                         "metadata": {"g": i % 3}} for i in range(4)]
                r = c.post("/v1/sets/live/documents", json={"documents": docs})
                with lock:
                    statuses.append(r.status_code)
                n += 1

    def searcher(n: int) -> None:
        with keyed.client(READ) as c:
            while time.time() < stop:
                r = c.post("/v1/sets/live/search", json={
                    "vector": x[n].tolist(), "k": 5, "filter": {"g": n % 3},
                    "funnel": "384:binary:50,384"})
                with lock:
                    statuses.append(r.status_code)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)] + \
        [threading.Thread(target=searcher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert statuses and set(statuses) <= {200, 429}, sorted(set(statuses))
    assert statuses.count(200) > 20


# --- 8: fairness ---------------------------------------------------------------------
def test_a_small_request_does_not_wait_for_a_large_one(keyed):
    """--max-batch 16: 2,000 texts are 125 model calls; a one-word request sent while
    they are being encoded is answered before them (it joins the next call), not after
    all of them. It is sent once the server's counter shows the large one under way
    (however fast this machine encodes)."""
    done: list[str] = []
    lock = threading.Lock()
    big = [f"document {i} about nested dolls, green tea, the moon's orbit and the tides "
           "it raises twice a day on every coast" for i in range(2000)]

    def embedded() -> float:
        with keyed.client(READ) as c:
            text = c.get("/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("mrlkit_embedded_texts_total"))

    def send(name: str, texts: list[str]) -> None:
        with keyed.client(READ) as c:
            r = c.post("/v1/embeddings", json={"model": MODEL, "input": texts},
                       timeout=600)
            assert r.status_code == 200, r.text
        with lock:
            done.append(name)

    before = embedded()
    large = threading.Thread(target=send, args=("large", big))
    large.start()
    deadline = time.monotonic() + 120
    while embedded() < before + 16 and time.monotonic() < deadline:
        time.sleep(0.02)  # until the first of its model calls is done
    small = threading.Thread(target=send, args=("small", ["tea"]))
    small.start()
    small.join(timeout=600)
    large.join(timeout=600)
    assert done == ["small", "large"], done


# --- minor ---------------------------------------------------------------------------
def test_a_chunked_body_over_the_limit_is_413(keyed):
    def chunks():
        for _ in range(40):
            yield b"x" * 100_000

    with keyed.client() as c:
        r = c.post("/v1/embeddings", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_malformed_http_is_answered_in_json(keyed):
    answer = _answer(_raw(keyed.port, b"GARBAGE \x01\x02 HTTP/9\r\n\r\n"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(body)["error"]["code"] == "malformed_http"


@pytest.mark.parametrize("body", [
    {"query": "x", "k": "5"}, {"query": "x", "k": True}, {"query": "x", "k": 5.5},
    {"query": "x", "funnel": "３８４:binary:10,384"}, {"query": "x", "funnel": "3_84:float32"},
    {"vector": [0.0] * 384}])
def test_types_are_taken_as_written(keyed, body):
    with keyed.client() as c:
        c.post("/v1/sets", json={"name": "typed", "model": MODEL})
        c.post("/v1/sets/typed/documents", json={"documents": [
            {"id": "a", "vector": [1.0] + [0.0] * 383}]})
        r = c.post("/v1/sets/typed/search", json=body)
    assert r.status_code == 400, r.text


def test_dimensions_true_is_not_one(keyed):
    with keyed.client(READ) as c:
        r = _embed(c, dimensions=True)
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


def test_set_names_with_bidi_overrides_are_refused(keyed):
    with keyed.client() as c:
        r = c.post("/v1/sets", json={"name": "invoice\u202egpj.exe", "model": MODEL})
    assert r.status_code == 400 and "\u202e" not in r.text


# --- the mixed load ------------------------------------------------------------------
def test_a_mixed_hostile_load_gets_no_5xx_and_loses_nothing(tmp_path):
    """8 writers, 8 filtered searchers, one 1,000-text embeddings request and 64
    hostile sockets for 20 s (benchmarks/hostile.py runs it for 60 s and reports the
    latencies): no 5xx, no transport error, every acknowledged document stored."""
    from mrlkit.stores import open_store

    from .mixed_load import run

    store = str(tmp_path / "load-store")
    srv = live_server.start(store, keys=f"{WRITE}:write,{READ}:read", key=WRITE)
    try:
        got = run(srv.url, srv.port, WRITE, READ, seconds=20)
    finally:
        srv.stop()
    assert got["server_errors"] == 0 and got["n_client_errors"] == 0, got["statuses"]
    assert set(got["statuses"]) <= {"200", "429"}, got["statuses"]
    assert got["acked"] and got["small_requests"] > 50
    docs = open_store(store).get("load", got["acked"])
    assert all(d is not None for d in docs), sum(d is None for d in docs)
