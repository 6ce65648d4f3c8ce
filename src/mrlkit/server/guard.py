"""What stands before every route of `mrlkit serve` (:class:`Guard`): the loopback rule
of a keyless server, the API key, the body's size (413) and deadline (408), the bound on
each client's requests in flight (429 with ``Retry-After``, no unbounded queue), and the
Prometheus metrics of each request. Errors use OpenAI's body: ``{"error": {"message", "type",
"param", "code"}}``.

Example::

    >>> error_body("k must be 1..1,000", "invalid_request_error", "k", None)["error"]["param"]
    'k'
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import ServerConfig

def error_body(message: str, etype: str, param: str | None,
               code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


class ApiError(Exception):
    """An error answered to the client as it is."""

    def __init__(self, status: int, message: str, etype: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, etype, param, code
        self.headers = headers


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("mrlkit_requests_total", "Requests answered",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("mrlkit_request_seconds", "Request latency", ["route"],
                                 registry=r, buckets=(.001, .0025, .005, .01, .025, .05,
                                                      .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("mrlkit_encode_batch_size", "Texts per model call",
                               registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.embedded = Counter("mrlkit_embedded_texts_total", "Texts embedded (rate(): "
                                "embeddings per second)", registry=r)
        self.stage = Histogram("mrlkit_funnel_stage_ms", "Funnel stage time (ms)",
                               ["stage", "method"], registry=r,
                               buckets=(.1, .25, .5, 1, 2.5, 5, 10, 25, 50, 100, 250))
        self.in_flight = Gauge("mrlkit_requests_in_flight", "Requests being served",
                               registry=r)
        self.rejected = Counter("mrlkit_rejected_total", "Requests refused before a route",
                                ["reason"], registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_LOOPBACK_HOSTS = frozenset(("127.0.0.1", "localhost", "[::1]", "::1"))


def _host_name(value: bytes | None) -> str:
    """``Host``/``Origin`` without scheme and port: ``http://127.0.0.1:8000`` → ``127.0.0.1``."""
    text = (value or b"").decode("latin-1").strip().lower()
    text = text.split("://", 1)[-1].split("/", 1)[0]
    if text.startswith("["):
        return text[:text.find("]") + 1] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers


class Guard:
    """ASGI middleware: who may ask, how much, how fast — decided before any route runs,
    in this order:

    1. without API keys (a loopback-only server): a ``Host`` (and ``Origin``, when a
       browser sends one) that is not loopback is refused, so a web page cannot drive
       the server by DNS rebinding;
    2. with keys: a ``/v1/`` request without a valid key is refused (401) before its
       body is read or any slot is taken;
    3. the body is read whole, within ``body_seconds`` (408) and ``body_bytes`` (413),
       before the request takes a slot: a slow sender holds a socket, not a slot;
    4. each key has ``in_flight`` slots of its own, requests without a key share
       ``anonymous_in_flight`` (429 with ``Retry-After`` past them): one client cannot
       lock out another.

    Metrics are labelled by route template (unmatched paths share one label).
    """

    def __init__(self, app: ASGIApp, config: ServerConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics
        self.busy: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, started = [500], time.perf_counter()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        bucket = None
        try:
            bucket, limit = self._admit(scope)
            body = await self._body(scope, receive)
            if body is None:  # the client went away
                status[0] = 499
                return
            if self.busy.get(bucket, 0) >= limit:
                raise _Refused(429, "too_many_requests", f"{limit} requests of this client "
                               "are in flight; retry after a second", {"retry-after": "1"})
            self.busy[bucket] = self.busy.get(bucket, 0) + 1
            self.metrics.in_flight.inc()
            try:
                await self.app(scope, _replay(body, receive), sending)
            finally:
                self.busy[bucket] -= 1
                self.metrics.in_flight.dec()
        except _Refused as exc:
            status[0] = exc.status
            await self._refuse(send, exc)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.requests.labels(label, method, str(status[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)

    def _admit(self, scope: Scope) -> tuple[str, int]:
        """The bucket whose slots the request takes, and its size; raises _Refused."""
        config, limits = self.config, self.config.limits
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of repeated headers
        if not config.keys:
            for name in (b"host", b"origin"):
                if (name in headers or name == b"host") and \
                        _host_name(headers.get(name)) not in _LOOPBACK_HOSTS:
                    raise _Refused(421 if name == b"host" else 403, "not_loopback",
                                   f"this server has no API keys and answers loopback "
                                   f"only; the request's {name.decode().title()} is not "
                                   "a loopback address")
            return "local", limits.in_flight
        if not scope["path"].startswith("/v1/"):
            return "anonymous", limits.anonymous_in_flight
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        who = config.identify(token.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            raise _Refused(401, "invalid_api_key", "a valid API key is required: "
                           "Authorization: Bearer KEY", {"www-authenticate": "Bearer"})
        scope.setdefault("state", {})["mrlkit_role"] = who[1]
        return f"key{who[0]}", limits.in_flight

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when the client disconnected; raises _Refused."""
        limit = self.config.limits.body_bytes
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
        if length is not None:
            if not length.isdigit():
                raise _Refused(400, "bad_content_length", "Content-Length must be a "
                               "number of bytes")
            if int(length) > limit:
                raise _Refused(413, "body_too_large", f"the request body exceeds "
                               f"{limit:,} bytes")
        parts, size = [], 0
        try:
            async with asyncio.timeout(self.config.limits.body_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(413, "body_too_large", f"the request body exceeds "
                                       f"{limit:,} bytes")
                    parts.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(parts)
        except TimeoutError:
            raise _Refused(408, "body_timeout", f"the request body did not arrive within "
                           f"{self.config.limits.body_seconds:g} s") from None

    async def _refuse(self, send: Send, exc: _Refused) -> None:
        self.metrics.rejected.labels(exc.code).inc()
        etype = {429: "rate_limit_error", 401: "invalid_request_error"}.get(
            exc.status, "invalid_request_error")
        body = json.dumps(error_body(str(exc), etype, None, exc.code)).encode()
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()),
               *((k.encode(), v.encode()) for k, v in (exc.headers or {}).items())]
        if exc.status in (408, 413, 400, 421):  # the rest of the body is not read
            raw.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": exc.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read by the guard, handed to the app as one message; later calls wait
    on the client (for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay
