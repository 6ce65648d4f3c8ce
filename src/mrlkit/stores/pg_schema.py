"""The pgvector engine's schema: its migrations (append only; each runs once, in order,
under an advisory lock), its catalogue row and the record read from it.

Example::

    >>> MIGRATIONS[-1][0] >= 2
    True
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator, Mapping

from ..errors import InvalidInputError, StoreError
from ..transform import Transform
from .records import SetRecord

Cursor = Any  # psycopg.Cursor[dict[str, Any]]

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
"""), (3, """
ALTER TABLE embedding_set ADD COLUMN plan jsonb;  -- `mrlkit sets tune`: the measured plan
""")]

SET_COLUMNS = ("id, name, config, truncate_dim, stored_dim, storage, doc_count, "
                "created_at, allow_non_mrl, indexes, transform::text AS transform, "
               "plan::text AS plan")

Row = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class PgRecord(SetRecord):
    id: int
    doc_count: int
    indexes: tuple[str, ...]  # first stages with an HNSW index, e.g. "64:binary"


def insert_set(cur: Cursor, rec: SetRecord, spec: Mapping[str, Any]) -> int:
    """The set's catalogue row (and its model's, kept as data for the trigger above);
    returns the set's id."""
    mrl_dims = spec["mrl_dims"] if isinstance(spec["mrl_dims"], list) else None
    cur.execute(
        "INSERT INTO embedding_config (name, provider, native_dim, supports_mrl, "
        "mrl_dimensions, min_dim, prompts, spec) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET supports_mrl = excluded.supports_mrl, "
        "mrl_dimensions = excluded.mrl_dimensions, min_dim = excluded.min_dim, "
        "prompts = excluded.prompts, spec = excluded.spec",
        (spec["name"], spec["provider"], spec["native_dim"], spec["supports_mrl"], mrl_dims,
         spec["min_dim"], json.dumps({"query": spec["query_prompt"],
                                      "document": spec["document_prompt"]}),
         json.dumps(dict(spec))))
    got = cur.execute(
        "INSERT INTO embedding_set (name, config, truncate_dim, stored_dim, storage, "
        "allow_non_mrl) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (rec.name, rec.model, rec.truncate_dim, rec.stored_dim, rec.storage,
         rec.allow_non_mrl)).fetchone()
    assert got is not None
    return int(got["id"])


def record_of(r: Row) -> PgRecord:
    """A set's record from its ``embedding_set`` row."""
    return PgRecord(name=r["name"], model=r["config"], truncate_dim=r["truncate_dim"],
                    stored_dim=r["stored_dim"], storage=r["storage"],
                    allow_non_mrl=bool(r["allow_non_mrl"]),
                    created_at=r["created_at"].isoformat(timespec="seconds"),
                    transform=Transform.from_json(r["transform"]), id=r["id"],
                    doc_count=int(r["doc_count"]), indexes=tuple(r["indexes"]),
                    plan=r["plan"])


def migrate(cur: Cursor, location: str) -> None:
    """Apply the migrations this database lacks, once, in order (under an advisory
    lock, so that two processes opening a new database do not both run them)."""
    import psycopg

    cur.execute("SELECT pg_advisory_xact_lock(hashtext('mrlkit-migrations'))")
    cur.execute("CREATE TABLE IF NOT EXISTS mrlkit_schema_version ("
                "version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())")
    got = cur.execute("SELECT coalesce(max(version), 0) AS v "
                      "FROM mrlkit_schema_version").fetchone()
    current, newest = int(got["v"]) if got else 0, MIGRATIONS[-1][0]
    if current > newest:
        raise StoreError(f"the database at {location} has mrlkit schema "
                         f"version {current}; this mrlkit knows up to {newest}: "
                         "upgrade mrlkit")
    for version, script in MIGRATIONS:
        if version > current:
            try:
                cur.execute(script)
            except psycopg.errors.InsufficientPrivilege:
                raise StoreError(
                    f"cannot set up mrlkit's schema in {location}: the pgvector "
                    "extension must be created by a superuser first "
                    "(CREATE EXTENSION vector)") from None
            except psycopg.errors.FeatureNotSupported as exc:
                raise StoreError(f"pgvector is missing at {location}: "
                                 f"{exc.diag.message_primary}") from None
            cur.execute("INSERT INTO mrlkit_schema_version (version) VALUES (%s)",
                        (version,))


@contextmanager
def pg_errors(location: str) -> Iterator[None]:
    """Database errors become :mod:`mrlkit.errors` errors, one line each."""
    import psycopg

    try:
        yield
    except psycopg.errors.DataException as exc:
        raise InvalidInputError(f"PostgreSQL refused the data: "
                                f"{exc.diag.message_primary}") from None
    except psycopg.errors.IntegrityError as exc:
        raise StoreError(f"PostgreSQL refused the change: "
                         f"{exc.diag.message_primary}") from None
    except psycopg.Error as exc:
        first = (exc.diag.message_primary if isinstance(exc, psycopg.DatabaseError)
                 else None) or str(exc).strip().splitlines()[0]
        raise StoreError(f"PostgreSQL at {location}: {first}") from None
