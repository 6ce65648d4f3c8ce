"""Request and response bodies of `mrlkit serve` (OpenAI's shapes for embeddings and
errors; mrlkit's own for sets). They make the OpenAPI document at ``/openapi.json``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool


class Strict(BaseModel):
    """JSON types as written: ``"5"`` is not a number, ``true`` not a 1 (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class EmbeddingsRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings``, plus ``precision`` and ``kind``."""

    # OpenAI clients may send more (user, …); types as written, as in Strict
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(description="A text or a list of texts.")
    dimensions: int | None = Field(None, ge=1, le=65_536, description=(
        "A prefix length the model was trained for (Matryoshka); the vector is "
        "re-normalised."))
    encoding_format: Literal["float", "base64"] = "float"
    precision: Literal["float32", "float16", "int8", "binary"] = Field("float32", description=(
        "mrlkit: float16/int8 values, or binary sign bits packed 8 per byte (base64: "
        "the raw bytes, little-endian)."))
    kind: Literal["query", "document"] = Field("document", description=(
        "mrlkit: the model's query or document prompt."))


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "mrlkit"
    dimensions: int
    supports_mrl: bool
    mrl_dims: list[int] | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class CreateSet(Strict):
    name: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    dimensions: int | None = Field(None, ge=1, le=65_536, description="truncate_dim")
    storage: Literal["float16", "float32"] = "float16"
    allow_non_mrl: bool = False


class DocumentIn(Strict):
    id: str = Field(min_length=1, max_length=1_000)
    text: str | None = None
    vector: list[float] | None = Field(None, description="At the set's stored dimension; "
                                       "without it the server embeds the text.")
    metadata: dict[str, Scalar] | None = None


class AddDocuments(Strict):
    documents: list[DocumentIn] = Field(min_length=1)
    upsert: bool = False


class DeleteDocuments(Strict):
    ids: list[str] = Field(min_length=1)


class SearchRequest(Strict):
    query: str | list[str] | None = Field(None, description="Text(s), embedded with the "
                                          "set's model and query prompt.")
    vector: list[float] | list[list[float]] | None = None
    k: int = Field(10, ge=1)
    funnel: str | None = Field(None, max_length=200, examples=["64:float32:50,768"])
    filter: dict[str, Scalar] | None = None
    adaptive: float | None = Field(None, gt=0, lt=1, description=(
        "Early exit (an experiment, docs/search.md): a query decided by this margin after "
        "a stage skips the rest."))


class TruncateSet(Strict):
    dimensions: int = Field(ge=1, le=65_536)
    allow_non_mrl: bool = False


class IndexSet(Strict):
    funnel: str = Field(min_length=1, max_length=200)


class HitOut(BaseModel):
    id: str
    score: float
    text: str | None
    metadata: dict[str, Any]


class TimingOut(BaseModel):
    dim: int
    precision: str
    keep: int
    ms: float
    method: str


class SearchResponse(BaseModel):
    hits: list[list[HitOut]]
    timings: list[TimingOut]
    funnel: str | None


class Count(BaseModel):
    count: int


class Built(BaseModel):
    built: list[str]


class SetList(BaseModel):
    data: list[dict[str, Any]]
