"""Funnel parsing, defaults and the ANN first stage."""

from __future__ import annotations

import numpy as np
import pytest

from mrlkit import errors, funnel, vectors
from mrlkit.funnel import Funnel, Stage
from mrlkit.stores import plan
from mrlkit.stores.local import LocalSource, LocalStore


def test_parse_round_trip():
    f = Funnel.parse("64:binary:1000, 256:int8:100,384")
    assert f.stages == (Stage(64, "binary", 1000), Stage(256, "int8", 100), Stage(384))
    assert str(Funnel.parse(str(f))) == str(f)
    assert Funnel.parse("128:500").stages[0] == Stage(128, "float32", 500)
    for bad in ("", "x", "64:binary:1:2", "64:int4"):
        with pytest.raises(errors.InvalidInputError, match="bad funnel stage"):
            Funnel.parse(bad)


def test_default_funnel():
    assert str(plan.default_funnel(1000, 384, False)) == "384:float32"
    assert str(plan.default_funnel(10**6, 384, False)) == "384:float32:50,384:float32"
    assert str(plan.default_funnel(10**6, 768, True, k=20)) == "64:float32:100,768:float32"
    assert str(plan.default_funnel(10**6, 3072, True)) == "256:float32:50,3072:float32"
    assert str(plan.default_funnel(19_999, 768, True)) == "768:float32"


def test_ann_first_stage_finds_the_neighbours(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64))
    x = vectors.normalize(centres[rng.integers(0, 50, 3000)] + 0.4 * rng.normal(size=(3000, 64)))
    store = LocalStore(tmp_path, native_from=0)
    store.create_set("s", "text-embedding-3-small", 64)
    store.add("s", [str(i) for i in range(3000)], x)
    store.delete("s", ["0"])
    q = vectors.normalize(x[:10] + 0.1 * rng.normal(size=(10, 64)))
    rec = store.record("s")
    live = store.engine._live(rec)
    source = LocalSource(store.engine, rec, store._calibrator(rec), live=live)
    rows, _, timings, _ = funnel.execute(source, q, Funnel.exact(64).check(64, 10), n_rows=3000,
                                         live=live.mask, index=True)
    assert timings[0].method == "ann"
    truth = vectors.top_k(q @ x[1:].T, 10)[0] + 1
    recall = np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth)])
    assert recall >= 0.95
    assert all(0 not in r for r in rows)  # deleted rows never come back
    assert (tmp_path / "sets" / "1" / "ann" / "g0-hnsw-d64.faiss").exists()


def test_sets_index_builds_the_graph_a_search_will_walk(tmp_path):
    """Past native_from rows, `sets index` of a float32 first stage builds its graph ahead
    of the first search (it once built a view: planned as a one-stage funnel, which never
    walks an index)."""
    store = LocalStore(tmp_path, native_from=0)
    store.create_set("s", "text-embedding-3-small", 64)
    x = vectors.normalize(np.random.default_rng(1).normal(size=(500, 64)))
    store.add("s", [str(i) for i in range(500)], x)
    assert store.index("s", Funnel.parse("32:float32:50,64")) == ["HNSW index d32"]
    assert any(v.kind.startswith("HNSW") for v in store.info("s").views)
