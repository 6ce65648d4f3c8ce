"""One LocalStore shared by threads (as `mrlkit serve` shares it): writers and searchers
at once lose nothing and never fail — a search reads the set as of its record, never a
write's rows it has not seen."""

from __future__ import annotations

import threading

import numpy as np

from mrlkit.stores import open_store

from .test_contract import MODEL, unit


def test_threads_write_and_search_one_store(tmp_path):
    store = open_store(str(tmp_path))
    store.create_set("s", MODEL, storage="float32")
    store.add("s", ["seed"], unit(1))
    x = unit(8 * 25 * 4, seed=3)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for b in range(25):
                start = (w * 25 + b) * 4
                store.add("s", [f"w{w}-{start + i}" for i in range(4)], x[start:start + 4])
                if b % 5 == 4:
                    store.delete("s", [f"w{w}-{start}"])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    def searcher(n: int) -> None:
        try:
            for i in range(60):
                res = store.search("s", x[(n * 60 + i) % len(x)][None], k=5)
                assert res.hits[0]
                store.vectors("s") if i % 20 == 0 else None
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)] + \
        [threading.Thread(target=searcher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    ids, got = store.vectors("s")
    assert len(ids) == len(set(ids)) == 1 + 8 * 25 * 4 - 8 * 5
    assert np.isfinite(got).all()


def test_filtered_and_quantised_searches_during_adds(tmp_path):
    """A filter reads rows from SQLite, a binary view covers the vector file: both must
    keep to the rows of the record the search read (an IndexError once, when a write
    committed in between), and a view another thread extended is read, not rebuilt."""
    from mrlkit import Funnel

    store = open_store(str(tmp_path))
    store.create_set("s", MODEL, storage="float32")
    x = unit(2 * 40 * 4 + 10, seed=5)
    store.add("s", [f"seed{i}" for i in range(10)], x[:10],
              metadata=[{"g": i % 2} for i in range(10)])
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for b in range(40):
                start = 10 + (w * 40 + b) * 4
                store.add("s", [f"w{w}-{start + i}" for i in range(4)], x[start:start + 4],
                          metadata=[{"g": i % 2} for i in range(4)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def searcher(n: int) -> None:
        try:
            for i in range(80):
                funnel = Funnel.parse("384:binary:20,384") if i % 2 else None
                res = store.search("s", x[i % 10][None], k=3, filters={"g": n % 2},
                                   funnel=funnel)
                assert all(h.metadata["g"] == n % 2 for h in res.hits[0])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)] + \
        [threading.Thread(target=searcher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert store.get_set("s").count == 10 + 2 * 40 * 4
    assert store.check("s").ok
