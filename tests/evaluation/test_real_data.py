"""Evaluation on the real shared datasets (skipped when ../shared/datasets is absent).

Corpus embeddings go through mrlkit's cache, so only the first run pays for them."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import dataset


def test_scifact_reproduces_the_published_ndcg():
    from mrlkit.evaluation.retrieval import evaluate_retrieval

    report = evaluate_retrieval(str(dataset("scifact")), "all-MiniLM-L6-v2",
                                dims=[64, 384], precisions=["float32", "binary"],
                                funnels=["384:binary:200,384"])
    by = {(r["dim"], r["precision"], r["funnel"]): r for r in report["results"]}
    full = by[(384, "float32", None)]
    assert full["ndcg@10"] == pytest.approx(0.645, abs=0.005)  # MTEB's published figure
    assert full["retention"] == 1.0
    assert by[(64, "float32", None)]["non_mrl_truncation"] is True
    assert by[(64, "float32", None)]["retention"] < 0.9       # MiniLM is not MRL-trained
    funnel = by[(384, "float32", "384:binary:200,384:float32")]
    assert funnel["retention"] >= 0.98 and funnel["bytes_per_vector"] == 48


def test_stsb_similarity_retention():
    from mrlkit.evaluation.similarity import evaluate_similarity

    report = evaluate_similarity(str(dataset("stsb")), "all-MiniLM-L6-v2", dims=[64, 384])
    full = report["results"][-1]
    assert report["pairs"] == 1379
    assert 0.80 < full["spearman"] < 0.85  # MTEB: 82.0 for all-MiniLM-L6-v2 on STSBenchmark
    assert report["results"][0]["retention"] < 1.0


def test_banking77_classification_on_a_sample(tmp_path):
    src = dataset("banking77")
    for split, n in (("train", 1500), ("test", 400)):
        with open(src / f"{split}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        rows = rows[::len(rows) // n][:n]  # an even spread covers every intent
        with open(tmp_path / f"{split}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["text", "category"])
            w.writeheader()
            w.writerows(rows)
    from mrlkit.evaluation.classification import evaluate_classification

    report = evaluate_classification(str(tmp_path), "all-MiniLM-L6-v2", dims=[64, 384])
    full = report["results"][-1]
    assert full["accuracy"] > 0.5 and 0 < full["v_measure"] <= 1
    assert report["results"][0]["accuracy_retention"] <= 1.05
