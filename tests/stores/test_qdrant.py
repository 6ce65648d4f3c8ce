"""What only the qdrant backend promises: a funnel is one Query API request whose first
stage is a prefetch on the prefix vector, built once and handed unchanged to Qdrant's
engine in-process (``qdrant:PATH``) or to a server through ``qdrant-client``."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from mrlkit import Funnel, vectors
from mrlkit.errors import StoreError

from .test_contract import exact, ids, unit

pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")


@pytest.fixture
def qdrant(tmp_path):
    from mrlkit.stores.qdrant import QdrantStore

    store = QdrantStore(f"qdrant:{tmp_path / 'edge'}", native_from=0)
    yield store
    store.close()


@pytest.fixture
def server(tmp_path):
    """The server adapter, run against qdrant-client's local mode (no server can run
    here): every request it builds is the one a Qdrant server would get."""
    from mrlkit.stores.qdrant import QdrantStore

    store = QdrantStore(f"qdrant+local:{tmp_path / 'client'}", native_from=0)
    yield store
    store.close()


def _ids(res):
    return [[int(h.id.split("-")[1]) for h in r] for r in res.hits]


def test_the_funnel_is_one_query_with_prefetch_on_the_edge_shard(qdrant, monkeypatch):
    qdrant.create_set("s", "nomic-embed-text")   # MRL: the first stage is a 64-d prefix
    x = unit(500, 768)
    qdrant.add("s", ids(500), x, metadata=[{"g": i % 2} for i in range(500)])
    db = qdrant.engine.db
    calls = []
    real = db.query
    monkeypatch.setattr(db, "query", lambda c, qs: calls.append(qs) or real(c, qs))
    q = vectors.normalize(x[:5] + 0.3 * unit(5, 768, seed=3))
    res = qdrant.search("s", q, k=10, funnel=Funnel.parse("64:float32:100,768"))
    assert len(calls) == 1 and len(calls[0]) == 5  # one batch, one query per vector
    shape = calls[0][0].describe()
    assert (shape["using"], shape["limit"], shape["dim"]) == ("full", 10, 768)
    assert shape["prefetch"] == {"using": "first", "limit": 100, "dim": 64,
                                 "quantized": False}
    assert np.mean([len(set(a) & set(b)) / 10
                    for a, b in zip(_ids(res), exact(x, q, 10))]) >= 0.9
    assert res.hits[0][0].score == pytest.approx(
        float(x[_ids(res)[0][0]] @ q[0]), abs=2e-3)  # the full vector's cosine (float16)
    filtered = qdrant.search("s", q[:1], k=5, filters={"g": 1},
                             funnel=Funnel.parse("64:float32:100,768"))
    assert calls[-1][0].match == (("meta.g", 1),)
    assert all(h.metadata == {"g": 1} for h in filtered.hits[0]) and len(filtered.hits[0]) == 5


def _edge_shape(r):
    """Edge's QueryRequest → comparable fields (its Query type shows them in its repr)."""
    p = r.prefetches[0]
    using = re.findall(r'using="(\w+)"', repr(r.query))[0]
    return {"using": using, "limit": r.limit, "prefetch_using":
            re.findall(r'using="(\w+)"', repr(p.query))[0], "prefetch_limit": p.limit,
            "filter": [(c.key, c.match.value) for c in p.filter.must],
            "rescore": p.params.quantization.rescore if p.params else None}


def _server_shape(r):
    p = r.prefetch
    return {"using": r.using, "limit": r.limit, "prefetch_using": p.using,
            "prefetch_limit": p.limit,
            "filter": [(c.key, c.match.value) for c in p.filter.must],
            "rescore": p.params.quantization.rescore if p.params else None}


def _recording(build, sent):
    """``funnel_request`` that keeps what it built (the requests the test compares)."""
    def wrapped(*args, **kwargs):
        sent.append(build(*args, **kwargs))
        return sent[-1]
    return wrapped


@pytest.mark.parametrize("funnel", ["64:float32:100,768", "128:binary:200,768",
                                    "128:int8:200,768"])
def test_edge_and_server_adapters_get_the_same_request(qdrant, server, funnel, monkeypatch):
    x = unit(400, 768)
    f = Funnel.parse(funnel)
    q = vectors.normalize(x[:3] + 0.3 * unit(3, 768, seed=7))
    results, plans = [], []
    for store in (qdrant, server):
        sent = []
        monkeypatch.setattr(store.engine, "funnel_request",
                            _recording(store.engine.funnel_request, sent))
        store.create_set("s", "nomic-embed-text")
        store.add("s", ids(400), x, metadata=[{"g": i % 2} for i in range(400)])
        store.index("s", f)
        spec = store.engine.db.spec(store.record("s").collection)
        assert spec["first"]["quantization"] == (None if "float32" in funnel
                                                 else funnel.split(":")[1])
        assert (spec["first"]["size"], spec["full"]["size"], spec["full"]["hnsw_m"]) == (
            f.stages[0].dim, 768, 0)   # the full vector only rescores: no graph
        res = store.search("s", q, k=10, funnel=f, filters={"g": 1})
        assert res.timings[0].method == "qdrant query"
        results.append(_ids(res))
        plans.append(sent[-1])
    assert plans[0].describe() == plans[1].describe()
    assert all(np.array_equal(a.query, b.query) for a, b in zip(plans[0:1], plans[1:2]))
    edge = _edge_shape(qdrant.engine.db.request(plans[0]))
    assert edge == _server_shape(server.engine.db.request(plans[1]))
    assert edge["filter"] == [("meta.g", 1)] and edge["prefetch_using"] == "first"
    assert edge["rescore"] is (None if "float32" in funnel else False)
    if "float32" in funnel:  # both scan 400 points exactly: the same answer
        assert results[0] == results[1]


def test_funnels_qdrant_cannot_run_go_through_mrlkit(qdrant):
    qdrant.create_set("s", "nomic-embed-text")
    qdrant.add("s", ids(200), unit(200, 768))
    res = qdrant.search("s", unit(2, 768), k=5, funnel=Funnel.parse("64:binary:200,768"))
    assert res.timings[0].method == "exact" and all(len(r) == 5 for r in res.hits)
    qdrant.index("s", Funnel.parse("64:float32:100,768"))
    assert qdrant.info("s").details["first_stage_dim"] == 64 and qdrant.get_set("s").count == 200
    res = qdrant.search("s", unit(2, 768), k=5, funnel=Funnel.parse("64:float32:100,768"))
    assert res.timings[0].method == "qdrant query"


def test_a_second_process_gets_a_clear_error(qdrant, tmp_path):
    qdrant.create_set("s", "nomic-embed-text")
    code = ("from mrlkit.stores import open_store\n"
            f"open_store('qdrant:{tmp_path / 'edge'}')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "open in another process" in out.stderr


def test_a_local_mode_folder_is_named_not_misread(tmp_path):
    from mrlkit.stores import open_store

    old = open_store(f"qdrant+local:{tmp_path / 'old'}")   # how mrlkit 0.3 wrote qdrant:PATH
    old.create_set("s", "nomic-embed-text")
    old.add("s", ids(20), unit(20, 768))
    old.close()
    with pytest.raises(StoreError, match="qdrant\\+local:"):
        open_store(f"qdrant:{tmp_path / 'old'}")
