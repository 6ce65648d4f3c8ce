"""Evaluation on the real shared datasets (skipped when ../shared/datasets is absent).

Corpus embeddings go through mrlkit's cache, so only the first run pays for them."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import SCIFACT_MINILM, dataset


@SCIFACT_MINILM
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


@SCIFACT_MINILM
def test_check_mrl_and_advise_state_their_sample_interval_and_reason():
    """Every verdict says how many queries it stands on and how far they let it move."""
    from mrlkit.evaluation.advisor import advise, check_mrl

    folder = str(dataset("scifact"))
    got = check_mrl(folder, "all-MiniLM-L6-v2")
    assert got["queries"] == 300 and "on 300 queries" in got["verdict"]
    assert not got["matryoshka_like"]  # MiniLM is not Matryoshka-trained
    for row in got["curve"]:
        lo, hi = row["retention_ci"]
        assert lo <= row["retention"] <= hi and hi - lo < 0.2
    assert got["settled"] is all(r["decided"] for r in got["curve"] if r["ok"] is not None)
    a = advise(folder, "all-MiniLM-L6-v2", target=0.95)
    c = a["choice"]
    lo, hi = c["retention_ci"]["ndcg@10"]
    assert lo <= c["metric_retention"] <= hi
    assert "95% CI" in a["why"] and "300 queries" in a["why"] and "bytes" in a["why"]
