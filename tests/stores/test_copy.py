"""`Store.copy_set` and `mrlkit sets copy`: a set moves between any two backends whole —
ids, texts, metadata, stored vectors — and a copy re-run after an interruption completes."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from mrlkit.errors import InvalidInputError
from mrlkit.stores import open_store

from .conftest import BACKENDS
from .test_contract import MODEL, ids, unit


@pytest.mark.parametrize("src_kind, dst_kind", list(product(sorted(BACKENDS), repeat=2)))
def test_a_set_copies_from_each_backend_to_each_other(request, src_kind, dst_kind):
    src_loc, dst_loc = BACKENDS[src_kind](request), BACKENDS[dst_kind](request)
    src = open_store(src_loc)
    same = src_loc == dst_loc          # pgvector → pgvector: one database, another name
    dst = src if same else open_store(dst_loc)
    try:
        src.create_set("s", MODEL, storage="float32")
        x = unit(60)
        src.add("s", ids(60), x, [f"text {i}" for i in range(60)],
                [{"g": i % 3, "tag": f"t{i}"} for i in range(60)])
        target = "s-copy" if same else "s"
        assert src.copy_set("s", dst, target, batch=25) == 60
        got_ids, got_x = dst.vectors(target)
        want_ids, want_x = src.vectors("s")   # each engine's own order
        assert sorted(got_ids) == sorted(want_ids)
        np.testing.assert_allclose(got_x[np.argsort(got_ids)], want_x[np.argsort(want_ids)],
                                   atol=1e-6)
        docs = dst.get(target, ["doc-7"])[0]
        assert (docs.text, docs.metadata) == ("text 7", {"g": 1, "tag": "t7"})
        info = dst.get_set(target)
        assert (info.model, info.stored_dim, info.count) == (MODEL, 384, 60)
        q = unit(2, seed=9)
        assert [h.id for h in dst.search(target, q, k=5).hits[0]] == \
            [h.id for h in src.search("s", q, k=5).hits[0]]
        # a second run (as after an interruption) upserts: nothing doubles
        assert src.copy_set("s", dst, target) == 60 and dst.get_set(target).count == 60
    finally:
        src.close()
        if not same:
            dst.close()


def test_an_adapted_set_is_refused_with_the_way_out(tmp_path):
    store = open_store(str(tmp_path / "a"))
    store.create_set("s", MODEL, storage="float32")
    store.add("s", ids(300), unit(300))
    import mrlkit

    mrlkit.adapt(store, "s", "pca")
    with pytest.raises(InvalidInputError, match="adapt"):
        store.copy_set("s", open_store(str(tmp_path / "b")))


def test_the_cli_copies_from_qdrant_edge_to_a_local_store(tmp_path):
    import subprocess
    import sys

    q, local = f"qdrant:{tmp_path / 'q'}", str(tmp_path / "local")
    src = open_store(q)
    src.create_set("s", MODEL)
    src.add("s", ids(40), unit(40), [f"t{i}" for i in range(40)])
    src.close()
    out = subprocess.run([sys.executable, "-m", "mrlkit.cli", "sets", "copy", "s", "--store", q,
                          "--to", local], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "copied 40 documents of s to s in" in out.stdout
    assert open_store(local).get_set("s").count == 40
    same = subprocess.run([sys.executable, "-m", "mrlkit.cli", "sets", "copy", "s", "--store",
                           local, "--to", local], capture_output=True, text=True, timeout=300)
    assert same.returncode == 2 and "--as" in same.stderr


def test_a_set_is_never_copied_into_itself(store):
    """The guard lives in the API (the CLI's --to only calls it): upserting a set's own
    documents into itself would silently change nothing and report a copy."""
    store.create_set("s", MODEL)
    store.add("s", ids(5), unit(5))
    with pytest.raises(InvalidInputError, match="into itself"):
        store.copy_set("s", store)
    assert store.copy_set("s", store, "s-copy") == 5 and store.get_set("s-copy").count == 5
