"""The ONNX encoders against the model's own (torch) vectors, on real SciFact text: the
thresholds docs/encoding.md states, measured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import dataset

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def docs():
    path = dataset("scifact") / "corpus.jsonl"
    with open(path) as fh:
        rows = [json.loads(line) for _, line in zip(range(200), fh)]
    return [f"{r.get('title', '')} {r['text']}".strip() for r in rows]


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MRLKIT_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx")))
    yield
    mp.undo()


@pytest.mark.parametrize("backend, floor", [("onnx", 0.999), ("onnx-int8", 0.98)])
def test_onnx_vectors_match_torch_on_200_scifact_documents(docs, backend, floor):
    from mrlkit.providers import get_provider

    torch_x = get_provider("all-MiniLM-L6-v2", show_progress=False).embed(docs)
    got = get_provider("all-MiniLM-L6-v2", show_progress=False, backend=backend).embed(docs)
    cos = (got * torch_x).sum(axis=1)   # both unit rows
    assert got.shape == torch_x.shape and np.allclose(np.linalg.norm(got, axis=1), 1, 1e-5)
    assert cos.mean() >= floor, (backend, cos.mean(), cos.min())


def test_a_bad_backend_is_refused_before_any_model_loads():
    from mrlkit.errors import ProviderError
    from mrlkit.providers import get_provider

    with pytest.raises(ProviderError, match="onnx-int8"):
        get_provider("all-MiniLM-L6-v2", backend="tensorrt")


def test_cached_vectors_of_a_backend_never_stand_in_for_torch(tmp_path, monkeypatch):
    from mrlkit.cache import cached_embed

    monkeypatch.setenv("MRLKIT_CACHE", str(tmp_path / "emb"))
    texts = ["Vitamin D and bone density.", "Matryoshka dolls nest."]
    a = cached_embed("all-MiniLM-L6-v2", texts)
    b = cached_embed("all-MiniLM-L6-v2", texts, backend="onnx-int8")
    assert len(list((tmp_path / "emb").glob("*.npy"))) == 2
    assert not np.array_equal(a, b) and (a * b).sum(axis=1).min() > 0.98
