"""Operations: liveness, readiness (which names nothing) and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from .. import errors
from .guard import ApiError
from .shared import ERRORS, Shared

log = logging.getLogger("mrlkit.serve")


def operations(sh: Shared) -> APIRouter:
    router = APIRouter()

    @router.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", tags=["operations"], responses=ERRORS)
    async def ready() -> dict[str, str]:
        """Ready or not, and nothing more: anyone may ask (a load balancer does), so it
        names no store, model or error (the server's log does)."""
        if not sh.state.ready:
            raise ApiError(503, "not ready: loading models", "server_error",
                           code="not_ready")
        try:
            await run_in_threadpool(sh.store().set_names)  # reachable; no count
        except errors.MrlkitError as exc:
            log.warning("not ready: the store is unreachable: %s", exc)
            raise ApiError(503, "not ready: the store is unreachable (see the server's "
                           "log)", "server_error", code="store_unreachable") from None
        return {"status": "ready"}

    @router.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        body, ctype = sh.state.metrics.render()
        return Response(body, media_type=ctype)

    return router
