"""Loaders (CRLF, missing files, inconsistent ids) and the metric wiring."""

from __future__ import annotations

import json
import math

import pytest

from mrlkit.evaluation import datasets
from mrlkit.evaluation.advisor import reference_retention
from mrlkit.evaluation.report import pareto
from mrlkit.evaluation.retrieval import score_run
from tests.conftest import dataset


def beir(tmp_path, qrels="query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td3\t1\r\n",
         corpus=("d1", "d2", "d3")):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "title": f"T{d}", "text": f"text {d}"}) + "\n" for d in corpus))
    (tmp_path / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in ("q1", "q2", "q3")))
    (tmp_path / "qrels" / "test.tsv").write_text(qrels, newline="")
    return tmp_path


def test_beir_crlf_and_split_queries(tmp_path):
    ds = datasets.load_beir(beir(tmp_path), "test")
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    assert ds.query_ids == ["q1", "q2"]          # q3 is not in the split
    assert ds.doc_texts[0] == "Td1 text d1"      # title + text, as BEIR embeds them


def test_beir_lf_too(tmp_path):
    ds = datasets.load_beir(beir(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td2\t2\n"))
    assert ds.qrels == {"q1": {"d2": 2}}


def test_beir_missing_files(tmp_path):
    with pytest.raises(datasets.DatasetError, match="not a folder"):
        datasets.load_beir(tmp_path / "nope")
    folder = beir(tmp_path)
    (folder / "queries.jsonl").unlink()
    with pytest.raises(datasets.DatasetError, match="queries.jsonl is missing"):
        datasets.load_beir(folder)
    with pytest.raises(datasets.DatasetError, match="dev.tsv is missing"):
        (tmp_path / "b").mkdir()
        datasets.load_beir(beir(tmp_path / "b"), "dev")


def test_qrels_naming_absent_documents_is_a_clear_error(tmp_path):
    folder = beir(tmp_path, qrels="query-id\tcorpus-id\tscore\r\nq1\tghost\t1\r\n")
    with pytest.raises(datasets.DatasetError, match="absent from corpus.jsonl.*ghost"):
        datasets.load_beir(folder)


def test_sts_fields(tmp_path):
    (tmp_path / "sts-test.csv").write_text(
        "g\tf\t2012\t1\t2.500\tA girl styles her hair.\tA girl brushes her hair.\n"
        "g\tf\t2012\t2\t4.0\tA\tB\textra\tfields\n")
    ds = datasets.load_sts(tmp_path)
    assert ds.scores == [2.5, 4.0] and ds.sentences2 == ["A girl brushes her hair.", "B"]


def test_labelled_csv_with_newlines_in_quotes(tmp_path):
    (tmp_path / "train.csv").write_text('text,category\n"two\nlines",a\nplain,b\n')
    (tmp_path / "test.csv").write_text("text,category\nx,a\n")
    data = datasets.load_labelled(tmp_path)
    assert data.train_texts == ["two\nlines", "plain"] and data.test_labels == ["a"]
    with pytest.raises(datasets.DatasetError, match="no column 'label'"):
        datasets.load_labelled(tmp_path, label_col="label")


def test_metrics_on_a_hand_computed_example():
    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"x": 2}}
    run = {"q1": {"a": 0.9, "b": 0.8, "c": 0.7}, "q2": {"y": 0.9, "x": 0.5}}
    m = score_run(qrels, run)
    # q1: DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3); q2: DCG = 3/log2(3), IDCG = 3
    ndcg_q1 = 1.5 / (1 + 1 / math.log2(3))
    ndcg_q2 = (3 / math.log2(3)) / 3
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-6)
    assert m["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert m["recall@100"] == pytest.approx(1.0)


def test_query_without_hits_counts_as_zero():
    m = score_run({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": {"a": 1.0}})
    assert m["ndcg@10"] == pytest.approx(0.5)


def test_pareto_and_reference_curve():
    assert pareto([(4, 0.9), (1, 0.5), (2, 0.5), (8, 0.95)]) == [1, 0, 3]
    assert reference_retention(1.0) == pytest.approx(1.0)
    assert 0.97 < reference_retention(1 / 3) < 0.99
    assert reference_retention(1 / 16) < reference_retention(1 / 8) < reference_retention(1 / 4)


def test_real_scifact_loads():
    ds = datasets.load_beir(dataset("scifact"), "test")
    assert (len(ds.doc_ids), len(ds.query_ids)) == (5183, 300)
    assert sum(len(v) for v in ds.qrels.values()) == 339


def test_retrieval_plots_are_named_as_given(tmp_path):
    from mrlkit.evaluation.report import plot_retrieval

    rows = [{"dim": d, "precision": p, "funnel": None, "ndcg@10": 0.5 + d / 1000,
             "bytes_per_vector": d * (4 if p == "float32" else 1)}
            for d in (64, 128) for p in ("float32", "int8")]
    report = {"model": "m", "dataset": "d", "split": "test", "supports_mrl": True,
              "results": rows}
    written = plot_retrieval(report, tmp_path / "out.png")
    assert written == [tmp_path / "out.png", tmp_path / "out-pareto.png"]
    assert all(p.stat().st_size > 1000 for p in written)
