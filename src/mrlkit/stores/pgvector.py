"""The ``pgvector`` engine: embedding sets in PostgreSQL, funnels run as one SQL statement.

Schema (versioned migrations in :mod:`.pg_schema`, recorded in
``mrlkit_schema_version``):

* ``embedding_config`` — one row per model: native_dim, supports_mrl, mrl_dimensions.
* ``embedding_set`` — name, config, ``truncate_dim`` (NULL = native), stored dim and
  precision. A trigger refuses a ``truncate_dim`` outside the model's MRL dimensions.
* ``mrlkit_set_<id>`` — one table per set: id, text, metadata jsonb and the vector at the
  set's stored dimension, typed ``vector(D)`` or ``halfvec(D)``, so that PostgreSQL itself
  refuses a vector of another dimension.

A funnel's first stage is an HNSW expression index on a prefix of the one stored column;
the stages SQL can express run as one statement, the rest (int8, adaptive early exit) in
mrlkit on the survivors.

Example::

    >>> store = PgvectorStore("postgresql://localhost/mrlkit")     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Any
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from ..errors import InvalidInputError, StoreError
from ..text import masked
from ..funnel import Funnel, Stage, StageTiming
from ..vectors import PRECISIONS, Int8Calibration, bytes_per_vector
from . import faults, pg_sql
from .core import Store
from .seam import Calibrate, EngineDefaults, Partial, Scan
from .plan import Capabilities, Plan
from .pg_schema import (SET_COLUMNS, PgRecord, Row, insert_set, migrate, pg_errors,
                        record_of)
from .records import (Batch, CheckReport, Document, Rebuild, SetRecord, StorageInfo,
                      not_found,
                      ViewInfo)

try:
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg import sql
    from psycopg.rows import dict_row
except ImportError:  # pragma: no cover - depends on the install
    psycopg = None  # type: ignore[assignment]



def PgvectorStore(url: str, *, ef_search: int | None = None,
                  iterative_scan: str | None = None,
                  native_from: int | str | None = None) -> Store[PgRecord]:
    """A store on the pgvector engine at ``url`` (see :class:`PgvectorEngine`; for
    ``native_from``, :mod:`mrlkit.stores.plan`)."""
    return Store(PgvectorEngine(url, ef_search=ef_search, iterative_scan=iterative_scan),
                 native_from=native_from)


class PgvectorEngine(EngineDefaults[PgRecord]):
    """Embedding sets in PostgreSQL with pgvector ≥ 0.7 (see module docs).

    ``ef_search`` (HNSW candidates per index scan, raised to a stage's ``keep``),
    ``iterative_scan`` (``relaxed_order``, ``strict_order`` or ``off``: pgvector 0.8's
    iterative index scans, which keep a filtered search from returning too few rows) are
    settings; each can also come from ``MRLKIT_PG_EF_SEARCH`` and
    ``MRLKIT_PG_ITERATIVE_SCAN``.
    """

    kind = "pgvector"
    # SQL runs every stage up to an int8 one, on an HNSW index of the first when the set
    # has one, else by an exact scan in the server; jsonb containment matches filters
    # as mrlkit does (numbers by value, true never 1)
    capabilities = Capabilities(first_stages=("float32", "float16", "binary"), scans=True,
                                later="sql", filter_types=(str, int, float, bool),
                                builds=("float32", "float16", "binary"), native_from=10_000)

    def __init__(self, url: str, *, ef_search: int | None = None,
                 iterative_scan: str | None = None) -> None:
        if psycopg is None:
            raise StoreError("the pgvector backend needs psycopg and pgvector: "
                             "pip install 'mrlkit[pg]'")
        self.location = masked(url)
        self.ef_search = int(ef_search or os.environ.get("MRLKIT_PG_EF_SEARCH") or 100)
        self.iterative_scan = (iterative_scan or os.environ.get("MRLKIT_PG_ITERATIVE_SCAN")
                               or "relaxed_order")
        if self.iterative_scan not in ("relaxed_order", "strict_order", "off"):
            raise InvalidInputError("iterative_scan must be relaxed_order, strict_order or "
                                    f"off, not {self.iterative_scan!r}")
        if not 1 <= self.ef_search <= 1000:
            raise InvalidInputError(f"ef_search must be 1..1000, not {self.ef_search}")
        try:
            self._conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.location}: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        self._lock = threading.RLock()
        self._migrate()
        register_vector(self._conn)
        self._url = url
        self._pool: Any = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._conn.close()

    @contextmanager
    def _search_tx(self) -> Iterator[psycopg.Cursor[Row]]:
        """One read transaction on a pooled connection (psycopg_pool, up to one per
        core, opened on first use): searches run in parallel in the server, beside the
        writers' connection and its lock."""
        if self._pool is None:
            from psycopg_pool import ConnectionPool

            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(
                        self._url, min_size=0, max_size=max(2, os.cpu_count() or 1),
                        max_idle=30,
                        kwargs={"autocommit": True, "row_factory": dict_row},
                        configure=register_vector, open=True, name="mrlkit-search")
        with pg_errors(self.location), self._pool.connection(timeout=60) as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    yield cur

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Row]]:
        """One transaction."""
        with self._lock, pg_errors(self.location):
            with self._conn.transaction():
                with self._conn.cursor() as cur:
                    yield cur
                    faults.point("before_commit")

    def _read(self, query: Any, params: Any = None) -> list[Row]:
        """One read outside a transaction, its errors translated."""
        with self._lock, pg_errors(self.location):
            return self._conn.execute(query, params).fetchall()

    def schema_version(self) -> int:
        """The newest migration applied to this database."""
        got = self._read("SELECT coalesce(max(version), 0) AS v FROM mrlkit_schema_version")
        return int(got[0]["v"]) if got else 0

    def _migrate(self) -> None:
        with self._tx() as cur:
            migrate(cur, self.location)

    # --- records ----------------------------------------------------------------------
    def _get(self, name: str, cur: psycopg.Cursor[Row] | None = None, *,
             lock: bool = False) -> PgRecord:
        query = f"SELECT {SET_COLUMNS} FROM embedding_set WHERE name = %s" + (
            " FOR UPDATE" if lock else "")
        got = cur.execute(query, (name,)).fetchall() if cur else self._read(query, (name,))
        if not got:
            known = [k["name"] for k in self._read("SELECT name FROM embedding_set")]
            raise not_found(name, self.location, known)
        return record_of(got[0])

    def record(self, name: str) -> PgRecord:
        return self._get(name)

    def records(self) -> list[PgRecord]:
        return [record_of(r) for r in self._read(
            f"SELECT {SET_COLUMNS} FROM embedding_set ORDER BY name")]

    def count(self, rec: PgRecord) -> int:
        return rec.doc_count

    rows = count

    def create(self, rec: SetRecord, first: Stage, build: bool, spec: Mapping[str, Any]
               ) -> bool:
        """The set's row and table; with ``build``, the HNSW index of ``first``."""
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM embedding_set WHERE name = %s",
                           (rec.name,)).fetchone():
                return False
            got = {"id": insert_set(cur, rec, spec)}
            cur.execute(pg_sql.create_table(pg_sql.ident(got["id"]), rec.stored_dim,
                                            rec.storage))
            pg_sql.table_settings(cur, got["id"], rec.stored_dim, rec.storage)
            if build:
                pg_sql.create_index(cur, got["id"], rec.stored_dim, rec.storage, first,
                                   required=False)
        return True

    def save_plan(self, name: str, plan: str | None) -> None:
        with self._tx() as cur:
            rec = self._get(name, cur, lock=True)
            cur.execute("UPDATE embedding_set SET plan = %s::jsonb WHERE id = %s",
                        (plan, rec.id))

    def drop(self, name: str) -> None:
        with self._tx() as cur:
            rec = self._get(name, cur, lock=True)
            cur.execute(sql.SQL("DROP TABLE {}").format(pg_sql.ident(rec.id)))
            cur.execute("DELETE FROM embedding_set WHERE id = %s", (rec.id,))

    def index(self, rec: PgRecord, first: Stage, native: bool,
              calibrate: Calibrate) -> list[str]:
        """Create the HNSW expression index a funnel's first stage uses."""
        with self._tx() as cur:
            rec = self._get(rec.name, cur, lock=True)
            made = pg_sql.create_index(cur, rec.id, rec.stored_dim, rec.storage, first)
            cur.execute(sql.SQL("ANALYZE {}").format(pg_sql.ident(rec.id)))
        return [made] if made else []

    def _indexes(self, set_id: int) -> list[Row]:
        return self._read(
            "SELECT c.relname AS name, pg_relation_size(c.oid) AS bytes FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass ORDER BY c.relname",
            (f"mrlkit_set_{set_id}",))

    # --- writes -----------------------------------------------------------------------
    def add(self, name: str, prepare: Callable[[PgRecord], Batch]) -> int:
        """One transaction (binary COPY); with upsert, existing ids are replaced."""
        with self._tx() as cur:
            rec = self._get(name, cur, lock=True)
            batch = prepare(rec)
            table = pg_sql.ident(rec.id)
            existing = [r["id"] for r in cur.execute(
                sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(table), (batch.ids,))]
            batch.accept(existing)
            if existing:
                cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(table),
                            (existing,))
            pg_sql.copy(cur, table, rec.storage,
                       list(zip(batch.ids, batch.texts, batch.metadata)), batch.vectors)
            faults.point("after_vectors")
            cur.execute("UPDATE embedding_set SET doc_count = doc_count + %s WHERE id = %s",
                        (len(batch) - len(existing), rec.id))
        return len(batch)

    def delete(self, name: str, ids: list[str]) -> int:
        with self._tx() as cur:
            rec = self._get(name, cur, lock=True)
            removed = cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(
                pg_sql.ident(rec.id)), (ids,)).rowcount
            cur.execute("UPDATE embedding_set SET doc_count = doc_count - %s WHERE id = %s",
                        (removed, rec.id))
        return removed

    def rebuild(self, name: str, plan: Callable[[PgRecord], Rebuild]) -> None:
        """Rewrite the set's table in one transaction (a new table, swapped in by name);
        first-stage indexes are rebuilt where they still fit."""
        with self._tx() as cur:
            rec = self._get(name, cur, lock=True)
            p = plan(rec)
            new: PgRecord = p.record
            table = pg_sql.ident(rec.id)
            staging = sql.Identifier(f"mrlkit_set_{rec.id}_new")
            cur.execute(pg_sql.create_table(staging, new.stored_dim, new.storage))
            if p.transform is None and p.truncate_to is not None:
                # a truncation runs inside PostgreSQL: no vector leaves the server
                cur.execute(sql.SQL(
                    "INSERT INTO {new} SELECT id, text, metadata, "
                    "l2_normalize(subvector(embedding, 1, {d}))::{col}({d}) FROM {old}").format(
                        new=staging, old=table, d=sql.Literal(new.stored_dim),
                        col=sql.SQL("halfvec" if new.storage == "float16" else "vector")))
            else:
                with self._conn.cursor(name="mrlkit_rebuild") as read:
                    read.execute(sql.SQL("SELECT id, text, metadata, embedding FROM {}")
                                 .format(table))
                    while got := read.fetchmany(10_000):
                        x = p.apply(np.asarray([r["embedding"].to_numpy() for r in got],
                                               np.float32))
                        pg_sql.copy(cur, staging, new.storage,
                                   [(r["id"], r["text"], r["metadata"]) for r in got], x)
            cur.execute(sql.SQL("DROP TABLE {}").format(table))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(staging, table))
            pg_sql.table_settings(cur, rec.id, new.stored_dim, new.storage)
            cur.execute("UPDATE embedding_set SET stored_dim = %s, truncate_dim = %s, "
                        "allow_non_mrl = %s, transform = %s::jsonb, plan = %s::jsonb, "
                        "indexes = '[]' WHERE id = %s",
                        (new.stored_dim, new.truncate_dim, new.allow_non_mrl,
                         new.transform_json, new.plan, rec.id))
            cur.execute("DELETE FROM mrlkit_calibration WHERE set_id = %s", (rec.id,))
            for text in rec.indexes:
                stage = Funnel.parse(text).stages[0]
                if stage.dim <= new.stored_dim:
                    pg_sql.create_index(cur, rec.id, new.stored_dim, new.storage, stage,
                                       required=False)
            faults.point("before_switch")

    # --- reads ------------------------------------------------------------------------
    def vectors(self, rec: PgRecord) -> tuple[list[str], np.ndarray]:
        got = self._read(sql.SQL("SELECT id, embedding FROM {} ORDER BY id").format(
            pg_sql.ident(rec.id)))
        x = np.asarray([r["embedding"].to_numpy() for r in got], np.float32)
        return [r["id"] for r in got], x.reshape(len(got), rec.stored_dim)

    def get(self, rec: PgRecord, ids: list[str]) -> dict[str, Document]:
        return {r["id"]: Document(r["id"], r["text"], r["metadata"]) for r in self._read(
            sql.SQL("SELECT id, text, metadata FROM {} WHERE id = ANY(%s)").format(
                pg_sql.ident(rec.id)), (ids,))}

    def scroll(self, rec: PgRecord, offset: int, limit: int) -> list[Document]:
        return [Document(r["id"], r["text"], r["metadata"]) for r in self._read(
            sql.SQL("SELECT id, text, metadata FROM {} ORDER BY id LIMIT %s OFFSET %s")
            .format(pg_sql.ident(rec.id)), (limit, offset))]

    def sample(self, rec: PgRecord, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` in id order (numbered in the server: only they travel)."""
        got = self._read(sql.SQL(
            "SELECT embedding FROM (SELECT embedding, row_number() OVER (ORDER BY id) - 1 "
            "AS r FROM {}) n WHERE r = ANY(%s)").format(pg_sql.ident(rec.id)),
            ([int(r) for r in rows],))
        return np.asarray([r["embedding"].to_numpy() for r in got], np.float32).reshape(
            len(got), rec.stored_dim)

    def calibration(self, rec: PgRecord, dim: int) -> tuple[Int8Calibration, int] | None:
        """Kept in ``mrlkit_calibration`` so that every process scores alike."""
        got = self._read("SELECT params FROM mrlkit_calibration WHERE set_id = %s "
                         "AND dim = %s", (rec.id, dim))
        if not got:
            return None
        params = dict(got[0]["params"])
        return Int8Calibration.from_dict(params), int(params.get("fitted_on", 0))

    def save_calibration(self, rec: PgRecord, dim: int, cal: Int8Calibration,
                         rows: int) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO mrlkit_calibration VALUES (%s, %s, %s) ON CONFLICT "
                        "(set_id, dim) DO UPDATE SET params = excluded.params",
                        (rec.id, dim, json.dumps({**cal.to_dict(), "fitted_on": rows})))

    # --- search -----------------------------------------------------------------------
    def built(self, rec: PgRecord) -> set[tuple[int, str]]:
        return {(int(d), p) for d, p in (i.split(":") for i in rec.indexes)}

    def native(self, rec: PgRecord, q: np.ndarray, plan: Plan,
               filters: dict[str, Any] | None) -> Partial | None:
        """The planned stages as one statement per query (on the first stage's HNSW
        index when the plan says so, else an exact scan in the server)."""
        done, stages, use_index = plan.stages, plan.funnel.stages, plan.index
        statement = pg_sql.statement(rec.id, rec.stored_dim, rec.storage, stages[:done],
                                     filters, with_vectors=done < len(stages),
                                     use_index=use_index)
        t0 = time.perf_counter()
        results = []
        with self._search_tx() as cur:
            pg_sql.settings(cur, use_index, stages[0].keep or 10, self.ef_search,
                            self.iterative_scan)
            for query in q:
                results.append(cur.execute(statement, pg_sql.params(query, stages[:done],
                                                                    filters)).fetchall())
        ms = (time.perf_counter() - t0) * 1000
        method = "sql:hnsw" if use_index else "sql:exact"
        timings = [StageTiming(s.dim, s.precision, s.keep or 10, ms if i == 0 else 0.0,
                               method if i == 0 else "sql (same statement)")
                   for i, s in enumerate(stages[:done])]
        rows, scores, docs, matrix = pg_sql.survivors(results, rec.stored_dim,
                                                      with_vectors=done < len(stages))
        return Partial(done, rows, scores, timings, lambda _: docs, matrix)

    def scan(self, rec: PgRecord, filters: dict[str, Any] | None,
             calibrate: Calibrate) -> Scan:
        """Every (filtered) row read once, for a funnel SQL cannot start (int8)."""
        where = sql.SQL("WHERE metadata @> %s::jsonb" if filters else "")
        got = self._read(sql.SQL("SELECT id, text, metadata, embedding FROM {} {} "
                                 "ORDER BY id").format(pg_sql.ident(rec.id), where),
                         (json.dumps(filters),) if filters else ())
        docs = {n: Document(r["id"], r["text"], r["metadata"]) for n, r in enumerate(got)}
        matrix = np.asarray([r["embedding"].to_numpy() for r in got], np.float32).reshape(
            len(got), rec.stored_dim)
        return Scan(len(got), lambda _: docs, matrix=matrix)

    def explain(self, rec: PgRecord, q: np.ndarray, plan: Plan,
                filters: dict[str, Any] | None) -> str:
        """PostgreSQL's plan for one prepared query through the stages SQL runs."""
        stages = plan.funnel.stages[:plan.stages]
        statement = pg_sql.statement(rec.id, rec.stored_dim, rec.storage, stages, filters,
                                     with_vectors=False, use_index=plan.index)
        with self._tx() as cur:
            pg_sql.settings(cur, plan.index, stages[0].keep or 10, self.ef_search,
                            self.iterative_scan)
            got = cur.execute(sql.SQL("EXPLAIN ") + statement,
                              pg_sql.params(q, stages, filters)).fetchall()
        return "\n".join(str(next(iter(r.values()))) for r in got)

    def check(self, rec: PgRecord, report: CheckReport, repair: bool) -> bool:
        """The catalogue's count against the table; pages are PostgreSQL's to verify."""
        got = self._read(sql.SQL("SELECT count(*) AS n FROM {}").format(pg_sql.ident(rec.id)))
        n = int(got[0]["n"])
        report.checked.append(f"document count of table mrlkit_set_{rec.id}")
        if n != rec.doc_count:
            if repair:
                with self._tx() as cur:
                    cur.execute("UPDATE embedding_set SET doc_count = %s WHERE id = %s",
                                (n, rec.id))
            report.found(f"the catalogue counts {rec.doc_count:,} documents, the table holds "
                         f"{n:,}", "count corrected" if repair else None)
        report.delegated = ("page and index integrity are PostgreSQL's: data checksums "
                            "(pg_checksums), amcheck, REINDEX")
        return False

    def storage(self, rec: PgRecord, count: int) -> StorageInfo:
        got = self._read("SELECT pg_table_size(%s::regclass) AS bytes",
                         (f"mrlkit_set_{rec.id}",))
        views = []
        for r in self._indexes(rec.id):
            m = re.search(r"_d(\d+)_(\w+)$", r["name"])
            if m and m.group(2) in PRECISIONS:
                views.append(ViewInfo(int(m.group(1)), m.group(2), r["bytes"], "HNSW index"))
        return StorageInfo(rec.info(count), count, 0, int(got[0]["bytes"]) if got else 0,
                           bytes_per_vector(rec.stored_dim, rec.storage), views, self.location,
                           {"indexed_stages": list(rec.indexes),
                            "schema_version": self.schema_version()})
