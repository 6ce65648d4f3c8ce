"""What only the chroma backend promises: Chroma's HNSW runs the first stage, mrlkit the
rerank; collection names fit Chroma's rules whatever the set's name."""

from __future__ import annotations

import numpy as np
import pytest

from mrlkit import Funnel, errors, vectors

from .test_contract import MODEL, exact, ids, unit

pytest.importorskip("chromadb")


@pytest.fixture
def chroma(tmp_path):
    from mrlkit.stores.chroma import ChromaStore

    return ChromaStore(f"chroma:{tmp_path}", exact_below=0)  # Chroma's HNSW at any size


def test_first_stage_on_chroma_then_rerank(chroma):
    chroma.create_set("s", "nomic-embed-text")   # an MRL model: first stage on 64 dims
    x = unit(2000, 768)
    chroma.add("s", ids(2000), x, metadata=[{"g": i % 2} for i in range(2000)])
    q = vectors.normalize(x[:10] + 0.3 * unit(10, 768, seed=4))
    res = chroma.search("s", q, k=10, funnel=Funnel.parse("64:float32:200,768"))
    assert [t.method for t in res.timings] == ["chroma-hnsw", "rerank"]
    got = [[int(h.id.split("-")[1]) for h in r] for r in res.hits]
    truth = exact(x, q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]) >= 0.9
    filtered = chroma.search("s", q[:2], k=5, filters={"g": 1},
                             funnel=Funnel.parse("64:float32:100,768"))
    assert all(len(r) == 5 and all(h.metadata == {"g": 1} for h in r) for r in filtered.hits)
    # a first stage Chroma does not index runs in mrlkit, same answers as exact
    other = chroma.search("s", q[:3], k=5, funnel=Funnel.parse("64:binary:2000,768"))
    assert other.timings[0].method == "exact"


def test_index_moves_the_first_stage(chroma):
    chroma.create_set("s", "nomic-embed-text")
    chroma.add("s", ids(300), unit(300, 768))
    assert chroma.info("s").details["first_stage_dim"] == 64
    chroma.index("s", Funnel.parse("128:float32:100,768"))
    assert chroma.info("s").details["first_stage_dim"] == 128
    res = chroma.search("s", unit(1, 768), k=3, funnel=Funnel.parse("128:float32:100,768"))
    assert res.timings[0].method == "chroma-hnsw" and len(res.hits[0]) == 3
    with pytest.raises(errors.InvalidInputError, match="cannot index a binary first stage"):
        chroma.index("s", Funnel.parse("64:binary:100,768"))


def test_any_set_name_and_flat_metadata_only(chroma):
    for name in ("x", ("a name with spaces, ünïcode " * 4).strip()):
        chroma.create_set(name, MODEL)
        chroma.add(name, ["a"], unit(1))
        assert chroma.get_set(name).count == 1
    with pytest.raises(errors.InvalidInputError, match="only str, int, float and bool"):
        chroma.add("x", ["b"], unit(1), metadata=[{"tags": ["a", "b"]}])
