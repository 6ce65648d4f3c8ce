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

    return ChromaStore(f"chroma:{tmp_path}", native_from=0)  # Chroma's HNSW at any size


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


def test_the_rerank_reads_full_vectors_from_mrlkits_file_not_chroma(chroma, tmp_path,
                                                                     monkeypatch):
    chroma.create_set("s", "nomic-embed-text")          # float16 storage: kept as such
    x = unit(500, 768)
    chroma.add("s", ids(500), x, [f"t{i}" for i in range(500)])
    chroma.add("s", ids(1), -x[:1], upsert=True)        # a replaced vector: its new row
    files = list((tmp_path / "mrlkit-vectors").glob("*.bin"))
    assert len(files) == 1 and files[0].stat().st_size == 501 * 768 * 2
    assert not [c.name for c in chroma.engine._client.list_collections()
                if c.name.startswith("mrlkit-f-")]      # no full-vector collection
    docs = chroma.engine._docs("s")
    asked = []
    real = type(docs).get
    monkeypatch.setattr(type(docs), "get", lambda self, *a, **kw: asked.append(
        kw.get("include")) or real(self, *a, **kw))
    res = chroma.search("s", x[:3], k=5, funnel=Funnel.parse("64:float32:100,768"))
    assert all("embeddings" not in (inc or []) for inc in asked)   # documents only
    assert [r[0].id for r in res.hits][1:] == ["doc-1", "doc-2"]
    assert res.hits[0][0].id != "doc-0"                 # doc-0's vector is now -x[0]
    assert res.hits[1][0].score == pytest.approx(1.0, abs=2e-3)


def test_writes_of_another_process_are_seen(chroma, tmp_path):
    import subprocess
    import sys

    chroma.create_set("s", MODEL, storage="float32")
    chroma.add("s", ids(10), unit(10))
    assert chroma.get_set("s").count == 10
    code = ("import numpy as np\nfrom mrlkit.stores import open_store\n"
            f"s = open_store('chroma:{tmp_path}')\n"
            "s.add('s', ['late'], np.ones((1, 384), np.float32))\n"
            "s.delete('s', ['doc-0'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    # the cached record is re-read: the count and documents are the other process's
    # (Chroma's persistent client itself keeps its HNSW per process: a search here may
    # not see the new point — one process at a time, as Chroma documents)
    assert chroma.get_set("s").count == 10 and chroma.get("s", ["late", "doc-0"])[1] is None
    assert chroma.get("s", ["late"])[0].id == "late"
