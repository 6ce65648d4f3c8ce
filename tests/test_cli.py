"""The CLI as a user runs it: real processes, one clear line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def run(*args, input=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "mrlkit.cli", *args], capture_output=True,
                          text=True, input=input, cwd=cwd, timeout=300)


def test_models_lists_the_catalog():
    r = run("models")
    assert r.returncode == 0
    for name in ("all-MiniLM-L6-v2", "nomic-embed-text", "text-embedding-3-large",
                 "Qwen3-Embedding-8B", "snowflake-arctic-embed-m-v1.5"):
        assert name in r.stdout
    r = run("models", "show", "nomic-embed-text")
    assert r.returncode == 0 and "layer_norm" in r.stdout and "search_query" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["hello", "--model", "all-MiniLM-L6-v2", "--dim", "128"], "not Matryoshka-trained"),
    (["hello", "--model", "nomic-embed-text", "--dim", "100"], "64, 128, 256, 512, 768"),
    (["hello", "--model", "no-such-model"], "unknown model"),
    (["--model", "all-MiniLM-L6-v2"], "nothing to embed"),
    (["x", "--output", "out.txt"], "must end in .npy or .jsonl"),
    (["x", "--precision", "int4"], "precision must be one of"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    r = run("embed", *args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # rich may wrap one long line


def test_embed_npy_and_jsonl(tmp_path):
    r = run("embed", "hello world", "--model", "all-MiniLM-L6-v2", "--dim", "128",
            "--allow-non-mrl", "--output", "x.npy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (1, 128)
    assert abs(np.linalg.norm(x) - 1) < 1e-5
    (tmp_path / "in.txt").write_text("first line\n\nsecond line\n")
    r = run("embed", "--input", "in.txt", "--kind", "query", cwd=tmp_path)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["first line", "second line"]
    assert len(rows[0]["embedding"]) == 384
    r = run("embed", "--input", "-", "--output", "o.jsonl", input="from stdin\n", cwd=tmp_path)
    assert r.returncode == 0
    assert json.loads((tmp_path / "o.jsonl").read_text())["text"] == "from stdin"


def test_openai_model_through_the_cli(tmp_path):
    from tests.providers.fake_servers import FakeOpenAI

    server = FakeOpenAI()
    try:
        env_run = subprocess.run(
            [sys.executable, "-m", "mrlkit.cli", "embed", "hello", "--model",
             "text-embedding-3-small", "--dim", "256", "--output", "o.npy"],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
            env={**__import__("os").environ, "OPENAI_API_KEY": "test-key",
                 "OPENAI_BASE_URL": server.url + "/v1"})
        assert env_run.returncode == 0, env_run.stderr
        assert server.requests[0]["json"]["dimensions"] == 256
        out = np.load(tmp_path / "o.npy")
        assert out.shape == (1, 256) and abs(np.linalg.norm(out) - 1) < 1e-5
    finally:
        server.close()


def test_demo_prints_the_retention_table():
    r = run("demo")
    assert r.returncode == 0, r.stderr
    assert "Quality retention" in r.stdout and "not" in r.stdout
    for dim in ("32", "64", "128", "384"):
        assert dim in r.stdout
    # the search part: standard-library docstrings, exact vs funnel, storage summary
    assert "exact vs funnel" in r.stdout and "json." in r.stdout
    assert "Same top 3 for" in r.stdout and "stored vectors" in r.stdout


def test_eval_json_is_the_report_alone_on_stdout_and_output_writes_a_file(tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {"d1": "Vitamin D and bone density.", "d2": "Green tea brewing.",
            "d3": "The Moon orbits the Earth.", "d4": "Rust is memory safe."}
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    (beir / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, t in
        (("q1", "bones and vitamins"), ("q2", "making tea"))))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    r = run("eval", "retrieval", str(beir), "--dims", "64,384", "--precisions", "float32",
            "--json", "--output", "report.json", "--plot", "p.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # nothing but the report
    assert {row["dim"] for row in report["results"]} == {64, 384}
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (tmp_path / "p.png").exists() and (tmp_path / "p-pareto.png").exists()
    assert report["queries"] == 2
    r = run("eval", "retrieval", str(beir), "--dims", "384", "--precisions", "float32",
            "--max-queries", "1", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["queries"] == 1, r.stderr
