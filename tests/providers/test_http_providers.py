"""The Ollama and OpenAI clients against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import pytest

from mrlkit import errors, vectors
from mrlkit.providers.ollama import OllamaProvider
from mrlkit.providers.openai import OpenAIProvider
from mrlkit.registry import get_spec

from .fake_servers import FakeOllama, FakeOpenAI, fake_vector


@pytest.fixture
def openai_server():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def ollama_server():
    server = FakeOllama()
    yield server
    server.close()


def openai(server, model="text-embedding-3-small", **kw):
    kw.setdefault("api_key", "test-key")
    kw.setdefault("backoff", 0.01)
    return OpenAIProvider(get_spec(model), base_url=server.url + "/v1", **kw)


# --- OpenAI ------------------------------------------------------------------------
def test_openai_sends_dimensions_and_returns_unit_vectors(openai_server):
    out = openai(openai_server).embed(["a", "b", "c"], dim=256)
    assert out.shape == (3, 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    sent = openai_server.requests[0]["json"]
    assert sent["dimensions"] == 256
    assert sent["model"] == "text-embedding-3-small"
    assert sent["input"] == ["a", "b", "c"]
    assert sent["encoding_format"] == "float"
    # rows follow the documented 'index', not the (reversed) arrival order
    expected = vectors.normalize(np.array([fake_vector(t, 256) for t in "abc"]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_openai_native_dim_sends_no_dimensions(openai_server):
    out = openai(openai_server).embed(["a"], dim=None)
    assert out.shape == (1, 1536)
    assert "dimensions" not in openai_server.requests[0]["json"]


def test_openai_key_from_environment(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    provider = OpenAIProvider(get_spec("text-embedding-3-small"),
                              base_url=openai_server.url + "/v1")
    assert provider.embed(["x"], dim=64).shape == (1, 64)
    assert openai_server.headers[0]["Authorization"] == "Bearer test-key"


def test_openai_401_is_an_authentication_error(openai_server):
    with pytest.raises(errors.AuthenticationError, match="Incorrect API key"):
        openai(openai_server, api_key="wrong").embed(["a"], dim=256)
    assert len(openai_server.requests) == 1  # never retried


def test_openai_400_and_404_are_clear(openai_server):
    openai_server.queue(400, {"error": {"message": "'input' is too long"}})
    with pytest.raises(errors.BadRequestError, match="too long"):
        openai(openai_server).embed(["a"])
    openai_server.queue(404, {"error": {"message": "The model `x` does not exist"}})
    with pytest.raises(errors.ModelNotFoundError, match="does not exist"):
        openai(openai_server).embed(["a"])


def test_openai_429_with_retry_after_then_success(openai_server):
    openai_server.queue(429, {"error": {"message": "Rate limit reached"}},
                        {"Retry-After": "0.05"})
    out = openai(openai_server, backoff=5.0).embed(["a"], dim=32)  # Retry-After wins
    assert out.shape == (1, 32)
    assert len(openai_server.requests) == 2


def test_openai_429_forever_gives_rate_limit_error(openai_server):
    for _ in range(3):
        openai_server.queue(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    with pytest.raises(errors.RateLimitError, match="429"):
        openai(openai_server, max_retries=2).embed(["a"])
    assert len(openai_server.requests) == 3


def test_openai_500_then_success(openai_server):
    openai_server.queue(500, {"error": {"message": "internal"}})
    openai_server.queue(503, b"upstream down")
    assert openai(openai_server).embed(["a"], dim=16).shape == (1, 16)
    assert len(openai_server.requests) == 3


def test_openai_500_forever_gives_server_error(openai_server):
    for _ in range(2):
        openai_server.queue(500, b"boom")
    with pytest.raises(errors.ServerError, match="500"):
        openai(openai_server, max_retries=1).embed(["a"])


def test_openai_malformed_json(openai_server):
    openai_server.queue(200, b"{not json")
    with pytest.raises(errors.BadResponseError, match="invalid JSON"):
        openai(openai_server).embed(["a"])
    openai_server.queue(200, {"object": "list"})
    with pytest.raises(errors.BadResponseError, match="expected 1 embeddings"):
        openai(openai_server).embed(["a"])


def test_openai_wrong_dimension_is_refused(openai_server):
    openai_server.wrong_dim = 512
    with pytest.raises(errors.DimensionError, match="512-d.*expected 256"):
        openai(openai_server).embed(["a"], dim=256)


def test_openai_empty_input_makes_no_request(openai_server):
    out = openai(openai_server).embed([], dim=256)
    assert out.shape == (0, 256)
    assert openai_server.requests == []


def test_openai_ten_thousand_inputs_are_batched(openai_server):
    texts = [f"text {i}" for i in range(10_000)]
    out = openai(openai_server, batch_size=2048).embed(texts, dim=8)
    assert out.shape == (10_000, 8)
    sizes = [len(r["json"]["input"]) for r in openai_server.requests]
    assert sizes == [2048] * 4 + [10_000 - 4 * 2048]
    np.testing.assert_allclose(out[9_999], vectors.normalize(
        np.array([fake_vector("text 9999", 8)]))[0], rtol=1e-5)


def test_openai_unreachable_server_is_a_connection_error():
    provider = OpenAIProvider(get_spec("text-embedding-3-small"), api_key="k",
                              base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.01)
    with pytest.raises(errors.ProviderConnectionError, match="cannot reach"):
        provider.embed(["a"])


def test_openai_base64_encoding(openai_server):
    import base64
    import json

    vec = np.arange(1, 1537, dtype="<f4")
    openai_server.queue(200, {"data": [{"index": 0, "embedding":
                                        base64.b64encode(vec.tobytes()).decode()}]})
    out = openai(openai_server, encoding_format="base64").embed(["a"])
    np.testing.assert_allclose(out[0], vec / np.linalg.norm(vec), rtol=1e-5)
    assert openai_server.requests[0]["json"]["encoding_format"] == "base64"
    del json


# --- Ollama ------------------------------------------------------------------------
def ollama(server, model="nomic-embed-text", **kw):
    kw.setdefault("backoff", 0.01)
    return OllamaProvider(get_spec(model), host=server.url, **kw)


def test_ollama_prompts_layer_norm_truncation(ollama_server):
    out = ollama(ollama_server).embed(["what is MRL?"], kind="query", dim=128)
    sent = ollama_server.requests[0]
    assert sent["path"] == "/api/embed"
    assert sent["json"] == {"model": "nomic-embed-text", "input": ["search_query: what is MRL?"]}
    raw = np.array([fake_vector("search_query: what is MRL?", 768)])
    expected = vectors.truncate(vectors.layer_norm(raw), 128)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert ollama(ollama_server).embed(["doc"], kind="document", dim=64).shape == (1, 64)
    assert ollama_server.requests[1]["json"]["input"] == ["search_document: doc"]


def test_ollama_host_from_environment_without_scheme(ollama_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url.removeprefix("http://"))
    provider = OllamaProvider(get_spec("nomic-embed-text"))
    assert provider.embed(["x"]).shape == (1, 768)


def test_ollama_unknown_model_is_clear(ollama_server):
    from mrlkit.registry import ModelSpec

    spec = ModelSpec(name="m", provider="ollama", model_id="missing", native_dim=768)
    with pytest.raises(errors.ModelNotFoundError, match="try pulling it"):
        OllamaProvider(spec, host=ollama_server.url).embed(["x"])


def test_ollama_retries_and_errors(ollama_server):
    ollama_server.queue(429, {"error": "busy"}, {"Retry-After": "0"})
    ollama_server.queue(500, {"error": "llama runner crashed"})
    assert ollama(ollama_server).embed(["x"], dim=64).shape == (1, 64)
    assert len(ollama_server.requests) == 3
    ollama_server.queue(200, b"<html>")
    with pytest.raises(errors.BadResponseError):
        ollama(ollama_server).embed(["x"])
    ollama_server.queue(401, {"error": "unauthorized"})
    with pytest.raises(errors.AuthenticationError):
        ollama(ollama_server).embed(["x"])


def test_ollama_wrong_dimension_and_empty_input(ollama_server):
    assert ollama(ollama_server).embed([], dim=64).shape == (0, 64)
    assert ollama_server.requests == []
    ollama_server.wrong_dim = 384
    with pytest.raises(errors.DimensionError, match="384-d.*expected 768"):
        ollama(ollama_server).embed(["x"])


def test_ollama_batches_large_inputs(ollama_server):
    # 768-d JSON per text makes this the slowest fake; 2,500 inputs still need 10 batches
    out = ollama(ollama_server, batch_size=256).embed([f"t{i}" for i in range(2_500)],
                                                     dim=64)
    assert out.shape == (2_500, 64)
    assert [len(r["json"]["input"]) for r in ollama_server.requests] == [256] * 9 + [196]


def test_bad_texts_are_refused_before_any_request(ollama_server):
    with pytest.raises(errors.InvalidInputError, match="empty"):
        ollama(ollama_server).embed(["ok", "  "])
    with pytest.raises(errors.InvalidInputError, match="single string"):
        ollama(ollama_server).embed("just a string")
    assert ollama_server.requests == []


def test_a_refused_connection_fails_at_once_with_the_address(monkeypatch):
    from mrlkit.providers import _http

    slept = []
    monkeypatch.setattr(_http.time, "sleep", slept.append)
    provider = OpenAIProvider(get_spec("text-embedding-3-small"), api_key="k",
                              base_url="http://127.0.0.1:9/v1", max_retries=5, backoff=1.0)
    with pytest.raises(errors.ProviderConnectionError, match="127.0.0.1:9"):
        provider.embed(["a"])
    assert slept == []  # no back-off retries against a port where nothing listens
