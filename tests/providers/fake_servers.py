"""Small real HTTP servers on 127.0.0.1 that speak the Ollama and OpenAI embedding wire
formats, with scripted failures (status, headers, raw body) queued per test."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def fake_vector(text: str, dim: int) -> list[float]:
    """A deterministic, non-normalised vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).normal(size=dim) * 3).astype(np.float32).tolist()


@dataclass
class Scripted:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FakeServer:
    """Base: records every request; pops a scripted response if one is queued."""

    native_dim = 1536

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list[Scripted] = []
        self.wrong_dim: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append({"path": self.path, "json": payload})
                server.headers.append(dict(self.headers))
                if server.script:
                    r = server.script.pop(0)
                else:
                    r = server.answer(self.path, payload, dict(self.headers))
                self.send_response(r.status)
                for k, v in r.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(r.body)))
                self.end_headers()
                self.wfile.write(r.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def queue(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.script.append(Scripted(status, raw, headers or {}))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path, payload, headers) -> Scripted:  # pragma: no cover - overridden
        raise NotImplementedError


class FakeOpenAI(FakeServer):
    """``POST /v1/embeddings`` as documented by OpenAI; requires ``Bearer test-key``."""

    def answer(self, path, payload, headers):
        if path != "/v1/embeddings":
            return Scripted(404, json.dumps({"error": {"message": "not found"}}).encode())
        if headers.get("Authorization") != "Bearer test-key":
            return Scripted(401, json.dumps({"error": {
                "message": "Incorrect API key provided", "type": "invalid_request_error",
                "code": "invalid_api_key"}}).encode())
        if payload.get("model") not in ("text-embedding-3-small", "text-embedding-3-large"):
            return Scripted(404, json.dumps({"error": {
                "message": f"The model `{payload.get('model')}` does not exist"}}).encode())
        texts = payload["input"]
        dim = self.wrong_dim or payload.get("dimensions", self.native_dim)
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dim)}
                for i, t in enumerate(texts)]
        data.reverse()  # the API promises an index, not an order
        body = {"object": "list", "data": data, "model": payload["model"],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}}
        return Scripted(200, json.dumps(body).encode())


class FakeOllama(FakeServer):
    """``POST /api/embed`` as documented by Ollama (768-d nomic-embed-text)."""

    native_dim = 768

    def answer(self, path, payload, headers):
        if path != "/api/embed":
            return Scripted(404, b"404 page not found")
        if payload.get("model") not in ("nomic-embed-text", "mxbai-embed-large"):
            return Scripted(404, json.dumps(
                {"error": f"model \"{payload.get('model')}\" not found, try pulling it first"}
            ).encode())
        dim = self.wrong_dim or (768 if payload["model"] == "nomic-embed-text" else 1024)
        body = {"model": payload["model"],
                "embeddings": [fake_vector(t, dim) for t in payload["input"]]}
        return Scripted(200, json.dumps(body).encode())
