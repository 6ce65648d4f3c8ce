"""Embedding sets: create, list, add, delete, search, truncate, index — each a
:class:`~mrlkit.Store` call."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, BackgroundTasks
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from .. import vectors
from ..funnel import Adaptive
from . import schemas as s
from .guard import ApiError
from .shared import ERRORS, Shared, check_texts, parse_funnel


def sets(sh: Shared) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/sets", tags=["sets"], response_model=s.SetList,
                dependencies=[sh.role("read")], responses=ERRORS)
    async def list_sets() -> s.SetList:
        got = await run_in_threadpool(sh.store().list_sets)
        return s.SetList(data=[i.as_dict() for i in got])

    @router.post("/v1/sets", tags=["sets"], status_code=201, dependencies=[sh.role("write")],
                 responses=ERRORS)
    async def create_set(body: s.CreateSet) -> dict[str, Any]:
        sh.state.spec(body.model)
        got = await run_in_threadpool(lambda: sh.store().create_set(
            body.name, body.model, body.dimensions, storage=body.storage,
            allow_non_mrl=body.allow_non_mrl, recall=body.recall))
        return dict(got.as_dict())

    @router.get("/v1/sets/{name}", tags=["sets"], dependencies=[sh.role("read")],
                responses=ERRORS)
    async def get_set(name: str) -> dict[str, Any]:
        info = await run_in_threadpool(sh.store().info, name)
        return dict(info.as_dict())

    @router.delete("/v1/sets/{name}", tags=["sets"], response_model=s.Count,
                   dependencies=[sh.role("write")], responses=ERRORS)
    async def drop_set(name: str) -> s.Count:
        return s.Count(count=await run_in_threadpool(sh.store().drop_set, name))

    @router.post("/v1/sets/{name}/documents", tags=["sets"], response_model=s.Count,
                 dependencies=[sh.role("write")], responses=ERRORS)
    async def add_documents(name: str, body: s.AddDocuments,
                            background: BackgroundTasks) -> s.Count:
        docs = body.documents
        if len(docs) > sh.config.limits.documents:
            raise ApiError(400, f"at most {sh.config.limits.documents:,} documents per "
                           f"request, not {len(docs):,}", "invalid_request_error",
                           "documents")
        info = await run_in_threadpool(sh.store().record, name)  # not a count: see search
        spec = sh.state.spec(info.model)
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
            check_texts(texts, sh.config)
            got = await sh.state.batcher.embed(spec.name, "document", texts)
            x[to_embed] = vectors.truncate(got, info.stored_dim)
        added = await run_in_threadpool(lambda: sh.store().add(
            name, [d.id for d in docs], x, [d.text for d in docs],
            [d.metadata for d in docs], upsert=body.upsert))
        # after the answer, on a worker thread: a set past the size where a first stage
        # pays (or doubled since) is tuned, one tune per set at a time
        background.add_task(sh.tune_later, name)
        return s.Count(count=added)

    @router.post("/v1/sets/{name}/documents/delete", tags=["sets"], response_model=s.Count,
                 dependencies=[sh.role("write")], responses=ERRORS)
    async def delete_documents(name: str, body: s.DeleteDocuments) -> s.Count:
        if len(body.ids) > sh.config.limits.documents:
            raise ApiError(400, f"at most {sh.config.limits.documents:,} ids per request",
                           "invalid_request_error", "ids")
        return s.Count(count=await run_in_threadpool(sh.store().delete, name, body.ids))

    @router.post("/v1/sets/{name}/search", tags=["sets"], response_model=s.SearchResponse,
                 dependencies=[sh.role("read")], responses=ERRORS)
    async def search(name: str, body: s.SearchRequest) -> JSONResponse:
        if (body.query is None) == (body.vector is None):
            raise ApiError(400, "give a query (text) or a vector, not both or neither",
                           "invalid_request_error", "query")
        if body.k > sh.config.limits.k:
            raise ApiError(400, f"k must be 1..{sh.config.limits.k:,}, not {body.k}",
                           "invalid_request_error", "k")
        funnel = parse_funnel(body.funnel)
        # 404 before a shape's 400; the record, not get_set: its count of documents is a
        # scan of the set's rows (12 ms of every search at 100,000 rows)
        info = await run_in_threadpool(sh.store().record, name)
        if body.query is not None:
            texts = [body.query] if isinstance(body.query, str) else list(body.query)
            check_texts(texts, sh.config, most=min(sh.config.limits.queries,
                                                 sh.config.limits.inputs))
            q = vectors.truncate(await sh.state.batcher.embed(
                sh.state.spec(info.model).name, "query", texts), info.stored_dim)
        else:
            rows = body.vector if body.vector and isinstance(body.vector[0], list) \
                else [body.vector]
            if len({len(r) for r in rows}) > 1:  # type: ignore[arg-type]
                raise ApiError(400, "query vectors must all have the same length",
                               "invalid_request_error", "vector")
            q = np.asarray(rows, np.float32)
            if len(q) > sh.config.limits.queries:
                raise ApiError(400, f"at most {sh.config.limits.queries} queries per request",
                               "invalid_request_error", "vector")
        adaptive = Adaptive(body.adaptive) if body.adaptive is not None else None
        res = await sh.state.search(lambda: sh.store().search(
            name, q, k=body.k, funnel=funnel, filters=body.filter, adaptive=adaptive,
            recall=body.recall))
        for n, t in enumerate(res.timings):
            sh.state.metrics.stage.labels(stage=str(n), method=t.method).observe(t.ms)
        # built as plain JSON: FastAPI re-validating the model costs ~1 ms a search
        return JSONResponse({
            "hits": [[{"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata}
                      for h in hits] for hits in res.hits],
            "timings": [{"dim": t.dim, "precision": t.precision, "keep": t.keep, "ms": t.ms,
                         "method": t.method} for t in res.timings],
            "dims_used": res.dims_used, "funnel": res.funnel, "path": res.path,
            "notes": res.notes})

    @router.post("/v1/sets/{name}/truncate", tags=["sets"], dependencies=[sh.role("write")],
                 responses=ERRORS)
    async def truncate(name: str, body: s.TruncateSet) -> dict[str, Any]:
        got = await run_in_threadpool(lambda: sh.store().truncate(
            name, body.dimensions, allow_non_mrl=body.allow_non_mrl))
        return dict(got.as_dict())

    @router.post("/v1/sets/{name}/index", tags=["sets"], response_model=s.Built,
                 dependencies=[sh.role("write")], responses=ERRORS)
    async def index(name: str, body: s.IndexSet) -> s.Built:
        funnel = parse_funnel(body.funnel)
        assert funnel is not None
        return s.Built(built=await run_in_threadpool(sh.store().index, name, funnel))

    return router
