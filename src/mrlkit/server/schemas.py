"""Request and response bodies of `mrlkit serve` (OpenAI's shapes for embeddings and
errors; mrlkit's own for sets). They make the OpenAPI document at ``/openapi.json``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# a funnel as Funnel.parse reads it: DIM[:PRECISION][:KEEP] stages, by commas
FUNNEL = (r"^ *[0-9]+(:(float32|float16|int8|binary|[0-9]+)){0,2} *"
          r"(, *[0-9]+(:(float32|float16|int8|binary|[0-9]+)){0,2} *)*$")


def _integral(value: Any) -> Any:
    """JSON Schema's integer: 5 and 5.0 are integers, ``"5"`` and ``true`` are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# (constraints before the validator: after it, pydantic writes them as "ge"/"le", which
# JSON Schema does not know)
Dim = Annotated[int, Field(ge=1, le=65_536), BeforeValidator(_integral)]
Positive = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
# the document says what the core refuses: text holds no NUL (and, to embed, more than
# whitespace); a lone surrogate cannot be written in a JSON Schema pattern
Text = Annotated[str, Field(pattern=r"^[^\x00]*\S[^\x00]*$")]
Plain = Annotated[str, Field(pattern=r"^[^\x00]*$")]
Scalar = Plain | int | float | bool


class Strict(BaseModel):
    """JSON types as written: ``"5"`` is not a number, ``true`` not a 1 (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class EmbeddingsRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings``, plus ``precision`` and ``kind``."""

    # OpenAI clients may send more (user, …); types as written, as in Strict
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1, max_length=200)
    input: Text | list[Text] = Field(description="A text or a list of texts.")
    dimensions: Dim | None = Field(None, description=(
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
    dimensions: Dim | None = Field(None, description="truncate_dim")
    storage: Literal["float16", "float32"] = "float16"
    allow_non_mrl: bool = False
    recall: float | None = Field(None, gt=0, le=1, description=(
        "The set's recall@10 target against exact search (default 0.95): its tunes "
        "keep it."))


class DocumentIn(Strict):
    id: Plain = Field(min_length=1, max_length=1_000)
    text: Text | None = None
    vector: list[float] | None = Field(None, description="At the set's stored dimension; "
                                       "without it the server embeds the text.")
    metadata: dict[Plain, Scalar] | None = None


class AddDocuments(Strict):
    documents: list[DocumentIn] = Field(min_length=1)
    upsert: bool = False


class DeleteDocuments(Strict):
    ids: list[Annotated[Plain, Field(min_length=1, max_length=1_000)]] = Field(min_length=1)


def _query_or_vector(schema: dict[str, Any]) -> None:
    """The document says what the route checks: exactly one of query and vector."""
    props = schema["properties"]
    for name in ("query", "vector"):
        props[name]["anyOf"] = [a for a in props[name]["anyOf"] if a.get("type") != "null"]
        props[name].pop("default", None)
    schema["oneOf"] = [{"required": ["query"]}, {"required": ["vector"]}]


class SearchRequest(Strict):
    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra=_query_or_vector)

    query: Text | list[Text] | None = Field(None, description="Text(s), embedded with the "
                                          "set's model and query prompt.")
    vector: list[float] | list[list[float]] | None = None
    k: Positive = 10
    funnel: str | None = Field(None, max_length=200, pattern=FUNNEL,
                               examples=["64:float32:50,768"])
    filter: dict[Plain, Scalar] | None = None
    adaptive: float | None = Field(None, gt=0, lt=1, description=(
        "Early exit (an experiment, docs/search.md): a query decided by this margin after "
        "a stage skips the rest."))
    recall: float | None = Field(None, gt=0, le=1, description=(
        "Without a funnel: the cheapest plan `sets tune` measured to keep this recall@10 "
        "(default: the set's target); the response's funnel says what ran."))


class TruncateSet(Strict):
    dimensions: Dim
    allow_non_mrl: bool = False


class IndexSet(Strict):
    funnel: str = Field(min_length=1, max_length=200, pattern=FUNNEL)


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
    dims_used: list[list[int]] = Field(default_factory=list, description=(
        "The stage dimensions each query went through (fewer with adaptive early exit)."))
    funnel: str = Field(description="The funnel that ran: the request's, or the one "
                        "mrlkit chose for the set when the request named none.")
    path: str = Field(description="native: the engine's own first stage ran (an HNSW "
                      "graph, SQL, a Qdrant or Chroma query); generic: mrlkit ran every "
                      "stage over the stored vectors.")
    notes: list[str] = Field(default_factory=list, description=(
        "What the search had to do otherwise, e.g. an index that could not be written "
        "(a full disk) and the exact scan that answered instead."))


class Count(BaseModel):
    count: int = Field(description="Documents added, deleted, or held by a dropped set.")


class Built(BaseModel):
    built: list[str]


class SetList(BaseModel):
    data: list[dict[str, Any]]
