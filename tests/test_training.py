"""Fine-tuning with MatryoshkaLoss (a few steps on tiny data) and the orthogonal transforms."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mrlkit import errors, vectors
from mrlkit.training import (Transform, default_prefix_dims, fit_transform, load_training_data,
                             pca_rotation)
from tests.conftest import dataset


def clustered(n=400, d=48, seed=0):
    """Vectors whose variance sits in a few directions spread over every coordinate, as
    in a model that was not Matryoshka-trained."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    scale = np.exp(-np.arange(d) / 6.0)
    z = rng.normal(size=(20, d))[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))
    return vectors.normalize((z * scale) @ basis.T)


def retention_at(x, m, k=10):
    full = vectors.top_k(x @ x.T, k + 1)[0][:, 1:]
    xm = vectors.truncate(x, m)
    short = vectors.top_k(xm @ xm.T, k + 1)[0][:, 1:]
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(full, short)])


@pytest.mark.parametrize("method", ["pca", "adaptor"])
def test_transforms_are_orthogonal_and_keep_full_dimension_scores(method):
    x = clustered()
    t = fit_transform(x, method, dims=[4, 8, 16], steps=30)
    w = t.matrix.astype(np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(w.shape[0]), atol=1e-5)
    y = t.apply(x)
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-5)
    # the point of it: short prefixes find the full vectors' neighbours far better
    assert retention_at(y, 8) > retention_at(x, 8) + 0.1
    assert t.mrl_dims == [4, 8, 16] and t.fitted_on == len(x)


def test_adaptor_lowers_its_objective_and_says_nothing_of_pytorch(recwarn):
    seen = []
    t = fit_transform(clustered(), "adaptor", dims=[4, 8], steps=40,
                      progress=lambda i, n, loss: seen.append(loss))
    assert t.details["last_loss"] < t.details["first_loss"] and len(seen) == 40
    # the progress callback's loss once leaked "Converting a tensor with requires_grad"
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]


def test_pca_orders_directions_by_variance():
    x = clustered()
    y = x @ pca_rotation(x)
    var = y.var(axis=0)
    assert np.all(np.diff(var) <= 1e-9)


def test_transform_round_trips_and_refuses_bad_input():
    t = fit_transform(clustered(50, 8), "pca")
    again = Transform.from_dict(json.loads(json.dumps(t.to_dict())))
    np.testing.assert_allclose(again.matrix, t.matrix)
    with pytest.raises(errors.InvalidInputError, match="pca or adaptor"):
        fit_transform(clustered(50, 8), "svd")
    with pytest.raises(errors.InvalidInputError, match="at least 2"):
        fit_transform(clustered(1, 8), "pca")
    assert default_prefix_dims(768)[:3] == [32, 48, 64]


def test_training_data_formats(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": f"q{i}", "positive": f"d{i}"}) + "\n"
                             for i in range(5)))
    data = load_training_data(pairs)
    assert (data.kind, len(data), sorted(data.columns)) == ("pairs", 5, ["anchor", "positive"])
    scored = tmp_path / "scored.jsonl"
    scored.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": 4.0}) + "\n"
                      + json.dumps({"sentence1": "c", "sentence2": "d", "score": 5.0}) + "\n")
    data = load_training_data(scored)
    assert data.kind == "scored" and data.columns["score"] == [0.8, 1.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(errors.InvalidInputError, match="anchor and positive"):
        load_training_data(bad)
    scifact = load_training_data(dataset("scifact"))
    assert scifact.kind == "pairs" and len(scifact) == 919 and scifact.eval_folder


def test_a_few_training_steps_register_an_mrl_model(tmp_path, monkeypatch):
    """Not a full run: two steps at batch 8 prove the pipeline, the catalog entry and that
    the saved model loads and embeds."""
    from mrlkit.providers import get_provider
    from mrlkit.registry import get_spec, reset_catalog
    from mrlkit.training import TrainData, train

    catalog = tmp_path / "catalog.toml"
    monkeypatch.setenv("MRLKIT_CATALOG", str(catalog))
    reset_catalog()
    texts = [f"note {i} about {t}" for i, t in enumerate(["cats", "tea", "rust", "moons"] * 8)]
    data = TrainData("pairs", {"anchor": texts, "positive": [t.upper() for t in texts]}, "toy")
    result = train(data, tmp_path / "tiny-mrl", batch_size=8, max_steps=2, dims=[384, 64, 32],
                   evaluate=False)
    assert result.steps == 2 and result.mrl_dims == [32, 64, 384]
    assert (tmp_path / "tiny-mrl" / "README.md").exists()
    reset_catalog()  # a new process reads it from the user catalog
    spec = get_spec("tiny-mrl")
    assert spec.supports_mrl and spec.mrl_dims == (32, 64, 384)
    x = get_provider(spec).embed(["hello"], dim=64)
    assert x.shape == (1, 64)
    assert os.path.isdir(spec.model_id)
