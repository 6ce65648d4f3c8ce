"""OpenAI-compatible embeddings: the served models and ``/v1/embeddings`` at any trained
prefix and precision."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from .. import vectors
from ..registry import get_spec
from . import schemas as s
from .shared import ERRORS, Shared, check_texts, dimensions, encode_row


def embeddings(sh: Shared) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models", tags=["embeddings"], response_model=s.ModelList,
                dependencies=[sh.role("read")], responses=ERRORS)
    async def models() -> s.ModelList:
        cards = []
        for name in sh.config.models:
            spec = get_spec(name)
            cards.append(s.ModelCard(id=name, dimensions=spec.native_dim,
                                     supports_mrl=spec.supports_mrl,
                                     mrl_dims=list(spec.mrl_dims) if spec.mrl_dims else None))
        return s.ModelList(data=cards)

    @router.post("/v1/embeddings", tags=["embeddings"], response_model=s.EmbeddingsResponse,
                 dependencies=[sh.role("read")], responses=ERRORS)
    async def embeddings(body: s.EmbeddingsRequest) -> s.EmbeddingsResponse:
        spec = sh.state.spec(body.model)
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        check_texts(texts, sh.config)
        dim = dimensions(spec, body.dimensions, sh.config.allow_non_mrl)
        x = await sh.state.batcher.embed(spec.name, body.kind, texts)
        x = vectors.truncate(x, dim) if dim != x.shape[1] else x
        cal = await run_in_threadpool(sh.state.calibration, spec, dim) \
            if body.precision == "int8" else None
        out = vectors.quantize(x, body.precision, cal)
        data = [s.Embedding(index=i, embedding=encode_row(row, body.encoding_format))
                for i, row in enumerate(out)]
        tokens = await run_in_threadpool(sh.state.tokens, spec.name, body.kind, texts)
        return s.EmbeddingsResponse(data=data, model=spec.name,
                                    usage=s.Usage(prompt_tokens=tokens, total_tokens=tokens))

    return router
