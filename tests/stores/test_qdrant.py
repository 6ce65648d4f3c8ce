"""What only the qdrant backend promises: a funnel is one Query API request whose first
stage is a prefetch on the prefix vector."""

from __future__ import annotations

import numpy as np
import pytest

from mrlkit import Funnel, vectors

from .test_contract import exact, ids, unit

pytest.importorskip("qdrant_client")


@pytest.fixture
def qdrant(tmp_path):
    from mrlkit.stores.qdrant import QdrantStore

    store = QdrantStore(f"qdrant:{tmp_path}", exact_below=0)
    yield store
    store.close()


def test_the_funnel_is_one_query_request_with_prefetch(qdrant, monkeypatch):
    qdrant.create_set("s", "nomic-embed-text")   # MRL: the first stage is a 64-d prefix
    x = unit(500, 768)
    qdrant.add("s", ids(500), x, metadata=[{"g": i % 2} for i in range(500)])
    calls = []
    real = qdrant.engine._client.query_points
    monkeypatch.setattr(qdrant.engine._client, "query_points",
                        lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    q = vectors.normalize(x[:5] + 0.3 * unit(5, 768, seed=3))
    res = qdrant.search("s", q, k=10, funnel=Funnel.parse("64:float32:100,768"))
    assert len(calls) == 5  # one request per query, the whole funnel inside it
    request = calls[0]
    assert request["using"] == "full" and request["limit"] == 10
    prefetch = request["prefetch"]
    assert (prefetch.using, prefetch.limit, len(prefetch.query)) == ("first", 100, 64)
    got = [[int(h.id.split("-")[1]) for h in r] for r in res.hits]
    truth = exact(x, q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]) >= 0.9
    assert res.hits[0][0].score == pytest.approx(
        float(x[got[0][0]] @ q[0]), abs=1e-4)   # the score is the full vector's cosine
    # filters travel inside the prefetch as a Qdrant Filter
    filtered = qdrant.search("s", q[:1], k=5, filters={"g": 1},
                             funnel=Funnel.parse("64:float32:100,768"))
    assert calls[-1]["prefetch"].filter.must[0].key == "meta.g"
    assert all(h.metadata == {"g": 1} for h in filtered.hits[0]) and len(filtered.hits[0]) == 5


def test_funnels_qdrant_cannot_run_go_through_mrlkit(qdrant):
    qdrant.create_set("s", "nomic-embed-text")
    qdrant.add("s", ids(200), unit(200, 768))
    res = qdrant.search("s", unit(2, 768), k=5, funnel=Funnel.parse("64:binary:200,768"))
    assert res.timings[0].method == "exact" and all(len(r) == 5 for r in res.hits)
    qdrant.index("s", Funnel.parse("64:float32:100,768"))
    assert qdrant.info("s").details["first_stage_dim"] == 64 and qdrant.get_set("s").count == 200
    res = qdrant.search("s", unit(2, 768), k=5, funnel=Funnel.parse("64:float32:100,768"))
    assert res.timings[0].method == "qdrant query"


@pytest.mark.parametrize("precision, config", [("binary", "BinaryQuantization"),
                                               ("int8", "ScalarQuantization")])
def test_a_quantised_first_stage_is_qdrant_quantisation_without_rescore(qdrant, precision,
                                                                       config):
    qdrant.create_set("s", "nomic-embed-text")
    x = unit(400, 768)
    qdrant.add("s", ids(400), x)
    funnel = Funnel.parse(f"128:{precision}:200,768")
    assert precision in qdrant.index("s", funnel)[0]
    params = qdrant.engine._client.get_collection(
        qdrant.record("s").collection).config.params.vectors["first"]
    assert type(params.quantization_config).__name__ == config
    q = vectors.normalize(x[:4] + 0.3 * unit(4, 768, seed=5))
    res = qdrant.search("s", q, k=10, funnel=funnel)
    assert res.timings[0].method == "qdrant query" and qdrant.get_set("s").count == 400
    prefetch = qdrant.engine.requests[-1]["prefetch"]
    assert prefetch.params.quantization.rescore is False   # the rerank is the next stage
    got = [[int(h.id.split("-")[1]) for h in r] for r in res.hits]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact(x, q, 10))]) >= 0.9
