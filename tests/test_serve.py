"""`mrlkit serve` as users meet it: a live server on 127.0.0.1 (a subprocess started with
the README's command), the official `openai` client, plain HTTP for the rest, and a
bounded schemathesis run of the server's own OpenAPI document."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from . import live_server  # noqa: E402

WRITE, READ = "write-key-0123", "read-key-0123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("serve-store"))
    srv = live_server.start(store, "--allow-non-mrl", "--max-inputs", "64", "--max-body",
                            "200000", "--search-threads", "2",
                            keys=f"{WRITE}:write,{READ}:read", key=WRITE)
    yield srv
    srv.stop()


def test_the_openai_client_gets_the_librarys_vectors(server):
    openai = pytest.importorskip("openai")
    import mrlkit

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=READ)
    texts = ["Matryoshka dolls nest inside each other.", "Green tea is rich in catechins."]
    got = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, dimensions=128)
    x = np.array([d.embedding for d in got.data])
    lib = mrlkit.embed(texts, dim=128, allow_non_mrl=True)
    assert x.shape == (2, 128) and np.abs(x - lib).max() <= 1e-6
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    assert got.model == "all-MiniLM-L6-v2"
    # usage is the tokenizer's count ([CLS] and [SEP] included), not a count of words
    from mrlkit.providers import get_provider

    tokenizer = get_provider("all-MiniLM-L6-v2").model.tokenizer
    assert got.usage.total_tokens == got.usage.prompt_tokens == sum(
        len(tokenizer(t)["input_ids"]) for t in texts)
    raw = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0], dimensions=128,
                                   encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(raw.data[0].embedding), "<f4")
    assert np.abs(decoded - lib[0]).max() <= 1e-6
    # the client's own base64 default (no encoding_format) decodes to the same floats
    default = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0],
                                       dimensions=128)
    assert np.abs(np.array(default.data[0].embedding) - lib[0]).max() <= 1e-6
    models = client.models.list()
    assert [m.id for m in models.data] == ["all-MiniLM-L6-v2"]


def test_precision_extensions(server):
    with server.client(READ) as c:
        body = {"model": "all-MiniLM-L6-v2", "input": ["a cat", "a dog"], "dimensions": 64}
        f16 = c.post("/v1/embeddings", json={**body, "precision": "float16"}).json()
        bits = c.post("/v1/embeddings", json={**body, "precision": "binary"}).json()
        q8 = c.post("/v1/embeddings", json={**body, "precision": "int8"}).json()
    assert len(f16["data"][0]["embedding"]) == 64
    assert len(bits["data"][0]["embedding"]) == 8           # 64 sign bits, 8 per byte
    assert all(0 <= v <= 255 for v in bits["data"][0]["embedding"])
    assert all(-128 <= v <= 127 and isinstance(v, int) for v in q8["data"][0]["embedding"])


def _sets(server) -> list[str]:
    with server.client(READ) as c:
        return sorted(s["name"] for s in c.get("/v1/sets").json()["data"])


@pytest.mark.parametrize("case", [
    "no key", "wrong key", "read key writes", "oversized body", "10,000 inputs",
    "empty string", "bad dimensions", "hostile set name", "malformed funnel",
    "unknown model", "vector of the wrong size"])
def test_bad_input_is_a_4xx_json_error_and_writes_nothing(server, case):
    with server.client() as w:
        w.post("/v1/sets", json={"name": "guarded", "model": "all-MiniLM-L6-v2"})
    before = _sets(server)
    key = {"no key": None, "wrong key": "not-a-key-000", "read key writes": READ}.get(
        case, WRITE)
    req = {
        "no key": ("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "x"}),
        "wrong key": ("POST", "/v1/sets", {"name": "nope", "model": "all-MiniLM-L6-v2"}),
        "read key writes": ("POST", "/v1/sets", {"name": "nope", "model": "all-MiniLM-L6-v2"}),
        "oversized body": ("POST", "/v1/sets/guarded/documents", {"documents": [
            {"id": "big", "text": "word " * 60_000}]}),
        "10,000 inputs": ("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2",
                                                     "input": ["x"] * 10_000}),
        "empty string": ("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2",
                                                    "input": ["ok", "  "]}),
        "bad dimensions": ("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2",
                                                      "input": "x", "dimensions": 1000}),
        "hostile set name": ("POST", "/v1/sets", {"name": "../../etc/passwd",
                                                  "model": "all-MiniLM-L6-v2"}),
        "malformed funnel": ("POST", "/v1/sets/guarded/search", {"query": "x",
                                                                 "funnel": "64:fp99:x"}),
        "unknown model": ("POST", "/v1/sets", {"name": "nope", "model": "no-such-model"}),
        "vector of the wrong size": ("POST", "/v1/sets/guarded/documents", {"documents": [
            {"id": "v", "vector": [0.1] * 10}]}),
    }[case]
    with server.client(key) as c:
        r = c.request(req[0], req[1], json=req[2])
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["message"] and err["type"] and "Traceback" not in r.text
    expected = {"no key": 401, "wrong key": 401, "read key writes": 403,
                "oversized body": 413, "unknown model": 404}.get(case, 400)
    assert r.status_code == expected
    assert _sets(server) == before
    with server.client(READ) as c:
        assert c.get("/v1/sets/guarded").json()["count"] == 0


def test_sets_end_to_end(server):
    with server.client() as c:
        assert c.post("/v1/sets", json={"name": "notes", "model": "all-MiniLM-L6-v2",
                                        "storage": "float32", "allow_non_mrl": True}
                      ).status_code == 201  # the 64-d funnel below needs it
        r = c.post("/v1/sets/notes/documents", json={"documents": [
            {"id": "a", "text": "Matryoshka dolls nest inside each other",
             "metadata": {"lang": "en"}},
            {"id": "b", "text": "Green tea is rich in catechins", "metadata": {"lang": "en"}},
            {"id": "c", "vector": list(np.eye(384)[0]), "metadata": {"lang": "xx"}}]})
        assert r.json() == {"count": 3}
        hits = c.post("/v1/sets/notes/search", json={"query": "nested dolls", "k": 2,
                                                     "filter": {"lang": "en"}}).json()
        assert hits["hits"][0][0]["id"] == "a" and hits["timings"]
        tiered = c.post("/v1/sets/notes/search", json={
            "query": "nested dolls", "k": 1, "funnel": "64:float32:3,384",
            "adaptive": 0.25}).json()
        assert tiered["hits"][0][0]["id"] == "a" and tiered["funnel"].startswith("64:float32:3,")
        by_vector = c.post("/v1/sets/notes/search", json={"vector": list(np.eye(384)[0]),
                                                          "k": 1}).json()
        assert by_vector["hits"][0][0]["id"] == "c"
        # what ran is said: the funnel mrlkit chose and the path (3 rows: generic)
        assert (by_vector["funnel"], by_vector["path"]) == ("384:float32:1", "generic")
        assert c.get("/v1/sets/notes").json()["count"] == 3
        assert c.post("/v1/sets/notes/documents/delete", json={"ids": ["b", "zz"]}
                      ).json() == {"count": 1}
        assert c.post("/v1/sets/notes/index", json={"funnel": "64:binary:100,384"}
                      ).status_code == 200
        truncated = c.post("/v1/sets/notes/truncate",
                           json={"dimensions": 192, "allow_non_mrl": True}).json()
        assert truncated["stored_dim"] == 192
        assert c.delete("/v1/sets/notes").json() == {"count": 2}  # the documents it held
        assert c.get("/v1/sets/notes").status_code == 404


def test_concurrent_writers_and_readers_lose_nothing(server):
    with server.client() as c:
        c.post("/v1/sets", json={"name": "busy", "model": "all-MiniLM-L6-v2"})
    statuses: list[int] = []
    lock = threading.Lock()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * 5 * 4, 384)).astype(np.float32)

    def writer(w: int) -> None:
        with server.client() as c:
            for b in range(5):
                docs = [{"id": f"w{w}-{b}-{i}", "vector": x[(w * 5 + b) * 4 + i].tolist(),
                         "text": f"writer {w} batch {b} doc {i}"} for i in range(4)]
                r = c.post("/v1/sets/busy/documents", json={"documents": docs})
                with lock:
                    statuses.append(r.status_code)

    def reader(n: int) -> None:
        with server.client(READ) as c:
            for _ in range(5):
                r = c.post("/v1/sets/busy/search", json={"query": f"writer {n}", "k": 3})
                with lock:
                    statuses.append(r.status_code)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda f: f[0](f[1]), [(writer, i) for i in range(8)] +
                      [(reader, i) for i in range(8)]))
    assert statuses and all(s == 200 for s in statuses), statuses
    with server.client(READ) as c:
        assert c.get("/v1/sets/busy").json()["count"] == 160


def test_operations_endpoints(server):
    r = httpx.get(server.url + "/health")
    assert r.json() == {"status": "ok"}
    metrics = httpx.get(server.url + "/metrics").text
    assert "mrlkit_requests_total" in metrics and "mrlkit_encode_batch_size" in metrics
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/embeddings" in spec["paths"] and "/v1/sets/{name}/search" in spec["paths"]
    assert httpx.get(server.url + "/docs").status_code == 200


def test_schemathesis_with_every_check_finds_nothing(server):
    """`st run --checks all` over the server's own OpenAPI document, every phase
    (examples, coverage, fuzzing, stateful), at most 25 examples per operation, seeded so
    that a failure reproduces (`st replay`), all to 127.0.0.1: no 5xx, every status
    documented, every response as documented, schema-valid requests accepted and
    schema-violating ones refused. tests/schemathesis.toml adds 413 (a body over
    --max-body, refused before it is parsed) to the refusals."""
    pytest.importorskip("schemathesis")
    st = Path(sys.executable).with_name("st")
    r = subprocess.run([str(st), "--config-file", str(Path(__file__).with_name(
        "schemathesis.toml")), "run", server.url + "/openapi.json", "--checks", "all",
        "--max-examples", "25", "--seed", "1", "--request-timeout", "60",
        "-H", f"Authorization: Bearer {WRITE}", "--no-color"],
        capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Tested: 14" in r.stdout and " passed" in r.stdout, r.stdout[-2000:]


def test_sigterm_lets_an_in_flight_write_finish(tmp_path):
    """Shutdown stops accepting, lets a write being embedded finish, then closes."""
    store = str(tmp_path / "store")
    port = live_server.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mrlkit.cli", "serve", "--store", store,
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        httpx.post(url + "/v1/sets", json={"name": "s", "model": "all-MiniLM-L6-v2"})
        docs = [{"id": f"d{i}", "text": f"document {i} about nested dolls and tea"}
                for i in range(300)]
        result: dict = {}
        writer = threading.Thread(target=lambda: result.update(r=httpx.post(
            url + "/v1/sets/s/documents", json={"documents": docs}, timeout=120)))
        writer.start()
        time.sleep(0.5)                       # the request is in, its texts embedding
        proc.send_signal(signal.SIGTERM)
        writer.join(timeout=180)
        assert result["r"].status_code == 200 and result["r"].json() == {"count": 300}
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    from mrlkit.stores import open_store

    assert open_store(store).get_set("s").count == 300


def test_a_set_created_with_a_target_is_tuned_after_an_add(tmp_path, monkeypatch):
    """The server's add answers first, then tunes a set that has passed the threshold
    (here 50 rows) at the target it was created with."""
    monkeypatch.setenv("MRLKIT_NATIVE_FROM", "50")
    srv = live_server.start(str(tmp_path / "store"), "--allow-non-mrl")
    try:
        with srv.client() as c:
            assert c.post("/v1/sets", json={"name": "t", "model": "all-MiniLM-L6-v2",
                                            "recall": 0.9}).status_code == 201
            assert c.get("/v1/sets/t").json()["tuned"] == {"target": 0.9}
            assert c.post("/v1/sets", json={"name": "u", "model": "all-MiniLM-L6-v2",
                                            "recall": 2}).status_code == 400
            x = np.random.default_rng(0).standard_normal((80, 384))
            docs = [{"id": str(i), "vector": v.tolist()} for i, v in enumerate(x)]
            assert c.post("/v1/sets/t/documents", json={"documents": docs}).json() == \
                {"count": 80}
            deadline = time.time() + 120  # generous: a tune on a busy machine
            while time.time() < deadline:
                tuned = c.get("/v1/sets/t").json()["tuned"]
                if "funnel" in tuned:
                    break
                time.sleep(0.5)
            assert tuned["target"] == 0.9 and tuned["rows"] == 80 and tuned["recall"] >= 0.9
    finally:
        srv.stop()
