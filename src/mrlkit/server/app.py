"""The FastAPI app of `mrlkit serve`: OpenAI-compatible embeddings, embedding sets and
their search, over the public Python API (every route calls a :class:`~mrlkit.Store`
method or the registry; model calls go through one :class:`.MicroBatcher`).

Example::

    >>> from mrlkit.server import ServerConfig, create_app
    >>> app = create_app(ServerConfig(store="/tmp/mrlkit-serve"))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from .. import __version__, errors, vectors
from ..text import problem
from ..funnel import Adaptive, Funnel
from ..providers import get_provider
from ..registry import ModelSpec, get_spec, validate_dim
from ..stores import Store, open_store
from . import schemas as s
from .batching import MicroBatcher
from .config import ServerConfig
from .guard import ApiError, Guard, Metrics, error_body

log = logging.getLogger("mrlkit.serve")
bearer = HTTPBearer(auto_error=False, description="An API key (`--api-key-file`, "
                    "`MRLKIT_API_KEYS`); none when the server runs without keys.")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse}
    for code in (400, 401, 403, 404, 408, 409, 413, 421, 429, 502, 503)}


class State:
    """What the routes share: the store, the encoder, the metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.batcher = MicroBatcher(self._encode, max_batch=config.limits.max_batch,
                                    max_wait_ms=config.limits.max_wait_ms,
                                    observe=self.metrics.batch.observe)
        self.store: Store[Any] | None = None
        self.ready = False
        self._calibrations: dict[tuple[str, int], Any] = {}

    def _encode(self, model: str, kind: str, texts: list[str]) -> np.ndarray:
        """One model call, on the encoder's thread: unit rows at the native dimension."""
        spec = get_spec(model)
        local = spec.provider == "sentence-transformers"
        provider = get_provider(spec, quiet=True,
                                **({"backend": self.config.backend} if local else {}))
        x = provider.embed(texts, kind=kind)  # type: ignore[arg-type]
        self.metrics.embedded.inc(len(texts))
        return np.asarray(x, np.float32)

    def spec(self, model: str) -> ModelSpec:
        if model not in self.config.models:
            raise ApiError(404, f"the model {model!r} is not served here; served: "
                           f"{', '.join(self.config.models)} (GET /v1/models)",
                           "invalid_request_error", "model", "model_not_found")
        return get_spec(model)

    def calibration(self, spec: ModelSpec, dim: int) -> Any:
        """The model's reference int8 calibration at ``dim``, made on the encoder thread."""
        key = (spec.name, dim)
        if key not in self._calibrations:
            from ..embedder import Embedder

            made = self.batcher.executor.submit(lambda: Embedder(
                spec, dim, "int8", allow_non_mrl=True).calibration).result()
            self._calibrations[key] = made.calibration if made else None
        return self._calibrations[key]


def create_app(config: ServerConfig) -> FastAPI:
    state = State(config)

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
        await run_in_threadpool(state.store.close)

    app = FastAPI(title="mrlkit", version=__version__, lifespan=lifespan,
                  description="Matryoshka embeddings: OpenAI-compatible `/v1/embeddings` "
                  "at any trained prefix and precision, embedding sets and tiered search.")
    app.add_middleware(Guard, config=config, metrics=state.metrics)
    _handlers(app)

    def role(need: str) -> Any:
        async def check(request: Request,
                        creds: HTTPAuthorizationCredentials | None = Depends(bearer)
                        ) -> None:
            if not config.keys:
                return
            got = request.scope.get("state", {}).get("mrlkit_role")  # set by the Guard
            if got is None:
                raise ApiError(401, "a valid API key is required: Authorization: Bearer KEY",
                               "invalid_request_error", code="invalid_api_key")
            if need == "write" and got != "write":
                raise ApiError(403, "this API key is read-only", "permission_error",
                               code="read_only_key")
        return Depends(check)

    def store() -> Store[Any]:
        if state.store is None:
            raise ApiError(503, "the store is not open yet", "server_error", code="not_ready")
        return state.store

    # --- operations -------------------------------------------------------------------
    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], responses=ERRORS)
    async def ready() -> dict[str, str]:
        """Ready or not, and nothing more: anyone may ask (a load balancer does), so it
        names no store, model or error (the server's log does)."""
        if not state.ready:
            raise ApiError(503, "not ready: loading models", "server_error",
                           code="not_ready")
        try:
            await run_in_threadpool(store().list_sets)
        except errors.MrlkitError as exc:
            log.warning("not ready: the store is unreachable: %s", exc)
            raise ApiError(503, "not ready: the store is unreachable (see the server's "
                           "log)", "server_error", code="store_unreachable") from None
        return {"status": "ready"}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    # --- embeddings -------------------------------------------------------------------
    @app.get("/v1/models", tags=["embeddings"], response_model=s.ModelList,
             dependencies=[role("read")], responses=ERRORS)
    async def models() -> s.ModelList:
        cards = []
        for name in config.models:
            spec = get_spec(name)
            cards.append(s.ModelCard(id=name, dimensions=spec.native_dim,
                                     supports_mrl=spec.supports_mrl,
                                     mrl_dims=list(spec.mrl_dims) if spec.mrl_dims else None))
        return s.ModelList(data=cards)

    @app.post("/v1/embeddings", tags=["embeddings"], response_model=s.EmbeddingsResponse,
              dependencies=[role("read")], responses=ERRORS)
    async def embeddings(body: s.EmbeddingsRequest) -> s.EmbeddingsResponse:
        spec = state.spec(body.model)
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        _check_texts(texts, config)
        dim = _dimensions(spec, body.dimensions, config.allow_non_mrl)
        x = await state.batcher.embed(spec.name, body.kind, texts)
        x = vectors.truncate(x, dim) if dim != x.shape[1] else x
        cal = await run_in_threadpool(state.calibration, spec, dim) \
            if body.precision == "int8" else None
        out = vectors.quantize(x, body.precision, cal)
        data = [s.Embedding(index=i, embedding=_encode_row(row, body.encoding_format))
                for i, row in enumerate(out)]
        tokens = sum(len(t.split()) for t in texts)
        return s.EmbeddingsResponse(data=data, model=spec.name,
                                    usage=s.Usage(prompt_tokens=tokens, total_tokens=tokens))

    # --- sets -------------------------------------------------------------------------
    @app.get("/v1/sets", tags=["sets"], response_model=s.SetList,
             dependencies=[role("read")], responses=ERRORS)
    async def list_sets() -> s.SetList:
        got = await run_in_threadpool(store().list_sets)
        return s.SetList(data=[i.as_dict() for i in got])

    @app.post("/v1/sets", tags=["sets"], status_code=201, dependencies=[role("write")],
              responses=ERRORS)
    async def create_set(body: s.CreateSet) -> dict[str, Any]:
        state.spec(body.model)
        got = await run_in_threadpool(lambda: store().create_set(
            body.name, body.model, body.dimensions, storage=body.storage,
            allow_non_mrl=body.allow_non_mrl))
        return dict(got.as_dict())

    @app.get("/v1/sets/{name}", tags=["sets"], dependencies=[role("read")],
             responses=ERRORS)
    async def get_set(name: str) -> dict[str, Any]:
        info = await run_in_threadpool(store().info, name)
        return dict(info.as_dict())

    @app.delete("/v1/sets/{name}", tags=["sets"], response_model=s.Count,
                dependencies=[role("write")], responses=ERRORS)
    async def drop_set(name: str) -> s.Count:
        await run_in_threadpool(store().drop_set, name)
        return s.Count(count=1)

    @app.post("/v1/sets/{name}/documents", tags=["sets"], response_model=s.Count,
              dependencies=[role("write")], responses=ERRORS)
    async def add_documents(name: str, body: s.AddDocuments) -> s.Count:
        docs = body.documents
        if len(docs) > config.limits.documents:
            raise ApiError(400, f"at most {config.limits.documents:,} documents per "
                           f"request, not {len(docs):,}", "invalid_request_error",
                           "documents")
        info = await run_in_threadpool(store().get_set, name)
        spec = state.spec(info.model)
        x = np.zeros((len(docs), info.stored_dim), np.float32)
        to_embed = [i for i, d in enumerate(docs) if d.vector is None]
        for i, d in enumerate(docs):
            if d.vector is None and not d.text:
                raise ApiError(400, f"document {d.id!r} has neither a text nor a vector",
                               "invalid_request_error", "documents")
            if d.vector is not None:
                if len(d.vector) != info.stored_dim:
                    raise ApiError(400, f"document {d.id!r}: a vector of {len(d.vector)} "
                                   f"values where the set stores {info.stored_dim}",
                                   "invalid_request_error", "documents")
                x[i] = d.vector
        if to_embed:
            texts = [docs[i].text or "" for i in to_embed]
            _check_texts(texts, config)
            got = await state.batcher.embed(spec.name, "document", texts)
            x[to_embed] = vectors.truncate(got, info.stored_dim)
        added = await run_in_threadpool(lambda: store().add(
            name, [d.id for d in docs], x, [d.text for d in docs],
            [d.metadata for d in docs], upsert=body.upsert))
        return s.Count(count=added)

    @app.post("/v1/sets/{name}/documents/delete", tags=["sets"], response_model=s.Count,
              dependencies=[role("write")], responses=ERRORS)
    async def delete_documents(name: str, body: s.DeleteDocuments) -> s.Count:
        if len(body.ids) > config.limits.documents:
            raise ApiError(400, f"at most {config.limits.documents:,} ids per request",
                           "invalid_request_error", "ids")
        return s.Count(count=await run_in_threadpool(store().delete, name, body.ids))

    @app.post("/v1/sets/{name}/search", tags=["sets"], response_model=s.SearchResponse,
              dependencies=[role("read")], responses=ERRORS)
    async def search(name: str, body: s.SearchRequest) -> JSONResponse:
        if (body.query is None) == (body.vector is None):
            raise ApiError(400, "give a query (text) or a vector, not both or neither",
                           "invalid_request_error", "query")
        if body.k > config.limits.k:
            raise ApiError(400, f"k must be 1..{config.limits.k:,}, not {body.k}",
                           "invalid_request_error", "k")
        funnel = _funnel(body.funnel)
        info = await run_in_threadpool(store().get_set, name)  # 404 before a shape's 400
        if body.query is not None:
            texts = [body.query] if isinstance(body.query, str) else list(body.query)
            _check_texts(texts, config, most=min(config.limits.queries,
                                                 config.limits.inputs))
            q = vectors.truncate(await state.batcher.embed(
                state.spec(info.model).name, "query", texts), info.stored_dim)
        else:
            rows = body.vector if body.vector and isinstance(body.vector[0], list) \
                else [body.vector]
            if len({len(r) for r in rows}) > 1:  # type: ignore[arg-type]
                raise ApiError(400, "query vectors must all have the same length",
                               "invalid_request_error", "vector")
            q = np.asarray(rows, np.float32)
            if len(q) > config.limits.queries:
                raise ApiError(400, f"at most {config.limits.queries} queries per request",
                               "invalid_request_error", "vector")
        adaptive = Adaptive(body.adaptive) if body.adaptive is not None else None
        res = await run_in_threadpool(lambda: store().search(
            name, q, k=body.k, funnel=funnel, filters=body.filter, adaptive=adaptive))
        for n, t in enumerate(res.timings):
            state.metrics.stage.labels(stage=str(n), method=t.method).observe(t.ms)
        # built as plain JSON: FastAPI re-validating the model costs ~1 ms a search
        return JSONResponse({
            "hits": [[{"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata}
                      for h in hits] for hits in res.hits],
            "timings": [{"dim": t.dim, "precision": t.precision, "keep": t.keep, "ms": t.ms,
                         "method": t.method} for t in res.timings],
            "dims_used": res.dims_used, "funnel": res.funnel, "path": res.path,
            "notes": res.notes})

    @app.post("/v1/sets/{name}/truncate", tags=["sets"], dependencies=[role("write")],
              responses=ERRORS)
    async def truncate(name: str, body: s.TruncateSet) -> dict[str, Any]:
        got = await run_in_threadpool(lambda: store().reindex(
            name, body.dimensions, allow_non_mrl=body.allow_non_mrl))
        return dict(got.as_dict())

    @app.post("/v1/sets/{name}/index", tags=["sets"], response_model=s.Built,
              dependencies=[role("write")], responses=ERRORS)
    async def index(name: str, body: s.IndexSet) -> s.Built:
        funnel = _funnel(body.funnel)
        assert funnel is not None
        return s.Built(built=await run_in_threadpool(store().index, name, funnel))

    _document_limits(app, config)
    return app


def _document_limits(app: FastAPI, config: ServerConfig) -> None:
    """The OpenAPI document states this server's own limits (``--max-k``, ``--max-inputs``,
    ``--max-chars``…), so that a request the document allows is one the server takes."""
    made = app.openapi
    lim = config.limits

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = made()
        comps = schema["components"]["schemas"]

        def texts(prop: dict[str, Any], most: int) -> None:
            for alt in prop.get("anyOf", [prop]):
                if alt.get("type") == "string":
                    alt["maxLength"] = lim.chars
                elif alt.get("type") == "array":
                    alt["maxItems"] = most
                    alt["items"]["maxLength"] = lim.chars
        texts(comps["EmbeddingsRequest"]["properties"]["input"], lim.inputs)
        search = comps["SearchRequest"]["properties"]
        texts(search["query"], min(lim.queries, lim.inputs))
        search["k"]["maximum"] = lim.k
        for alt in search["vector"]["anyOf"]:
            if alt["items"].get("type") == "array":
                alt["maxItems"] = lim.queries
        comps["AddDocuments"]["properties"]["documents"]["maxItems"] = lim.documents
        comps["DeleteDocuments"]["properties"]["ids"]["maxItems"] = lim.documents
        for alt in comps["DocumentIn"]["properties"]["text"]["anyOf"]:
            if alt.get("type") == "string":
                alt["maxLength"] = lim.chars
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _check_texts(texts: list[str], config: ServerConfig, most: int | None = None) -> None:
    limit = most or config.limits.inputs
    if not texts or len(texts) > limit:
        raise ApiError(400, f"give 1..{limit:,} inputs, not {len(texts):,}",
                       "invalid_request_error", "input")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ApiError(400, f"input {i} is empty", "invalid_request_error", "input")
        if len(t) > config.limits.chars:
            raise ApiError(400, f"input {i} has {len(t):,} characters; the limit is "
                           f"{config.limits.chars:,}", "invalid_request_error", "input")
        bad = problem(t)  # before batching: a bad text must fail its own request only
        if bad is not None:
            raise ApiError(400, f"input {i} holds {bad}: text must be valid Unicode "
                           "without NUL", "invalid_request_error", "input")


def _dimensions(spec: ModelSpec, dim: int | None, allow_non_mrl: bool) -> int:
    if dim is not None and not spec.supports_mrl and not allow_non_mrl:
        raise ApiError(400, f"{spec.name} is not Matryoshka-trained: its prefixes lose "
                       "quality, so `dimensions` needs a server started with "
                       "--allow-non-mrl", "invalid_request_error", "dimensions",
                       "model_not_matryoshka")
    try:
        return validate_dim(spec, dim, allow_non_mrl=True)
    except errors.DimensionError as exc:  # the registry's message names what is allowed
        raise ApiError(400, str(exc), "invalid_request_error", "dimensions",
                       "invalid_dimensions") from None


def _funnel(text: str | None) -> Funnel | None:
    if text is None:
        return None
    try:
        return Funnel.parse(text)
    except (errors.MrlkitError, ValueError) as exc:
        raise ApiError(400, str(exc), "invalid_request_error", "funnel") from None


def _encode_row(row: np.ndarray, fmt: str) -> list[float] | list[int] | str:
    if fmt == "base64":  # OpenAI's: the little-endian bytes (float32 unless precision says)
        return base64.b64encode(row.astype(row.dtype.newbyteorder("<")).tobytes()).decode()
    if row.dtype.kind == "f":
        return [float(v) for v in row.astype(np.float32)]
    return [int(v) for v in row]


STATUS = [(errors.SetNotFoundError, 404, "not_found_error", "set_not_found"),
          (errors.UnknownModelError, 404, "invalid_request_error", "model_not_found"),
          (errors.SetExistsError, 409, "invalid_request_error", "set_exists"),
          (errors.ReembedRequiredError, 409, "invalid_request_error", "reembed_required"),
          (errors.DimensionError, 400, "invalid_request_error", "invalid_dimensions"),
          (errors.InvalidInputError, 400, "invalid_request_error", None),
          (errors.InvalidVectorError, 400, "invalid_request_error", None),
          (errors.StoreError, 503, "server_error", "store_error"),
          (errors.ProviderError, 502, "server_error", "provider_error"),
          (errors.MrlkitError, 400, "invalid_request_error", None)]


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), exc.type, exc.param, exc.code),
                            exc.status, headers=exc.headers)

    @app.exception_handler(errors.MrlkitError)
    async def mrlkit_error(request: Request, exc: errors.MrlkitError) -> JSONResponse:
        for kind, status, etype, code in STATUS:
            if isinstance(exc, kind):
                return JSONResponse(error_body(str(exc), etype, None, code), status)
        raise AssertionError("unreachable: MrlkitError is the last row")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        etype = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only one route's
            allowed = {m for r in request.app.router.routes
                       if isinstance(r, APIRoute) and r.matches(request.scope)[0] != Match.NONE
                       for m in r.methods or ()}
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse(error_body(str(exc.detail), etype, None, None), exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = str(first.get("msg", "invalid"))
        if "unicode string" in msg:  # pydantic's words for a lone surrogate
            msg = "holds a lone surrogate: text must be valid Unicode without NUL"
        elif first.get("type") == "string_pattern_mismatch" and \
                "x00" in str(first.get("ctx", {}).get("pattern", "")):
            got = first.get("input")
            msg = ("holds a NUL character (U+0000): text must be valid Unicode without NUL"
                   if isinstance(got, str) and "\x00" in got else
                   "is empty or only whitespace: give a text to embed")
        return JSONResponse(error_body(f"{where or 'request'}: {msg}",
                                       "invalid_request_error", where or None, None), 400)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error (logged on the server)",
                                       "server_error", None, "internal_error"), 500)
