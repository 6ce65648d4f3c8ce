"""The Store contract: every backend passes the same suite (see conftest.BACKENDS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mrlkit import Funnel, errors, vectors
from mrlkit.funnel import Adaptive, Stage
from mrlkit.stores.plan import NEVER

DIM = 384
MODEL = "all-MiniLM-L6-v2"


def unit(n, dim=DIM, seed=0):
    """Clustered unit vectors, so that neighbours are meaningful."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 20), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))
    return vectors.normalize(x)


def ids(n, start=0):
    return [f"doc-{i}" for i in range(start, start + n)]


def fill(store, n=300, name="s", **kw):
    kw.setdefault("storage", "float32")  # exact comparisons with NumPy below
    # MiniLM is not Matryoshka-trained: funnels over its prefixes need the set to say so
    kw.setdefault("allow_non_mrl", True)
    store.create_set(name, MODEL, **kw)
    x = unit(n)
    store.add(name, ids(n), x, [f"text {i}" for i in range(n)],
              [{"group": i % 3, "lang": "en" if i % 2 else "de"} for i in range(n)])
    return x


def exact(x, q, k):
    return vectors.top_k(vectors.normalize(q) @ x.T, k)[0]


def snapshot(store, name="s"):
    info = store.get_set(name)
    probe = store.search(name, unit(2, info.stored_dim, seed=99), k=5,
                         funnel=Funnel.exact(info.stored_dim))
    return info.count, [[h.id for h in q] for q in probe.hits]


# --- sets --------------------------------------------------------------------------
def test_create_list_info_drop(store):
    info = store.create_set("a", MODEL)
    assert (info.name, info.model, info.truncate_dim, info.stored_dim, info.count) == \
        ("a", MODEL, None, 384, 0)
    store.create_set("b", MODEL, 128, allow_non_mrl=True, storage="float16")
    assert [s.name for s in store.list_sets()] == ["a", "b"] == store.set_names()
    b = store.get_set("b")
    assert (b.truncate_dim, b.stored_dim, b.storage) == (128, 128, "float16")
    with pytest.raises(errors.SetExistsError):
        store.create_set("a", MODEL)
    store.drop_set("a")
    assert [s.name for s in store.list_sets()] == ["b"] == store.set_names()
    with pytest.raises(errors.SetNotFoundError, match="'a'"):
        store.get_set("a")


def test_create_validates_with_the_registry(store):
    with pytest.raises(errors.NotMatryoshkaError):
        store.create_set("x", MODEL, 128)
    with pytest.raises(errors.DimensionError, match="64, 128, 256, 512, 768"):
        store.create_set("x", "nomic-embed-text", 100)
    with pytest.raises(errors.UnknownModelError):
        store.create_set("x", "no-such-model")
    with pytest.raises(errors.InvalidInputError, match="float32 or float16"):
        store.create_set("x", MODEL, storage="int8")
    assert store.list_sets() == []
    assert store.create_set("n", "nomic-embed-text", 256).stored_dim == 256


BAD_NAMES = ["", "   ", "a/b", "../up", ".", "..", "tab\there", "nul\x00", "bell\x07",
             " lead", "trail ", "x" * 129, 7, None]


def test_set_names_follow_one_rule_on_every_backend(store):
    """One regex, one message, the same refusals everywhere; nothing is created."""
    for bad in BAD_NAMES:
        with pytest.raises(errors.InvalidInputError, match="bad set name") as exc:
            store.create_set(bad, MODEL)
        assert "1 to 128 printable characters" in str(exc.value)
    assert store.list_sets() == []
    good = ["a", "x" * 128, "papers 2024", "ünïcode-名前", "a.b..c", "semi;colon'quote"]
    for name in good:
        assert store.create_set(name, MODEL).name == name
    assert [s.name for s in store.list_sets()] == sorted(good)


def test_truncate_dim_is_none_when_native_on_every_backend(store):
    """None means native, never 0, whether the native length is implied or spelled out,
    and after a reindex back to a prefix and a reopen."""
    assert store.create_set("implied", "nomic-embed-text").truncate_dim is None
    assert store.create_set("spelled", "nomic-embed-text", 768).truncate_dim is None
    assert store.create_set("prefix", "nomic-embed-text", 256).truncate_dim == 256
    store.add("spelled", ["a", "b"], unit(2, 768))
    assert store.reindex("spelled", 128).truncate_dim == 128
    for s in store.list_sets():
        assert s.truncate_dim in (None, 128, 256) and s.truncate_dim != 0
    assert {s.name: s.truncate_dim for s in store.list_sets()} == {
        "implied": None, "prefix": 256, "spelled": 128}
    assert store.info("implied").as_dict()["truncate_dim"] is None


def test_storage_summary(store):
    fill(store, 100)
    store.search("s", unit(1), k=3, funnel=Funnel.parse("64:binary:50,384"))
    info = store.info("s").as_dict()
    assert info["count"] == 100 and info["stored_dim"] == 384
    assert info["bytes_per_vector"] == 1536
    assert info["stored_bytes"] >= 100 * 1536 * 0.99
    store.create_set("half", MODEL)                # the default storage: float16
    store.add("half", ids(10), unit(10))
    half = store.info("half").as_dict()
    assert half["storage"] == "float16"
    assert half["bytes_per_vector"] == 768   # chroma: the vector file mrlkit keeps
    assert half["stored_bytes"] >= 10 * 768
    assert isinstance(info["views"], list)


# --- writes ------------------------------------------------------------------------
def test_add_get_upsert_delete(store):
    x = fill(store, 50)
    doc = store.get("s", ["doc-3", "missing"])
    assert doc[0].text == "text 3" and doc[0].metadata == {"group": 0, "lang": "en"}
    assert doc[1] is None
    with pytest.raises(errors.InvalidInputError, match="already in set"):
        store.add("s", ["doc-3"], x[:1], ["again"])
    new = unit(1, seed=7)
    store.add("s", ["doc-3"], new, ["replaced"], [{"v": 2}], upsert=True)
    assert store.get_set("s").count == 50
    assert store.get("s", ["doc-3"])[0].text == "replaced"
    hit = store.search("s", new, k=1, funnel=Funnel.exact(DIM)).hits[0][0]
    assert hit.id == "doc-3" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert store.delete("s", ["doc-3", "doc-4", "nope"]) == 2
    assert store.get_set("s").count == 48
    found = {h.id for h in store.search("s", x[:10], k=50, funnel=Funnel.exact(DIM)).hits[4]}
    assert "doc-4" not in found and "doc-3" not in found


def test_precomputed_vectors_are_normalised(store):
    store.create_set("s", MODEL)
    store.add("s", ["a"], unit(1) * 7.0)
    hit = store.search("s", unit(1), k=1).hits[0][0]
    assert hit.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("bad", ["wrong_dim", "nan", "empty_text", "dup_ids", "len_mismatch",
                                 "empty_batch"])
def test_bad_input_is_refused_and_leaves_the_store_unchanged(store, bad):
    fill(store, 40)
    before = snapshot(store)
    x = unit(3, seed=5)
    args = {"ids": ["n1", "n2", "n3"], "embeddings": x, "texts": ["a", "b", "c"]}
    if bad == "wrong_dim":
        args["embeddings"] = unit(3, 256)
    elif bad == "nan":
        args["embeddings"] = x.copy()
        args["embeddings"][1, 5] = np.nan
    elif bad == "empty_text":
        args["texts"] = ["a", " ", "c"]
    elif bad == "dup_ids":
        args["ids"] = ["n1", "n2", "n1"]
    elif bad == "len_mismatch":
        args["texts"] = ["a", "b"]
    else:
        args = {"ids": [], "embeddings": np.empty((0, DIM)), "texts": []}
    with pytest.raises(errors.MrlkitError):
        store.add("s", **args)
    assert snapshot(store) == before


def test_unknown_set_is_a_clear_error(store):
    for call in (lambda: store.add("nope", ["a"], unit(1)),
                 lambda: store.search("nope", unit(1)),
                 lambda: store.delete("nope", ["a"]),
                 lambda: store.info("nope")):
        with pytest.raises(errors.SetNotFoundError, match="nope"):
            call()


# --- other processes ---------------------------------------------------------------
def _python(code: str, env=None):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def _let_go(store):
    """A backend that locks its data to one process (Qdrant's local mode) lets go first."""
    if getattr(store, "single_process", False):
        store.close()


def test_another_process_reads_what_is_committed(store, location):
    fill(store, 30)
    _let_go(store)
    r = _python(f"""
        import json
        from mrlkit.stores import open_store
        s = open_store({location!r})
        print(json.dumps([s.get_set("s").count, s.get("s", ["doc-7"])[0].text]))
    """)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [30, "text 7"]


@pytest.mark.parametrize("crash_at", ["after_vectors", "before_commit"])
def test_kill_9_in_the_middle_of_an_add(store, location, crash_at):
    store.create_set("s", MODEL)
    _let_go(store)
    r = _python(f"""
        import numpy as np
        from mrlkit.stores import open_store
        from mrlkit import vectors
        s = open_store({location!r})
        rng = np.random.default_rng(0)
        for b in range(3):
            if b == 2:
                import os
                from mrlkit.stores import faults
                faults.install(lambda n: n == {crash_at!r} and os.kill(os.getpid(), 9))
            x = vectors.normalize(rng.normal(size=(100, 384)))
            s.add("s", [f"b{{b}}-{{i}}" for i in range(100)], x,
                  [f"batch {{b}}" for i in range(100)])
            print("committed", b, flush=True)
    """)
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert r.stdout.split() == ["committed", "0", "committed", "1"]
    from mrlkit.stores import open_store

    again = open_store(location)
    assert again.get_set("s").count == 200
    assert again.get("s", ["b0-0", "b1-99", "b2-0"])[2] is None
    # the store keeps working: a new batch lands and its vectors are its own
    fresh = unit(5, seed=42)
    again.add("s", ids(5), fresh)
    res = again.search("s", fresh, k=1, funnel=Funnel.exact(DIM))
    assert [q[0].id for q in res.hits] == ids(5)
    assert again.get_set("s").count == 205


# --- search ------------------------------------------------------------------------
def test_exact_search_matches_numpy(store):
    x = fill(store, 400)
    q = unit(8, seed=3)
    res = store.search("s", q, k=10, funnel=Funnel.exact(DIM))
    expected = exact(x, q, 10)
    assert [[h.id for h in hits] for hits in res.hits] == \
        [[f"doc-{i}" for i in row] for row in expected]
    assert res.hits[0][0].text.startswith("text ")
    assert [t.dim for t in res.timings] == [DIM]


@pytest.mark.parametrize("spec", ["64:binary:{n},384", "64:binary:{n},128:int8:{n},384",
                                  "128:float16:{n},384:float32"])
def test_funnel_equals_exact_when_every_stage_keeps_enough(store, spec):
    n = 300
    x = fill(store, n)
    q = unit(5, seed=11)
    funnel = Funnel.parse(spec.format(n=n))
    res = store.search("s", q, k=10, funnel=funnel)
    exact_res = store.search("s", q, k=10, funnel=Funnel.exact(DIM))
    assert [[h.id for h in r] for r in res.hits] == [[h.id for h in r] for r in exact_res.hits]
    np.testing.assert_allclose([[h.score for h in r] for r in res.hits],
                               [[h.score for h in r] for r in exact_res.hits], atol=1e-5)
    assert len(res.timings) == len(funnel.stages)
    assert res.dims_used[0] == [s.dim for s in funnel.stages]
    del x


def test_funnel_recall_on_clustered_data(store):
    x = fill(store, 2000)
    q = vectors.normalize(x[:20] + 0.3 * unit(20, seed=8))
    res = store.search("s", q, k=10, funnel=Funnel.parse("384:binary:200,384"))
    truth = exact(x, q, 10)
    got = [[int(h.id.split("-")[1]) for h in r] for r in res.hits]
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])
    assert recall >= 0.9


def test_batched_queries_equal_single_queries(store):
    fill(store, 200)
    q = unit(4, seed=21)
    funnel = Funnel.parse("64:binary:100,384")
    batch = store.search("s", q, k=5, funnel=funnel).hits
    single = [store.search("s", q[i:i + 1], k=5, funnel=funnel).hits[0] for i in range(4)]
    assert [[h.id for h in r] for r in batch] == [[h.id for h in r] for r in single]


def test_metadata_filters(store):
    x = fill(store, 300)
    q = unit(2, seed=4)
    res = store.search("s", q, k=20, filters={"group": 1, "lang": "en"},
                       funnel=Funnel.parse("64:binary:100,384"))
    for hits in res.hits:
        assert hits and all(h.metadata == {"group": 1, "lang": "en"} for h in hits)
    allowed = np.array([i for i in range(300) if i % 3 == 1 and i % 2 == 1])
    expected = allowed[exact(x[allowed], q, 20)]
    exact_res = store.search("s", q, k=20, filters={"group": 1, "lang": "en"},
                             funnel=Funnel.exact(DIM))
    assert [[h.id for h in r] for r in exact_res.hits] == \
        [[f"doc-{i}" for i in row] for row in expected]
    assert store.search("s", q, k=5, filters={"group": 7}).hits == [[], []]


def test_views_follow_writes(store):
    fill(store, 100)
    funnel = Funnel.parse("64:binary:100,128:int8:50,384")
    store.search("s", unit(1), k=5, funnel=funnel)  # builds the views
    new = unit(3, seed=77)
    store.add("s", ["late-0", "late-1", "late-2"], new)
    res = store.search("s", new, k=1, funnel=funnel)
    assert [r[0].id for r in res.hits] == ["late-0", "late-1", "late-2"]


def test_reindex_to_a_smaller_prefix_needs_no_model(store):
    x = fill(store, 200, allow_non_mrl=False)
    with pytest.raises(errors.ReembedRequiredError, match="embedded again"):
        store.reindex("s", 512, allow_non_mrl=True)
    with pytest.raises(errors.NotMatryoshkaError):
        store.reindex("s", 128)
    info = store.reindex("s", 128, allow_non_mrl=True)
    assert (info.stored_dim, info.truncate_dim, info.count) == (128, 128, 200)
    q = unit(3, seed=2)
    res = store.search("s", vectors.truncate(q, 128), k=5, funnel=Funnel.exact(128))
    expected = exact(vectors.truncate(x, 128), vectors.truncate(q, 128), 5)
    assert [[h.id for h in r] for r in res.hits] == \
        [[f"doc-{i}" for i in row] for row in expected]
    with pytest.raises(errors.MrlkitError, match="128"):
        store.search("s", q, k=5)  # 384-d queries no longer fit


def test_adaptive_search(store):
    fill(store, 500)
    q = unit(6, seed=13)
    funnel = Funnel.parse("64:binary:200,128:float32:50,384")
    full = store.search("s", q, k=5, funnel=funnel)
    never = store.search("s", q, k=5, funnel=funnel, adaptive=Adaptive(margin=10.0))
    assert [[h.id for h in r] for r in never.hits] == [[h.id for h in r] for r in full.hits]
    always = store.search("s", q, k=5, funnel=funnel, adaptive=Adaptive(margin=0.0))
    # decided after the first stage, yet its top k is rescored at the last: every score
    # a user sees is a full-vector cosine, never a Hamming count
    assert all(d == [64, 384] for d in always.dims_used)
    assert all(len(r) == 5 for r in always.hits)
    everything = store.search("s", q, k=500, funnel=Funnel.exact(DIM)).hits
    for r, e in zip(always.hits, everything):
        exact_scores = {h.id: h.score for h in e}
        assert [h.score for h in r] == sorted((h.score for h in r), reverse=True)
        np.testing.assert_allclose([h.score for h in r], [exact_scores[h.id] for h in r],
                                   atol=1e-5)


def test_bad_funnels_are_refused(store):
    fill(store, 20)
    with pytest.raises(errors.DimensionError, match="1..384"):
        store.search("s", unit(1), funnel=Funnel((Stage(512),)))
    with pytest.raises(errors.InvalidInputError, match="keep at least"):
        store.search("s", unit(1), k=10, funnel=Funnel.parse("64:binary:5,384"))


def test_empty_set_search(store):
    store.create_set("s", MODEL)
    assert store.search("s", unit(2), k=3).hits == [[], []]


# --- adapt: an orthogonal transform kept with the set ----------------------------------
def test_adapt_keeps_full_dimension_results_and_transforms_queries_like_documents(store):
    from mrlkit.training import fit_transform

    x = fill(store, 300)
    q = unit(4, seed=31)
    before = store.search("s", q, k=10, funnel=Funnel.exact(DIM))
    ids_, stored = store.vectors("s")
    t = fit_transform(stored, "pca")
    info = store.adapt("s", t)
    assert (info.adapted, info.count) == ("pca", 300) and info.mrl_dims == t.mrl_dims
    after = store.search("s", q, k=10, funnel=Funnel.exact(DIM))
    assert [[h.id for h in r] for r in after.hits] == [[h.id for h in r] for r in before.hits]
    np.testing.assert_allclose([[h.score for h in r] for r in after.hits],
                               [[h.score for h in r] for r in before.hits], atol=1e-4)
    # stored vectors are the transformed ones; a new document is transformed on the way in
    _, now = store.vectors("s")
    np.testing.assert_allclose(now[ids_.index("doc-5")], t.apply(x[5:6])[0], atol=1e-3)
    new = unit(1, seed=99)
    store.add("s", ["new"], new)
    hit = store.search("s", new, k=1, funnel=Funnel.parse("64:float32:50,384")).hits[0][0]
    assert hit.id == "new" and hit.score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(errors.InvalidInputError, match="adapted"):
        store.reindex("s", 128, allow_non_mrl=True)
    # a second open of the store still applies the transform
    assert store.get_set("s").adapted == "pca"


def test_mrlkit_adapt_fits_applies_and_composes_from_the_python_api(store):
    import mrlkit

    fill(store, 200)
    q = unit(3, seed=41)
    before = store.search("s", q, k=5, funnel=Funnel.exact(DIM))
    assert mrlkit.adapt(store, "s", "pca").adapted == "pca"
    info = mrlkit.adapt(store, "s", "pca")  # a second transform composes with the first
    assert info.adapted == "pca+pca" and info.count == 200
    after = store.search("s", q, k=5, funnel=Funnel.exact(DIM))
    assert [[h.id for h in r] for r in after.hits] == [[h.id for h in r] for r in before.hits]
    with pytest.raises(errors.InvalidInputError, match="pca or adaptor"):
        mrlkit.adapt(store, "s", "svd")


@pytest.mark.parametrize("crash_at", ["before_switch", "mid_switch"])
def test_kill_9_in_the_middle_of_adapt_leaves_the_set_whole(store, location, crash_at):
    """Adapt rewrites every stored vector; a process killed while it does leaves the set
    either as it was or fully adapted, never half of each (or gone)."""
    x = fill(store, 300)
    _let_go(store)
    r = _python(f"""
        from mrlkit.stores import open_store
        from mrlkit.training import fit_transform
        s = open_store({location!r})
        t = fit_transform(s.vectors("s")[1], "pca")
        import os
        from mrlkit.stores import faults
        faults.install(lambda n: n == {crash_at!r} and os.kill(os.getpid(), 9))
        s.adapt("s", t)
        print("adapted", flush=True)
    """)
    # a backend with no such step finishes the adapt; the set must then be adapted
    assert r.returncode in (-9, 0), r.stderr
    from mrlkit.stores import open_store

    again = open_store(location)
    info = again.get_set("s")
    assert info.count == 300 and info.adapted in (None, "pca")
    if r.returncode == 0:
        assert info.adapted == "pca"
    ids_, now = again.vectors("s")
    assert sorted(ids_) == sorted(ids(300))
    if info.adapted is None:
        np.testing.assert_allclose(now[ids_.index("doc-5")], x[5], atol=1e-5)
    # either way full-dimension search returns the documents themselves
    res = again.search("s", x[:5], k=1, funnel=Funnel.exact(DIM))
    assert [q[0].id for q in res.hits] == ids(5)
    _let_go(again)


# --- values that would break a set later, filters, bounds (the same on every backend) ---
@pytest.mark.parametrize("case", ["nan_meta", "inf_meta", "huge_int_meta", "nul_text",
                                  "none_id", "list_id", "zero_vector", "nan_vector"])
def test_values_that_would_break_a_set_later_are_refused_naming_the_document(store, case):
    fill(store, 20)
    before = snapshot(store)
    ids_, x, texts, meta = ["n1", "n2"], unit(2, seed=12), ["a", "b"], [{}, {}]
    if case == "nan_meta":
        meta = [{}, {"score": float("nan")}]
    elif case == "inf_meta":
        meta = [{}, {"nested": {"v": [1, float("inf")]}}]
    elif case == "huge_int_meta":
        meta = [{}, {"n": 2**64}]
    elif case == "nul_text":
        texts = ["a", "b\x00c"]
    elif case == "none_id":
        ids_ = ["n1", None]
    elif case == "list_id":
        ids_ = ["n1", ["n2"]]
    elif case == "zero_vector":
        x = x.copy()
        x[1] = 0
    else:
        x = x.copy()
        x[1, 3] = np.nan
    with pytest.raises(errors.InvalidInputError) as exc:
        store.add("s", ids_, x, texts, meta)
    assert ("n2" in str(exc.value)) or ("None" in str(exc.value))
    assert snapshot(store) == before


def test_a_vector_whose_squares_overflow_float32_is_normalised_not_zeroed(store):
    store.create_set("s", MODEL, storage="float32")
    v = unit(1, seed=3) * np.float32(1e30)
    store.add("s", ["big"], v)
    hit = store.search("s", unit(1, seed=3), k=1, funnel=Funnel.exact(DIM)).hits[0][0]
    assert hit.id == "big" and hit.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("value", [[1], {"x": 1}, None, 2**63, float("nan"), "a\x00",
                                   "\ud800"])
def test_filters_follow_one_grammar_on_every_backend(store, value):
    fill(store, 20)
    with pytest.raises(errors.InvalidInputError,
                       match="a filter value must be a string|NUL|lone surrogate"):
        store.search("s", unit(1), k=3, filters={"group": value})


@pytest.mark.parametrize("where", ["metadata key", "nested metadata key", "metadata value",
                                   "text", "id", "filter key"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_nul_and_lone_surrogates_are_refused_alike_on_every_backend(store, where, bad):
    """The same answer everywhere (SQLite would store a NUL, PostgreSQL refuses it, no
    engine can encode a lone surrogate): refused by the core, naming the field, and
    nothing is written."""
    fill(store, 5)
    before = store.get_set("s").count
    kind = "NUL" if "\x00" in bad else "lone surrogate"
    with pytest.raises(errors.InvalidInputError, match=kind):
        if where == "filter key":
            store.search("s", unit(1), k=3, filters={bad: 1})
        else:
            doc = {"ids": ["new"], "texts": ["a text"], "metadata": [{"k": "v"}]}
            if where == "metadata key":
                doc["metadata"] = [{bad: 1}]
            elif where == "nested metadata key":
                doc["metadata"] = [{"k": {bad: 1}}]
            elif where == "metadata value":
                doc["metadata"] = [{"k": bad}]
            elif where == "text":
                doc["texts"] = [bad]
            else:
                doc["ids"] = [bad]
            store.add("s", doc["ids"], unit(1, seed=7), doc["texts"], doc["metadata"])
    assert store.get_set("s").count == before


def test_filters_match_equal_values_on_every_backend(store):
    store.create_set("s", MODEL)
    store.add("s", ["a", "b", "c", "d"], unit(4),
              metadata=[{"lang": "en", "year": 2020, "w": 0.5},
                        {"lang": "de", "year": 2020, "w": 0.5},
                        {"lang": "en", "year": 2021, "w": 1.5}, {}])
    def found(flt):
        return sorted(h.id for h in store.search("s", unit(1), k=4, filters=flt).hits[0])
    assert found({"lang": "en"}) == ["a", "c"]
    assert found({"year": 2020}) == ["a", "b"]
    assert found({"lang": "en", "year": 2021}) == ["c"]
    assert found({"w": 0.5}) == ["a", "b"]
    assert found({"lang": "fr"}) == []


def test_funnels_obey_the_sets_dimension_rules_on_every_backend(store):
    """A prefix of a model that is not Matryoshka-trained needs the set to allow it, and
    a Matryoshka model's prefix must be one it was trained for: the messages `embed
    --dim` gives."""
    fill(store, 20, allow_non_mrl=False)
    with pytest.raises(errors.NotMatryoshkaError, match="not Matryoshka-trained"):
        store.search("s", unit(1), k=3, funnel=Funnel.parse("64:float32:10,384"))
    assert store.search("s", unit(1), k=3, funnel=Funnel.parse("384:binary:10,384")).hits[0]
    assert not store.allows("s", Funnel.parse("192:binary:10,384"))
    store.create_set("n", "nomic-embed-text-v1.5")
    store.add("n", ["a"], vectors.normalize(np.ones((1, 768))))
    with pytest.raises(errors.DimensionError, match="trained for dimensions 64, 128"):
        store.search("n", np.ones((1, 768)), k=1, funnel=Funnel.parse("100:float32:5,768"))
    assert store.search("n", np.ones((1, 768)), k=1,
                        funnel=Funnel.parse("64:float32:5,768")).hits[0]


@pytest.mark.parametrize("spec", ["64:binary:9223372036854775808,384", "64:binary:0,384"])
def test_a_keep_out_of_bounds_is_refused(store, spec):
    fill(store, 20)
    with pytest.raises(errors.InvalidInputError, match="keeps"):
        store.search("s", unit(1), k=3, funnel=Funnel.parse(spec))
    with pytest.raises(errors.InvalidInputError, match="k must be"):
        store.search("s", unit(1), k=2**63)


def test_int8_calibration_follows_a_growing_set(store):
    """A calibration fitted on the first 2 rows is refitted once the set has grown, so a
    search during indexing does not freeze int8 quality (recall was 0.64 before)."""
    store.create_set("s", MODEL)
    x = unit(2600, seed=21)
    store.add("s", ids(2), x[:2])
    int8 = Funnel.parse(f"{DIM}:int8")
    store.search("s", x[:1], k=1, funnel=int8)  # fits a calibration on 2 rows
    store.add("s", ids(2598, start=2), x[2:])
    q = vectors.normalize(x[:40] + 0.3 * unit(40, seed=22))
    got = store.search("s", q, k=10, funnel=int8)
    found = [[int(h.id.split("-")[1]) for h in r] for r in got.hits]
    truth = exact(x, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.95, recall


def test_documents_page_through_every_live_document_once(store):
    fill(store, 45)
    store.delete("s", ["doc-3"])
    pages = [store.documents("s", offset=o, limit=10) for o in range(0, 50, 10)]
    seen = [d.id for page in pages for d in page]
    assert len(seen) == 44 and set(seen) == {f"doc-{i}" for i in range(45)} - {"doc-3"}
    first = store.documents("s", limit=1)[0]
    assert first.text == store.get("s", [first.id])[0].text
    with pytest.raises(errors.InvalidInputError, match="limit"):
        store.documents("s", limit=0)


# --- the engine's own first-stage index (local: HNSW graph on a prefix) ---------------
def index_on(store, ef=400):
    """Make the engine's first-stage index serve even a small set, walked wide."""
    store.native_from = 0
    if hasattr(store.engine, "ef_search"):
        store.engine.ef_search = min(ef, 1000)


def index_off(store):
    store.native_from = NEVER


GRAPH = Funnel.parse("384:float32:100,384")


@pytest.mark.native_only
def test_the_index_answers_the_exact_funnels_top_10_at_high_ef(store):
    fill(store, 1000)
    q = unit(10, seed=31)
    store.index("s", GRAPH)
    index_off(store)
    exact_res = store.search("s", q, k=10, funnel=GRAPH)
    index_on(store)
    res = store.search("s", q, k=10, funnel=GRAPH)
    if store.kind == "local":
        assert res.timings[0].method == "ann"
    assert [[h.id for h in r] for r in res.hits] == [[h.id for h in r] for r in exact_res.hits]


@pytest.mark.native_only
def test_rows_added_after_the_index_was_built_are_found(store, monkeypatch):
    fill(store, 600)
    store.index("s", GRAPH)
    index_on(store)
    store.search("s", unit(1, seed=1), k=10, funnel=GRAPH)  # the index now covers 600 rows
    if store.kind == "local":  # from here on the graph is extended, never built anew
        from mrlkit.stores import local_graph

        def no_rebuild(*args):
            raise AssertionError("the graph index was rebuilt from scratch")
        monkeypatch.setattr(local_graph, "_new_index", no_rebuild)
    # a few rows (scored beside the graph on local), then many (the graph is extended)
    for n, start, seed in ((30, 600, 51), (1200, 630, 52)):
        new = unit(n, seed=seed)
        store.add("s", ids(n, start), new)
        res = store.search("s", new[:8], k=1, funnel=GRAPH)
        assert [r[0].id for r in res.hits] == ids(8, start)
    if store.kind == "local":
        info = store.info("s")
        assert any(v.kind.startswith("HNSW") for v in info.views)


@pytest.mark.native_only
def test_deleted_rows_are_never_returned_by_the_index(store):
    x = fill(store, 800)
    store.index("s", GRAPH)
    index_on(store)
    q = x[:20]
    store.delete("s", ids(20))                    # each query's own document
    res = store.search("s", q, k=10, funnel=GRAPH)
    returned = {h.id for r in res.hits for h in r}
    assert not returned & set(ids(20))
    assert all(len(r) == 10 for r in res.hits)


def test_kill_9_while_the_index_is_extended_leaves_a_store_that_answers(tmp_path):
    """The local engine's graph file is mrlkit's own (the other engines keep theirs)."""
    from mrlkit.stores import open_store

    location = str(tmp_path / "local")
    store = open_store(location)
    fill(store, 600)
    store.index("s", GRAPH)
    new = unit(1500, seed=61)
    store.add("s", ids(1500, 600), new)
    r = _python(f"""
        import numpy as np
        from mrlkit import Funnel
        from mrlkit.stores import open_store
        import os
        from mrlkit.stores import faults
        faults.install(lambda n: n == "graph_before_rename" and os.kill(os.getpid(), 9))
        s = open_store({location!r}, native_from=0)
        s.search("s", np.ones((1, 384), np.float32), funnel=Funnel.parse({str(GRAPH)!r}))
    """)
    assert r.returncode == -9, (r.returncode, r.stderr)
    again = open_store(location)
    index_on(again)
    res = again.search("s", new[:5], k=1, funnel=GRAPH)
    assert [h[0].id for h in res.hits] == ids(5, 600)
    assert res.timings[0].method == "ann"


def test_graph_work_runs_beside_searches_and_survives_kill_9(tmp_path):
    """Rows past the graph are scored exactly while a background thread extends it; a
    graph with many deleted rows is rebuilt without them, in the background too. A
    process killed mid-compaction leaves the old graph, which serves (never a deleted
    row), and the next process completes the work."""
    from pathlib import Path

    from mrlkit.stores import local_graph, open_store

    location = str(tmp_path / "local")
    store = open_store(location, native_from=0)
    x = fill(store, 1200)
    store.index("s", GRAPH)
    new = unit(local_graph.EXTEND_AT + 200, seed=62)
    store.add("s", ids(len(new), 1200), new)
    res = store.search("s", new[:5], k=1, funnel=GRAPH)  # the tail, scored exactly
    assert [h[0].id for h in res.hits] == ids(5, 1200)
    assert store.engine.settle(timeout=600)  # generous: a busy machine
    ann = Path(location) / "sets" / "1" / "ann"
    meta = json.loads((ann / "g0-hnsw-d384.json").read_text())
    assert meta["rows"] == 1200 + len(new)  # extended
    dead = ids(600)  # a quarter of the graph: past COMPACT_AT
    store.delete("s", dead)
    store.close()
    r = _python(f"""
        import os
        from mrlkit import Funnel
        from mrlkit.stores import faults, open_store
        faults.install(lambda n: n == "graph_before_rename" and os.kill(os.getpid(), 9))
        s = open_store({location!r}, native_from=0)
        s.search("s", s.vectors("s")[1][:1], funnel=Funnel.parse({str(GRAPH)!r}))
        s.engine.settle()
    """)
    assert r.returncode == -9, (r.returncode, r.stderr)
    record = ann / "g0-hnsw-d384.json"
    assert json.loads(record.read_text())["labels"] is None  # the old graph, on disk
    again = open_store(location, native_from=0)
    res = again.search("s", x[:50], k=10, funnel=GRAPH)
    assert res.timings[0].method == "ann"
    assert not {h.id for r in res.hits for h in r} & set(dead)
    assert again.engine.settle(timeout=600)
    meta = json.loads(record.read_text())  # compacted: the graph holds live rows only
    assert meta["labels"] and len(list(ann.glob("*.rows"))) == 1
    assert meta["rows"] == 1200 + len(new)
    res = again.search("s", x[600:605], k=1, funnel=GRAPH)
    assert [h[0].id for h in res.hits] == ids(5, 600)
    assert again.check("s").ok


def test_the_deletion_log_is_checked_against_the_catalogue(tmp_path):
    """The local engine's deletion log (dead.bin) is what searches mask by: one that was
    altered is found by `sets check` and started again from the catalogue."""
    from pathlib import Path

    from mrlkit.stores import open_store

    store = open_store(str(tmp_path))
    x = fill(store, 50)
    store.delete("s", ids(3))
    log = Path(tmp_path) / "sets" / "1" / "dead.bin"
    assert np.fromfile(log, "<i8").tolist() == [0, 1, 2]
    assert store.check("s").ok
    np.array([0, 1, 7], "<i8").tofile(log)  # row 7 is live: it would vanish from searches
    report = store.check("s")
    assert not report.ok and "deletion log" in str(report.problems)
    assert "deletion log" in str(store.check("s", repair=True).repaired)
    assert store.check("s").ok
    res = store.search("s", x[7:8], k=1, funnel=Funnel.exact(DIM))
    assert res.hits[0][0].id == "doc-7"
    store.delete("s", ids(1, 10))  # the next write starts the log again
    assert sorted(np.fromfile(log, "<i8").tolist()) == [0, 1, 2, 10]
    assert store.check("s").ok


# --- the recall target: a plan measured on the set's own data -------------------------
def test_a_tuned_set_keeps_its_target_on_held_out_queries_and_says_how(store):
    x = fill(store, 2000)
    tuned = store.tune("s", recall=0.9, probes=100)
    assert tuned.recall >= 0.9 and tuned.low <= tuned.recall <= tuned.high
    assert (tuned.probes, tuned.source, tuned.rows, tuned.k) == (100, "documents", 2000, 10)
    assert any(t["funnel"] == tuned.funnel for t in tuned.tried)
    # held out: queries near documents the probes were not, searched as a user would
    q = vectors.normalize(x[1::7][:40] + 0.3 * unit(40, seed=77))
    res = store.search("s", q, k=10)
    assert res.funnel.startswith(tuned.funnel.split(",")[0])
    got = [[int(h.id.split("-")[1]) for h in r] for r in res.hits]
    held_out = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, exact(x, q, 10))])
    assert held_out >= 0.9 - 0.05, (held_out, tuned.funnel)
    info = store.info("s").as_dict()
    assert info["tuned"]["funnel"] == tuned.funnel and info["tuned"]["probes"] == 100
    assert "tuned: recall@10" in info["funnel_reason"] and "probe documents" in \
        info["funnel_reason"]
    # a stricter target picks from the same measurements, never an unmeasured plan
    strict = store.search("s", q[:2], k=10, recall=0.999)
    assert strict.funnel.split(",")[0] in {t["funnel"].split(",")[0] for t in tuned.tried
                                          if t["recall"] >= 0.999} | {"384:float32:10"}
    # grown ×2: the plan is stale, said so, and measured again
    store.add("s", ids(2100, 2000), unit(2100, seed=5))
    assert store.needs_tune("s") is (store.native_from >= 0)
    assert "stale" in store.info("s").funnel_reason
    again = store.tune("s", recall=0.9, probes=50)
    assert again.rows == 4100 and not store.needs_tune("s")
    # a truncate drops the measured plan (it was measured on vectors that are gone) and
    # keeps the set's target
    store.truncate("s", 128, allow_non_mrl=True)
    assert store.info("s").tuned == {"target": 0.9}


def test_a_plan_that_cannot_be_read_leaves_the_set_untuned_and_searchable(store):
    x = fill(store, 50)
    for damaged, shown in (("{not json", None), ('"a string"', None),
                           ('{"funnel": "384", "unknown": 1}', {"funnel": "384", "unknown": 1}),
                           ('{"target": "high"}', {"target": "high"})):
        try:
            store.engine.save_plan("s", damaged)
        except errors.StoreError:  # pgvector's jsonb column cannot hold text that is not
            continue               # JSON: that damage cannot happen there
        res = store.search("s", x[:2], k=3)
        assert [h[0].id for h in res.hits] == ids(2)
        assert store.info("s").tuned == shown
        assert store.needs_tune("s") is (store.native_from >= 0)
        assert store.tune("s", probes=20).target == 0.95


def test_a_set_keeps_its_own_target_and_is_tuned_when_it_needs_it(store):
    """`sets create --recall`: the target is the set's, every tune keeps it; the
    automatic tune (tune_if_needed) runs once past the threshold and again at ×2."""
    with pytest.raises(errors.InvalidInputError, match="recall"):
        store.create_set("bad", MODEL, recall=1.5)
    fill(store, 600, recall=0.99)
    assert store.info("s").tuned == {"target": 0.99}
    tuned = store.tune_if_needed("s")
    if store.native_from < 0:  # generic mode: no first stage of the engine ever pays
        assert tuned is None and not store.needs_tune("s")
        return
    assert tuned is not None and tuned.target == 0.99 and tuned.recall >= 0.99
    assert store.tune_if_needed("s") is None  # fresh: nothing to do
    store.add("s", ids(700, 600), unit(700, seed=9))  # 1,300 rows: doubled
    again = store.tune_if_needed("s")
    assert again is not None and again.rows == 1300 and again.target == 0.99
    assert store.info("s").tuned["target"] == 0.99


INDEX_METHODS = {"ann", "sql:hnsw", "chroma-hnsw", "qdrant query"}


def test_nothing_approximate_is_ever_called_exact(store):
    """An index's walk is approximate: it never serves a one-stage funnel (exact search)
    and no message that names such a plan says "exact"; what says exact is exact."""
    x = fill(store, 400)
    store.index("s", GRAPH)
    q = x[:5]
    truth = exact(x, q, 10)
    for funnel in (None, Funnel.exact(DIM), GRAPH):
        res = store.search("s", q, k=10, funnel=funnel)
        p = store.plan("s", funnel)
        walked = res.timings[0].method in INDEX_METHODS
        one_stage = len(Funnel.parse(res.funnel).stages) == 1
        assert not (walked and one_stage), (res.funnel, res.timings[0].method)
        if walked:
            assert "exact" not in p.why and "exact" not in res.timings[0].method
        if one_stage:  # said to be exact, and it is
            assert [[int(h.id.split("-")[1]) for h in r] for r in res.hits] == \
                [list(t) for t in truth]
    info = store.info("s")
    if "exact scan" in info.funnel_reason:
        assert len(Funnel.parse(info.default_funnel).stages) == 1
    else:
        assert "approximate" in info.funnel_reason or "tuned" in info.funnel_reason


def test_check_and_tune_measure_an_adapted_set_as_its_searches_find(store):
    """Probes from the stored vectors of an adapted set are undone before they search
    (a search transforms its queries): transformed twice, `check` reported 0.668 where
    real searches found 0.982."""
    from mrlkit.evaluation.selfcheck import funnel_recall
    from mrlkit.training import fit_transform

    x = fill(store, 600)
    store.adapt("s", fit_transform(store.vectors("s")[1], "pca"))
    wide = Funnel.parse("384:float32:50,384")  # keeps every true top 10: recall 1
    got = funnel_recall(store, "s", wide, sample=60)
    assert got.recall >= 0.99 and got.sample == 60 and got.low <= got.recall <= got.high
    # and a real search from the model's own vectors agrees with what check measures
    short = Funnel.parse("192:float32:40,384")
    checked = funnel_recall(store, "s", short, sample=60).recall
    q = x[np.unique(np.linspace(0, 599, 60).astype(np.int64))]  # the same documents

    def held_out(funnel):  # each probe's hits without itself, its own top hit
        return [[h.id for h in r][1:] for r in store.search("s", q, k=11, funnel=funnel).hits]
    truth, found = held_out(Funnel.exact(DIM)), held_out(short)
    real = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert abs(checked - real) <= 0.02, (checked, real)


# --- a live set: writers, deleters and filtered searchers at once ---------------------
def test_concurrent_writers_deleters_and_filtered_searchers(store):
    """For a bounded time (2 writers, 1 deleter, 2 searchers, each a fixed number of
    steps): no call fails, every search returns live documents of its filter only,
    every acknowledged write is visible afterwards (and every delete gone), and the
    set checks clean."""
    import threading

    fill(store, 400)
    store.index("s", GRAPH)
    x = unit(2 * 30 * 8, seed=77)
    errors: list[BaseException] = []
    added: list[str] = []
    deleted: list[str] = []
    lock = threading.Lock()

    def guarded(step):
        def run(*args):
            try:
                step(*args)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
        return run

    @guarded
    def writer(w: int) -> None:
        for b in range(30):
            start = (w * 30 + b) * 8
            new = [f"w{w}-{start + i}" for i in range(8)]
            store.add("s", new, x[start:start + 8], [f"t{start + i}" for i in range(8)],
                      [{"group": i % 3, "lang": "en"} for i in range(8)])
            with lock:
                added.extend(new)

    @guarded
    def deleter() -> None:
        for b in range(40):
            gone = ids(5, 5 * b)
            store.delete("s", gone)
            with lock:
                deleted.extend(gone)

    @guarded
    def searcher(n: int) -> None:
        for i in range(40):
            res = store.search("s", x[(n * 40 + i) % len(x)][None], k=5,
                               filters={"group": n % 3} if i % 2 else None,
                               funnel=GRAPH if i % 3 == 0 else None)
            assert res.hits[0]
            if i % 2:
                assert all(h.metadata["group"] == n % 3 for h in res.hits[0])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)] + \
        [threading.Thread(target=deleter)] + \
        [threading.Thread(target=searcher, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)  # generous: a busy machine; the steps are bounded
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert all(d is not None for d in store.get("s", added))
    assert all(d is None for d in store.get("s", deleted))
    assert store.get_set("s").count == 400 + len(added) - len(deleted)
    res = store.search("s", x[:20], k=1, funnel=Funnel.exact(DIM))
    assert {h[0].id for h in res.hits} <= set(added)
    gone = set(deleted)
    res = store.search("s", unit(20, seed=3), k=10)
    assert not {h.id for r in res.hits for h in r} & gone
    report = store.check("s")
    assert report.ok, report
