"""Property: however adds, upserts, deletes, searches at every precision, truncations and
reopenings interleave on the local store, every funnel answers from the live rows only,
and a funnel whose stages keep every live row answers exactly what exact search does."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrlkit import Funnel, vectors
from mrlkit.stores import open_store

MODEL = "all-MiniLM-L6-v2"

ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 30)),
    st.tuples(st.just("upsert"), st.integers(1, 10)),
    st.tuples(st.just("delete"), st.integers(1, 10)),
    st.tuples(st.just("search"), st.sampled_from(["float32", "float16", "int8", "binary"])),
    st.tuples(st.just("truncate"), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0)),
), min_size=1, max_size=14)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, seed=st.integers(0, 2**16))
def test_funnels_answer_from_the_live_rows(tmp_path_factory, ops, seed):
    rng = np.random.default_rng(seed)
    location = str(tmp_path_factory.mktemp("prop"))
    store = open_store(location)
    # scores are compared with NumPy's; MiniLM's prefixes allowed for the funnels
    store.create_set("s", MODEL, storage="float32", allow_non_mrl=True)
    dim = 384
    live: dict[str, np.ndarray] = {}   # id → the vector as stored (unit norm, at dim)
    next_id = 0
    for op, arg in ops:
        if op == "add":
            x = vectors.normalize(rng.normal(size=(arg, dim)))
            new = [f"d{next_id + i}" for i in range(arg)]
            next_id += arg
            store.add("s", new, x)
            live.update(zip(new, x))
        elif op == "upsert" and live:
            chosen = list(rng.choice(sorted(live), size=min(arg, len(live)), replace=False))
            x = vectors.normalize(rng.normal(size=(len(chosen), dim)))
            store.add("s", chosen, x, upsert=True)
            live.update(zip(chosen, x))
        elif op == "delete" and live:
            chosen = list(rng.choice(sorted(live), size=min(arg, len(live)), replace=False))
            assert store.delete("s", chosen + ["never-added"]) == len(chosen)
            for i in chosen:
                live.pop(i)
        elif op == "truncate" and dim > 96:
            dim //= 2
            store.reindex("s", dim, allow_non_mrl=True)
            live = {i: vectors.truncate(v[None], dim)[0] for i, v in live.items()}
        elif op == "reopen":
            store.close()
            store = open_store(location)
        elif op == "search" and live:
            _check_search(store, live, dim, arg, rng)
    assert store.get_set("s").count == len(live)
    if live:
        for precision in ("float32", "int8", "binary"):
            _check_search(store, live, dim, precision, rng)
    store.close()


def _check_search(store, live, dim, precision, rng):
    ids = sorted(live)
    x = np.stack([live[i] for i in ids])
    q = vectors.normalize(rng.normal(size=(3, dim)))
    k = min(5, len(ids))
    truth = [[ids[r] for r in row] for row in vectors.top_k(q @ x.T, k)[0]]
    half = max(8, dim // 2)
    n = len(ids)
    # a funnel that keeps every live row at its cheap stages must rank like exact search
    full = store.search("s", q, k=k, funnel=Funnel.parse(f"{half}:{precision}:{n},{dim}"))
    for r, want, row in zip(full.hits, truth, q @ x.T):
        got = [h.id for h in r]
        by_id = dict(zip(ids, row.tolist()))
        # the same ranking, up to rows whose exact scores tie within float32 rounding
        assert got == want or np.allclose([by_id[i] for i in got], [by_id[i] for i in want],
                                          atol=1e-6), (got, want)
    scores = np.array([[h.score for h in r] for r in full.hits])
    np.testing.assert_allclose(scores, np.sort(q @ x.T, axis=1)[:, ::-1][:, :k], atol=1e-4)
    # any one-stage search at this precision answers from live rows only, k of them
    one = store.search("s", q, k=k, funnel=Funnel.parse(f"{half}:{precision}"))
    for r in one.hits:
        got = [h.id for h in r]
        assert len(got) == k == len(set(got)) and set(got) <= set(live)
