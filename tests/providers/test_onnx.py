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


def test_eval_says_what_the_encoder_costs(tmp_path, monkeypatch):
    """`eval retrieval --backend onnx-int8` reports its vectors' cosine to torch's."""
    from mrlkit.evaluation.retrieval import evaluate_retrieval
    from mrlkit.providers import _defaults

    sci, out = dataset("scifact"), tmp_path / "sci"
    (out / "qrels").mkdir(parents=True)
    qrels = (sci / "qrels" / "test.tsv").read_text().splitlines()
    kept = qrels[1:21]
    docs = {line.split("\t")[1] for line in kept}
    with open(sci / "corpus.jsonl") as fh, open(out / "corpus.jsonl", "w") as w:
        for n, line in enumerate(fh):
            if json.loads(line)["_id"] in docs or n < 60:
                w.write(line)
    queries = {line.split("\t")[0] for line in kept}
    with open(sci / "queries.jsonl") as fh, open(out / "queries.jsonl", "w") as w:
        w.writelines(line for line in fh if json.loads(line)["_id"] in queries)
    (out / "qrels" / "test.tsv").write_text("\n".join([qrels[0], *kept]) + "\n")
    monkeypatch.setenv("MRLKIT_CACHE", str(tmp_path / "emb"))
    monkeypatch.setitem(_defaults, "backend", "onnx-int8")   # what --backend configures
    got = evaluate_retrieval(str(out), "all-MiniLM-L6-v2", dims=[384], precisions=["float32"])
    enc = got["encoder"]
    assert enc["backend"] == "onnx-int8" and enc["sample"] == min(200, got["documents"])
    assert 0.98 <= enc["cosine_to_torch_mean"] < 1.0


def test_the_catalog_can_choose_the_backend(monkeypatch):
    from mrlkit.errors import CatalogError
    from mrlkit.providers import backend_of, get_provider
    from mrlkit.registry import get_spec, register, spec_from_dict

    base = get_spec("all-MiniLM-L6-v2")
    spec = register({"name": "minilm-int8", "provider": "sentence-transformers",
                     "model_id": base.model_id, "native_dim": 384, "backend": "onnx-int8"},
                    replace=True)
    assert spec.backend == "onnx-int8" and backend_of(spec, {}) == "onnx-int8"
    assert get_provider(spec).backend == "onnx-int8"
    with pytest.raises(CatalogError, match="backend"):
        spec_from_dict({"name": "x", "provider": "ollama", "native_dim": 8,
                        "backend": "onnx"})
