"""What stands before every route of `mrlkit serve`: the body-size limit (413), the bound
on requests in flight (429 with ``Retry-After``, no unbounded queue), and the Prometheus
metrics of each request. Errors use OpenAI's body: ``{"error": {"message", "type",
"param", "code"}}``.

Example::

    >>> error_body("k must be 1..1,000", "invalid_request_error", "k", None)["error"]["param"]
    'k'
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import ServerConfig

OPEN_PATHS = ("/health", "/ready", "/metrics", "/docs", "/openapi.json", "/redoc")


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


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: limits and metrics around every request."""

    def __init__(self, app: ASGIApp, config: ServerConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits, path = self.config.limits, scope["path"]
        guarded = path.startswith("/v1/")
        length = dict(scope["headers"]).get(b"content-length")
        if guarded and length is not None and (not length.isdigit()
                                               or int(length) > limits.body_bytes):
            await self._refuse(send, 413, "body_too_large", f"the request body exceeds "
                               f"{limits.body_bytes:,} bytes")
            return
        if guarded and self.in_flight >= limits.in_flight:
            await self._refuse(send, 429, "too_many_requests", f"{limits.in_flight} requests "
                               "are in flight; retry after a second", {"retry-after": "1"})
            return
        received, status, started = 0, [500], time.perf_counter()

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limits.body_bytes:
                    raise _TooLarge
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, limited if guarded else receive, sending)
        except _TooLarge:
            await self._refuse(send, 413, "body_too_large", f"the request body exceeds "
                               f"{limits.body_bytes:,} bytes")
            status[0] = 413
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or ("other" if guarded else path)
            self.metrics.requests.labels(label, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)

    async def _refuse(self, send: Send, status: int, code: str, message: str,
                      headers: dict[str, str] | None = None) -> None:
        self.metrics.rejected.labels(code).inc()
        etype = "rate_limit_error" if status == 429 else "invalid_request_error"
        body = json.dumps(error_body(message, etype, None, code)).encode()
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()),
               *((k.encode(), v.encode()) for k, v in (headers or {}).items())]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
