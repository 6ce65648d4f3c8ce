"""What only the pgvector backend promises: its schema, its SQL funnels on HNSW expression
indexes, and the database's own guards. (The Store contract runs in test_contract.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from mrlkit import Funnel, errors, vectors

from .test_contract import MODEL, exact, ids, unit

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def pg(pg_url):
    from mrlkit.stores.pgvector import PgvectorStore

    store = PgvectorStore(pg_url, native_from=0)  # use the indexes at any size
    yield store
    store.close()


def fill(store, n=1500, name="s", **kw):
    kw.setdefault("storage", "float32")  # a vector column; float16 sets keep halfvec
    kw.setdefault("allow_non_mrl", True)  # MiniLM's prefixes, for the SQL funnel
    store.create_set(name, MODEL, **kw)
    x = unit(n)
    store.add(name, ids(n), x, [f"text {i}" for i in range(n)],
              [{"group": i % 3} for i in range(n)])
    return x


def recall(res, truth):
    got = [[int(h.id.split("-")[1]) for h in r] for r in res.hits]
    return np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(got, truth)])


@pytest.mark.parametrize("spec,expression", [
    ("64:binary:100,384", "binary_quantize(subvector(embedding, 1, 64)))::bit(64)"),
    ("128:float32:50,384", "(subvector(embedding, 1, 128))::vector(128)"),
    ("128:float16:50,384", "(subvector(embedding, 1, 128))::halfvec(128)"),
])
def test_the_first_stage_uses_its_hnsw_expression_index(pg, spec, expression):
    fill(pg, 2000)
    funnel = Funnel.parse(spec)
    assert pg.index("s", funnel) == [f"mrlkit_set_1_d{funnel.stages[0].dim}_"
                                     f"{funnel.stages[0].precision}"]
    plan = pg.explain("s", unit(1, seed=3), funnel)
    assert f"Index Scan using mrlkit_set_1_d{funnel.stages[0].dim}" in plan
    assert expression in plan
    # a small set below the planner's native_from is scanned exactly, index or not
    pg.native_from = 10_000
    assert pg.plan("s", funnel).why == "as an exact scan inside the engine"
    assert "Index Scan using mrlkit_set_1_d" not in pg.explain("s", unit(1, seed=3), funnel)


def test_sql_funnel_on_hnsw_finds_the_exact_neighbours(pg):
    x = fill(pg, 3000)
    pg.index("s", Funnel.parse("64:binary:300,384"))
    q = vectors.normalize(x[:20] + 0.3 * unit(20, seed=8))
    res = pg.search("s", q, k=10, funnel=Funnel.parse("64:binary:300,384"))
    assert res.timings[0].method == "sql:hnsw"
    assert recall(res, exact(x, q, 10)) >= 0.9
    # scores are the last stage's: the full-vector cosine
    top = res.hits[0][0]
    row = int(top.id.split("-")[1])
    assert top.score == pytest.approx(float(x[row] @ vectors.normalize(q[:1])[0]), abs=1e-5)


def test_filtered_search_on_hnsw_returns_k_rows(pg):
    """pgvector 0.8's iterative scan keeps a selective filter from starving the index."""
    x = fill(pg, 3000)
    pg.index("s", Funnel.parse("128:float32:50,384"))
    q = unit(3, seed=4)
    res = pg.search("s", q, k=20, filters={"group": 2},
                    funnel=Funnel.parse("128:float32:50,384"))
    assert all(len(r) == 20 and all(h.metadata == {"group": 2} for h in r) for r in res.hits)
    del x


def test_default_index_follows_the_model(pg):
    pg.create_set("mini", MODEL)
    pg.create_set("nomic", "nomic-embed-text")
    assert pg.info("mini").details["indexed_stages"] == ["384:float32"]
    assert pg.info("nomic").details["indexed_stages"] == ["64:float32"]
    assert pg.create_set("bare", MODEL, index=False)
    assert pg.info("bare").details["indexed_stages"] == []


def test_int8_stages_run_in_mrlkit_with_the_same_results(pg, tmp_path):
    from mrlkit.stores.local import LocalStore

    x = fill(pg, 400)
    local = LocalStore(tmp_path)
    local.create_set("s", MODEL, allow_non_mrl=True)
    local.add("s", ids(400), x)
    q = unit(4, seed=6)
    for spec in ("128:int8:400,384", "64:binary:400,128:int8:50,384"):
        funnel = Funnel.parse(spec)
        a = pg.search("s", q, k=10, funnel=funnel)
        b = local.search("s", q, k=10, funnel=funnel)
        assert [[h.id for h in r] for r in a.hits] == [[h.id for h in r] for r in b.hits]
        assert a.dims_used[0] == [s.dim for s in funnel.stages]
    with pytest.raises(errors.InvalidInputError, match="int8"):
        pg.index("s", Funnel.parse("128:int8:100,384"))


def test_float16_storage_is_halfvec(pg):
    x = fill(pg, 500, storage="float16")
    pg.index("s", Funnel.parse("64:binary:200,384"))
    q = vectors.normalize(x[:5] + 0.3 * unit(5, seed=9))
    res = pg.search("s", q, k=10, funnel=Funnel.parse("64:binary:200,384"))
    assert recall(res, exact(x, q, 10)) >= 0.9
    col = pg.engine._conn.execute("SELECT format_type(atttypid, atttypmod) AS t FROM "
                                  "pg_attribute WHERE attrelid = 'mrlkit_set_1'::regclass "
                                  "AND attname = 'embedding'").fetchone()["t"]
    assert col == "halfvec(384)"


def test_reindex_keeps_indexes_that_still_fit(pg):
    fill(pg, 2000)
    pg.index("s", Funnel.parse("64:binary:100,384"))
    info = pg.reindex("s", 128, allow_non_mrl=True)
    assert info.stored_dim == 128
    assert pg.info("s").details["indexed_stages"] == ["64:binary"]  # 384:float32 no longer fits
    plan = pg.explain("s", unit(1, 128), Funnel.parse("64:binary:100,128"))
    assert "Index Scan using mrlkit_set_1_d64_binary" in plan


# --- schema and the database's own guards ---------------------------------------------
def test_migrations_are_recorded_and_applied_once(pg_url):
    from mrlkit.stores.pg_schema import MIGRATIONS
    from mrlkit.stores.pgvector import PgvectorStore

    a = PgvectorStore(pg_url)
    b = PgvectorStore(pg_url)  # a second open finds the schema in place
    assert a.engine.schema_version() == b.engine.schema_version() == MIGRATIONS[-1][0]
    rows = a.engine._conn.execute("SELECT version FROM mrlkit_schema_version").fetchall()
    assert rows == [{"version": v} for v, _ in MIGRATIONS]
    a.engine._conn.execute("INSERT INTO mrlkit_schema_version VALUES (999)")
    with pytest.raises(errors.StoreError, match="upgrade mrlkit"):
        PgvectorStore(pg_url)


def test_truncate_dim_outside_the_mrl_list_is_refused_twice(pg):
    with pytest.raises(errors.DimensionError, match="64, 128, 256, 512, 768"):
        pg.create_set("x", "nomic-embed-text", 100)
    pg.create_set("n", "nomic-embed-text", 256)
    # bypassing mrlkit, the database's trigger refuses it too
    with pytest.raises(psycopg.errors.CheckViolation, match="MRL dimensions"):
        pg.engine._conn.execute("INSERT INTO embedding_set (name, config, truncate_dim, "
                                "stored_dim, storage) VALUES "
                                "('y', 'nomic-embed-text', 100, 100, 'float32')")
    with pytest.raises(psycopg.errors.CheckViolation, match="MRL dimensions"):
        pg.engine._conn.execute("UPDATE embedding_set SET truncate_dim = 200, stored_dim = 200 "
                         "WHERE name = 'n'")
    with pytest.raises(psycopg.errors.CheckViolation, match="native dimension"):
        pg.engine._conn.execute("INSERT INTO embedding_set (name, config, truncate_dim, "
                                "stored_dim, storage, allow_non_mrl) VALUES "
                         "('z', 'nomic-embed-text', 1024, 1024, 'float32', true)")


def test_a_wrong_dimension_insert_is_refused_by_the_database(pg):
    pg.create_set("s", MODEL, allow_non_mrl=True)
    from pgvector.psycopg import register_vector

    register_vector(pg.engine._conn)
    with pytest.raises(psycopg.errors.DataException, match="expected 384 dimensions, not 256"):
        pg.engine._conn.execute("INSERT INTO mrlkit_set_1 (id, embedding) VALUES ('a', %s)",
                         (unit(1, 256)[0],))
    with pytest.raises(errors.InvalidInputError, match="384"):
        pg.add("s", ["a"], unit(1, 256))


def test_filter_keys_and_values_are_parameters_not_sql(pg):
    fill(pg, 50)
    evil = {"group') OR true; DROP TABLE embedding_set; --": 1, "x": "'; DROP TABLE x; --"}
    assert pg.search("s", unit(1), k=5, filters=evil).hits == [[]]
    assert pg.get_set("s").count == 50


def test_url_password_is_never_shown(pg_url):
    from mrlkit.text import masked as _masked

    assert _masked("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    with pytest.raises(errors.StoreError) as exc:
        from mrlkit.stores.pgvector import PgvectorStore

        PgvectorStore("postgresql://me:s3cret@127.0.0.1:1/x?connect_timeout=2")
    assert "s3cret" not in str(exc.value) and "cannot connect" in str(exc.value)
