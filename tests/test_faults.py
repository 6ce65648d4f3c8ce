"""Faults and bad input, as a careful user meets them: every case ends in one line on
stderr, exit 2 for bad input (3 for `sets check` finding a problem), no traceback, and the
store unchanged — or, for damage, repaired by `sets check --repair` to a state whose exact
search equals a freshly built set's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mrlkit import Funnel, errors, vectors
from mrlkit.stores import open_store

MODEL = "all-MiniLM-L6-v2"
DIM = 384


def mrlkit(*args, cwd, input=None):
    return subprocess.run([sys.executable, "-m", "mrlkit.cli", *args], capture_output=True,
                          cwd=cwd, input=input, timeout=300)


def one_line(r, code=2):
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def unit(n, seed=0, dim=DIM):
    return vectors.normalize(np.random.default_rng(seed).normal(size=(n, dim)))


def filled(location, n=300, name="s"):
    s = open_store(location)
    # float32: the damage below is placed in float32 rows; MiniLM's prefixes allowed
    s.create_set(name, MODEL, storage="float32", allow_non_mrl=True)
    x = unit(n)
    s.add(name, [f"d{i}" for i in range(n)], x, [f"text {i}" for i in range(n)])
    return s, x


def exact_ids(store, q, k=10, name="s"):
    res = store.search(name, q, k=k, funnel=Funnel.exact(store.get_set(name).stored_dim))
    return [[h.id for h in r] for r in res.hits]


# --- bad input, refused before anything is written or any model loads -----------------
def _lines(n, bad_at=None, bad=None):
    out = []
    for i in range(1, n + 1):
        rec = {"id": f"d{i}", "text": f"document {i}", "metadata": {"i": i}}
        if i == bad_at:
            rec = bad(rec)
        out.append(json.dumps(rec) if isinstance(rec, dict) else rec)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("case, bad, message", [
    ("empty text", lambda r: {**r, "text": "  "}, "line 400|:400: document 'd400' has an empty"),
    ("empty id", lambda r: {**r, "id": ""}, ":400: document id ''"),
    ("duplicate id", lambda r: {**r, "id": "d7"}, ":400: id 'd7' repeats line 7"),
    ("NaN metadata", lambda r: '{"id": "d400", "text": "x", "metadata": {"v": NaN}}',
     ":400: document 'd400': metadata 'v' is nan"),
    ("null id", lambda r: {**r, "id": None}, ":400: expected 'id'"),
    ("object id", lambda r: {**r, "id": {"a": 1}}, ":400: document id"),
    ("not JSON", lambda r: "{oops", ":400: not valid JSON"),
])
def test_a_bad_record_deep_in_a_file_stores_nothing(tmp_path, case, bad, message):
    store = str(tmp_path / "st")
    open_store(store).create_set("s", MODEL)
    path = tmp_path / "docs.jsonl"
    path.write_text(_lines(600, 400, bad))
    err = one_line(mrlkit("index", "s", str(path), "--store", store, cwd=tmp_path))
    assert any(m in err for m in message.split("|")), err
    assert str(path) in err
    assert open_store(store).get_set("s").count == 0


def test_non_utf8_input_is_one_line(tmp_path):
    store = str(tmp_path / "st")
    open_store(store).create_set("s", MODEL)
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n')
    assert ":2: not UTF-8" in one_line(mrlkit("index", "s", str(path), "--store", store,
                                              cwd=tmp_path))
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"caf\xe9\n")
    assert "not UTF-8" in one_line(mrlkit("embed", "--input", str(texts), cwd=tmp_path))
    assert "not UTF-8" in one_line(mrlkit("embed", "--input", "-", cwd=tmp_path,
                                          input=b"caf\xe9\n"))


def test_embed_output_into_a_missing_folder_fails_before_embedding(tmp_path):
    r = mrlkit("embed", "hello", "--output", str(tmp_path / "no" / "such" / "x.npy"),
               cwd=tmp_path)
    assert "does not exist" in one_line(r)
    (tmp_path / "mine.npy").write_bytes(b"keep me")   # nor over a file that exists
    r = mrlkit("embed", "hello", "--output", str(tmp_path / "mine.npy"), cwd=tmp_path)
    assert "--force" in one_line(r) and (tmp_path / "mine.npy").read_bytes() == b"keep me"


@pytest.mark.parametrize("flag, name", [("--output", "report.json"), ("--csv", "rows.csv"),
                                        ("--plot", "curve.png")])
def test_eval_keeps_a_file_that_exists_unless_forced(tmp_path, flag, name):
    """Refused before the model or the dataset is read (the folder does not even exist)."""
    (tmp_path / name).write_bytes(b"keep me")
    r = mrlkit("eval", "similarity", str(tmp_path / "no-sts"), flag, str(tmp_path / name),
               cwd=tmp_path)
    assert "--force" in one_line(r) and (tmp_path / name).read_bytes() == b"keep me"


@pytest.mark.parametrize("flt", ['g={"a": 1}', "g=[1, 2]", "g=9223372036854775808",
                                 "g=null", "g=NaN"])
def test_bad_filter_values_are_one_line_before_the_model_loads(tmp_path, flt):
    store = str(tmp_path / "st")
    filled(store, 20)
    r = mrlkit("search", "s", "a query", "--filter", flt, "--store", store, cwd=tmp_path)
    assert "a filter value must be" in one_line(r)


def test_a_huge_keep_is_one_line(tmp_path):
    store = str(tmp_path / "st")
    filled(store, 20)
    r = mrlkit("search", "s", "q", "--funnel", "64:binary:9223372036854775808,384",
               "--store", store, cwd=tmp_path)
    assert "keeps" in one_line(r)


# --- damaged stores ------------------------------------------------------------------
def test_a_corrupt_catalogue_is_one_line(tmp_path):
    store = tmp_path / "st"
    filled(str(store), 10)
    (store / "catalog.sqlite").write_bytes(os.urandom(4096))
    for name in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (store / name).unlink(missing_ok=True)
    assert "catalogue" in one_line(mrlkit("sets", "list", "--store", str(store), cwd=tmp_path))


def test_a_cut_view_is_rebuilt_not_served(tmp_path):
    store = str(tmp_path / "st")
    s, x = filled(store, 300)
    funnel = Funnel.parse("64:binary:300,384")
    want = [[h.id for h in r] for r in s.search("s", x[:5], k=10, funnel=funnel).hits]
    view = tmp_path / "st" / "sets" / "1" / "views" / "d64-binary.bin"
    os.truncate(view, view.stat().st_size - 5)
    again = open_store(store)
    got = [[h.id for h in r] for r in again.search("s", x[:5], k=10, funnel=funnel).hits]
    assert got == want
    assert again.check("s").ok


@pytest.mark.parametrize("damage", ["random_bytes", "cut", "missing"])
def test_damaged_vectors_are_found_and_repaired(tmp_path, damage):
    store = str(tmp_path / "st")
    s, x = filled(store, 300)
    s.search("s", x[:1], k=3, funnel=Funnel.parse("64:binary:50,384"))
    path = tmp_path / "st" / "sets" / "1" / "vectors-0.bin"
    if damage == "random_bytes":
        with open(path, "r+b") as fh:
            fh.seek(10 * DIM * 4)
            fh.write(np.random.default_rng(1).integers(0, 256, 3 * DIM * 4, np.uint8)
                     .tobytes())
        kept = [i for i in range(300) if i not in (10, 11, 12)]
    elif damage == "cut":
        os.truncate(path, 250 * DIM * 4 + 7)
        kept = list(range(250))
    else:
        path.unlink()
        kept = []
    if damage != "random_bytes":  # a search names the damage in one line
        with pytest.raises(errors.StoreError, match="vector file"):
            open_store(store).search("s", x[:1], k=3, funnel=Funnel.exact(DIM))
    r = mrlkit("sets", "check", "s", "--store", store, cwd=tmp_path)
    assert r.returncode == 3 and b"problem:" in r.stdout and b"Traceback" not in r.stderr
    r = mrlkit("sets", "check", "s", "--repair", "--store", store, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mrlkit("sets", "check", "s", "--store", store, cwd=tmp_path).returncode == 0
    repaired = open_store(store)
    assert repaired.get_set("s").count == len(kept)
    if kept:
        fresh_loc = str(tmp_path / "fresh")
        fresh = open_store(fresh_loc)
        fresh.create_set("s", MODEL)
        fresh.add("s", [f"d{i}" for i in kept], x[kept], [f"text {i}" for i in kept])
        q = unit(5, seed=9)
        assert exact_ids(repaired, q) == exact_ids(fresh, q)


def test_set_ids_are_never_reused_after_a_drop_that_died_midway(tmp_path):
    store = str(tmp_path / "st")
    s, _ = filled(store, 200, name="a")
    s.search("a", unit(1), k=3, funnel=Funnel.parse("64:binary:50,384"))
    leftover = tmp_path / "st" / "sets" / "1"
    saved = tmp_path / "saved"
    shutil.copytree(leftover, saved)
    s.drop_set("a")
    shutil.copytree(saved, leftover)  # as if the process died before removing the folder
    s2 = open_store(store)
    s2.create_set("b", MODEL, allow_non_mrl=True)  # a 64-d binary prefix below
    y = unit(200, seed=5)
    s2.add("b", [f"b{i}" for i in range(200)], y)
    hits = s2.search("b", y[:20], k=1, funnel=Funnel.parse("64:binary:50,384")).hits
    assert all(h[0].id == f"b{i}" for i, h in enumerate(hits))  # its own vectors, always
    report = s2.check("b")
    assert not report.ok and "files of a dropped set" in report.problems[0]
    assert s2.check("b", repair=True).ok and not leftover.exists()
    assert s2.check("b").ok


def test_check_on_a_healthy_set_and_its_json(tmp_path):
    store = str(tmp_path / "st")
    filled(store, 50)
    r = mrlkit("sets", "check", "s", "--json", "--store", store, cwd=tmp_path)
    assert r.returncode == 0
    got = json.loads(r.stdout)
    assert got["ok"] is True and got["problems"] == [] and got["checked"]


def test_an_unexpected_error_is_one_line_with_a_hint(tmp_path):
    env = {**os.environ, "MRLKIT_CATALOG": str(tmp_path / "missing.toml")}
    r = subprocess.run([sys.executable, "-c",
                        "import sys; sys.argv=['mrlkit','sets','list','--store',"
                        f"{str(tmp_path / 'st')!r}];"
                        "import mrlkit.cli as c; c.command = lambda: 1/0; c.main()"],
                       capture_output=True, timeout=120, env=env)
    err = one_line(r, code=1)
    assert "unexpected ZeroDivisionError" in err and "--debug" in err


@pytest.mark.slow
def test_a_rerun_resumes_without_embedding_what_is_stored(tmp_path):
    store = str(tmp_path / "st")
    open_store(store).create_set("s", MODEL)
    full = tmp_path / "docs.jsonl"
    full.write_text(_lines(30))
    part = tmp_path / "part.jsonl"
    part.write_text("".join(full.read_text().splitlines(keepends=True)[:20]))
    r = mrlkit("index", "s", str(part), "--store", store, "--batch-size", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = mrlkit("index", "s", str(full), "--store", store, "--batch-size", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert b"added 10 documents" in r.stdout and b"skipped 20" in r.stdout
    changed = full.read_text().replace('"document 3"', '"document three"')
    full.write_text(changed)
    r = mrlkit("index", "s", str(full), "--store", store, "--upsert", cwd=tmp_path)
    assert b"added 1 documents to s (1 replaced by id); skipped 29" in r.stdout, r.stdout
    assert open_store(store).get_set("s").count == 30


def test_upsert_collapses_repeated_ids_and_says_so(tmp_path):
    store = str(tmp_path / "st")
    open_store(store).create_set("s", MODEL)
    path = tmp_path / "docs.jsonl"
    path.write_text(_lines(6) + json.dumps({"id": "d2", "text": "the second, again"}) + "\n")
    r = mrlkit("index", "s", str(path), "--store", store, cwd=tmp_path)
    assert ":7: id 'd2' repeats line 2" in one_line(r)
    r = mrlkit("index", "s", str(path), "--store", store, "--upsert", cwd=tmp_path)
    assert b"1 repeated ids" in r.stdout and r.returncode == 0, r.stdout + r.stderr
    s = open_store(store)
    assert s.get_set("s").count == 6 and s.get("s", ["d2"])[0].text == "the second, again"


@pytest.mark.parametrize("kind", ["pgvector", "chroma", "qdrant"])
def test_bad_input_on_the_other_backends_is_one_line_and_stores_nothing(tmp_path, kind,
                                                                        request):
    pytest.importorskip({"pgvector": "psycopg", "chroma": "chromadb",
                         "qdrant": "qdrant_client"}[kind])
    location = (request.getfixturevalue("pg_url") if kind == "pgvector"
                else f"{kind}:{tmp_path / kind}")
    s = open_store(location)
    s.create_set("s", MODEL)
    s.add("s", ["a", "b"], unit(2), ["text a", "text b"])
    s.close()  # Qdrant's local mode lets one process at a time open its folder
    path = tmp_path / "docs.jsonl"
    path.write_text(_lines(600, 400, lambda r: '{"id": "d400", "text": "x", '
                                               '"metadata": {"v": NaN}}'))
    store = ["--store", location]
    assert ":400:" in one_line(mrlkit("index", "s", str(path), *store, cwd=tmp_path))
    path.write_text(_lines(600, 400, lambda r: {**r, "text": "nul \x00 inside"}))
    assert "NUL" in one_line(mrlkit("index", "s", str(path), *store, cwd=tmp_path))
    for args in (["--filter", "v=NaN"], ["--filter", "v=[1]"],
                 ["--funnel", "64:binary:9223372036854775808,384"]):
        one_line(mrlkit("search", "s", "q", *args, *store, cwd=tmp_path))
    assert open_store(location).get_set("s").count == 2


def test_docs_get_list_delete_and_check_without_a_model(tmp_path):
    store = str(tmp_path / "st")
    s, x = filled(store, 120)
    s.close()
    st = ["--store", store]
    r = mrlkit("docs", "get", "s", "d5", "d7", "--json", *st, cwd=tmp_path)
    got = json.loads(r.stdout)
    assert r.returncode == 0 and [d["id"] for d in got] == ["d5", "d7"]
    assert got[0]["text"] == "text 5"
    assert "d99999" in one_line(mrlkit("docs", "get", "s", "d5", "d99999", *st, cwd=tmp_path))
    r = mrlkit("docs", "list", "s", "--limit", "3", "--offset", "2", "--jsonl", *st,
               cwd=tmp_path)
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["d2", "d3", "d4"]
    r = mrlkit("docs", "delete", "s", "d2", "nope", *st, cwd=tmp_path)
    assert r.returncode == 0 and b"deleted 1 of 2" in r.stdout
    r = mrlkit("check", "s", "--funnel", "384:binary:100,384", "--sample", "30", "--json", *st,
               cwd=tmp_path)
    got = json.loads(r.stdout)
    assert r.returncode == 0 and got["sample"] == 30 and got["recall"] >= 0.9
    r = mrlkit("check", "s", "--funnel", "999:binary:100,384", *st, cwd=tmp_path)
    assert "999 dimensions" in one_line(r)


def test_json_is_one_document_and_jsonl_one_object_per_line(tmp_path):
    """The convention (README): --json prints exactly one JSON document on stdout (a
    list where a command lists things), --jsonl one object per line; nothing else goes
    to stdout."""
    store = str(tmp_path / "st")
    s, _ = filled(store, 60)
    s.close()
    st = ["--store", store]
    path = tmp_path / "more.jsonl"
    path.write_text(_lines(3).replace('"d', '"m'))
    (tmp_path / "q.txt").write_text("first query\nsecond query\n")
    lists = (["models"], ["sets", "list", *st], ["docs", "list", "s", *st],
             ["docs", "get", "s", "d1", "d2", *st])
    for args in (*lists, ["sets", "info", "s", *st], ["sets", "check", "s", *st],
                 ["check", "s", "--funnel", "384:binary:60,384", "--sample", "5", *st],
                 ["add", "s", str(path), *st],
                 ["search", "s", "a query", *st],
                 ["search", "s", "--queries", str(tmp_path / "q.txt"), "-q", *st]):
        r = mrlkit(*args, "--json", cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        got = json.loads(r.stdout)  # one document, or this fails
        if args in lists or "--queries" in args:
            assert isinstance(got, list) and got, args
    for args in (*lists, ["search", "s", "--queries", str(tmp_path / "q.txt"), "-q", *st]):
        r = mrlkit(*args, "--jsonl", cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        lines = r.stdout.decode().splitlines()
        assert lines and all(isinstance(json.loads(line), dict) for line in lines), args


def test_csv_and_parquet_input_with_named_fields(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = str(tmp_path / "st")
    open_store(store).create_set("s", MODEL)
    (tmp_path / "docs.csv").write_text("key,body,lang\nk1,Green tea is brewed.,en\n"
                                       "k2,Der Mond kreist.,de\n")
    r = mrlkit("add", "s", str(tmp_path / "docs.csv"), "--id-field", "nope",
               "--store", store, cwd=tmp_path)
    assert "no field 'nope' for the id (fields: key, body, lang)" in one_line(r)
    r = mrlkit("add", "s", str(tmp_path / "docs.csv"), "--id-field", "key", "--text-field",
               "body", "--store", store, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pq.write_table(pa.table({"key": ["k3"], "body": ["Rust is safe."], "year": [2024]}),
                   tmp_path / "docs.parquet")
    r = mrlkit("index", "s", str(tmp_path / "docs.parquet"), "--id-field", "key",
               "--text-field", "body", "--store", store, cwd=tmp_path)  # the old name
    assert r.returncode == 0, r.stderr
    s = open_store(store)
    got = s.get("s", ["k1", "k3"])
    assert got[0].metadata == {"lang": "en"} and got[1].metadata == {"year": 2024}
    assert s.get_set("s").count == 3


@pytest.mark.parametrize("fmt", ["parquet", "npy", "jsonl"])
def test_export_then_add_vectors_round_trips_a_set_without_a_model(tmp_path, fmt):
    store = str(tmp_path / "st")
    s, x = filled(store, 40)
    s.add("s", ["m"], unit(1, seed=4), ["with meta"], [{"lang": "en", "n": 2}])
    s.create_set("copy", MODEL, storage="float32")  # as the set it copies
    s.close()
    st = ["--store", store]
    out_file = tmp_path / f"export.{fmt}"
    r = mrlkit("sets", "export", "s", "--output", str(out_file), *st, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    if fmt == "parquet":
        r = mrlkit("add-vectors", "copy", str(out_file), *st, cwd=tmp_path)
    elif fmt == "npy":
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("".join(json.loads(line)["id"] + "\n" for line in
                                    (tmp_path / "export.jsonl").read_text().splitlines()))
        r = mrlkit("add-vectors", "copy", str(out_file), "--ids", str(ids_file), *st,
                   cwd=tmp_path)
    else:
        assert json.loads(out_file.read_text().splitlines()[0])["embedding"]
        return
    assert r.returncode == 0, r.stderr
    copy = open_store(store)
    assert copy.get_set("copy").count == 41
    q = unit(4, seed=8)
    assert exact_ids(copy, q, name="copy") == exact_ids(copy, q, name="s")
    if fmt == "parquet":
        got = copy.get("copy", ["m"])[0]
        assert got.text == "with meta" and got.metadata == {"lang": "en", "n": 2}
    assert "--ids" in one_line(mrlkit("add-vectors", "copy", str(out_file), *st,
                                      cwd=tmp_path)) if fmt == "npy" else True
    # an export never overwrites what exists (for .npy: the .jsonl beside it) unless told
    again = mrlkit("sets", "export", "s", "--output", str(out_file), *st, cwd=tmp_path)
    assert "--force" in one_line(again)
    assert mrlkit("sets", "export", "s", "--output", str(out_file), "--force", *st,
                  cwd=tmp_path).returncode == 0


def test_advise_without_labels_picks_the_cheapest_funnel_on_the_set(tmp_path):
    store = str(tmp_path / "st")
    filled(store, 150)
    r = mrlkit("advise", "--set", "s", "--target", "0.9", "--json", "--store", store,
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["choice"]["recall"] >= 0.9 and len(got["table"]) >= 4
    assert "one of them" in one_line(mrlkit("advise", cwd=tmp_path))


@pytest.mark.parametrize("args, message", [
    (["search", "s", "q", "--funnel", "64:bogus:10,384"], "bad funnel stage"),
    (["search", "s", "q", "--funnel", "999:binary:10,384"], "999 dimensions"),
    (["embed", "hi", "--dim", "1000"], "1000"),
    (["add", "s", "FILE", "--text-field", "body"], "no field 'body'"),
])
def test_bad_funnel_dimension_or_field_fails_without_loading_a_model(tmp_path, args, message):
    """torch and sentence-transformers cannot even be imported: the error comes first."""
    store = str(tmp_path / "st")
    filled(store, 10)
    (tmp_path / "d.jsonl").write_text(_lines(3))
    argv = [a.replace("FILE", str(tmp_path / "d.jsonl")) for a in args] + (
        ["--store", store] if args[0] != "embed" else [])
    code = ("import sys; sys.modules['torch'] = None; "
            "sys.modules['sentence_transformers'] = None; "
            f"sys.argv = ['mrlkit', *{argv!r}]; from mrlkit.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                       cwd=tmp_path)
    assert message in one_line(r)
