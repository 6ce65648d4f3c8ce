"""The FastAPI app of `mrlkit serve`: OpenAI-compatible embeddings, embedding sets and
their search, over the public Python API (every route calls a :class:`~mrlkit.Store`
method or the registry; model calls go through one :class:`.MicroBatcher`). One module
per route group: :mod:`.routes_ops`, :mod:`.routes_embeddings`, :mod:`.routes_sets`;
the security rules live in :class:`.ServerConfig` (no keys: loopback only) and the
:class:`.Guard` middleware.

Example::

    >>> from mrlkit.server import ServerConfig, create_app
    >>> app = create_app(ServerConfig(store="/tmp/mrlkit-serve"))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from .. import __version__
from ..stores import open_store
from . import errors
from .config import ServerConfig
from .guard import Guard
from .openapi import document_limits
from .routes_embeddings import embeddings
from .routes_ops import operations
from .routes_sets import sets
from .shared import Shared

log = logging.getLogger("mrlkit.serve")


def create_app(config: ServerConfig) -> FastAPI:
    """The app for ``config`` (its checks ran when it was made: no keys, loopback only)."""
    sh = Shared(config)
    state = sh.state

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        state.store = await run_in_threadpool(open_store, config.store)
        for model in config.models:  # loaded before the first request, on its thread
            await loop.run_in_executor(state.batcher.executor, state._encode, model,
                                       "document", ["warm-up"])
        state.ready = True
        log.info("ready: store %s, models %s", state.store.location, config.models)
        yield
        state.ready = False
        await state.batcher.close()  # after uvicorn has let in-flight requests finish
        state.searches.shutdown(wait=True)
        await run_in_threadpool(state.store.close)

    app = FastAPI(title="mrlkit", version=__version__, lifespan=lifespan,
                  description="Matryoshka embeddings: OpenAI-compatible `/v1/embeddings` "
                  "at any trained prefix and precision, embedding sets and tiered search.")
    app.add_middleware(Guard, config=config, metrics=state.metrics)
    errors.install(app)
    for group in (operations, embeddings, sets):
        app.include_router(group(sh))
    document_limits(app, config)
    return app
