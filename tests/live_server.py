"""A live `mrlkit serve` for tests: a subprocess on 127.0.0.1, started with the CLI as a
user starts it, waited for generously (loading the model on a busy machine can take a
minute), stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

START_WAIT = 180  # seconds: a model load on a loaded 2-core machine


_DEFAULT = object()


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, store: str, port: int,
                 key: str | None = None) -> None:
        self.url, self.proc, self.store, self.port = url, proc, store, port
        self.key = key  # the key a client sends unless told otherwise

    def client(self, key=_DEFAULT, **kw) -> httpx.Client:
        key = self.key if key is _DEFAULT else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 60),
                            **kw)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(store: str, *args: str, keys: str | None = None, key: str | None = None,
          log=None) -> Server:
    """``mrlkit serve --store STORE ARGS`` with ``MRLKIT_API_KEYS=keys`` (None: none);
    its clients send ``key`` unless told otherwise."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MRLKIT_API_KEYS"}
    if keys:
        env["MRLKIT_API_KEYS"] = keys
    proc = subprocess.Popen(
        [sys.executable, "-m", "mrlkit.cli", "serve", "--store", store, "--port", str(port),
         *args], env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + START_WAIT
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mrlkit serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return Server(url, proc, store, port, key)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"mrlkit serve did not become ready in {START_WAIT} s")
