"""The local engine's catalogue: its SQLite schema and migrations, the connection (WAL,
or read-only on a full disk), the SQL of a metadata filter, and the errors a damaged
catalogue raises.

Example::

    >>> filter_sql(1, 10, {"lang": "en"})[1][:2]
    [1, 10]
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import StoreError
from ..transform import Transform
from .records import SetRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY, provider TEXT NOT NULL, native_dim INTEGER NOT NULL,
    supports_mrl INTEGER NOT NULL, mrl_dims TEXT, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
    model TEXT NOT NULL REFERENCES models,
    truncate_dim INTEGER, stored_dim INTEGER NOT NULL, storage TEXT NOT NULL,
    allow_non_mrl INTEGER NOT NULL DEFAULT 0, n_rows INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, transform TEXT, checksum INTEGER, plan TEXT,
    n_dead INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS documents (
    set_id INTEGER NOT NULL REFERENCES sets ON DELETE CASCADE, row INTEGER NOT NULL,
    ext_id TEXT NOT NULL, text TEXT, metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (set_id, row), UNIQUE (set_id, ext_id));
CREATE TABLE IF NOT EXISTS quarantine (
    set_id INTEGER NOT NULL REFERENCES sets ON DELETE CASCADE, ext_id TEXT NOT NULL,
    text TEXT, metadata TEXT NOT NULL DEFAULT '{}', row INTEGER, reason TEXT,
    at TEXT NOT NULL, PRIMARY KEY (set_id, ext_id));
"""
_TYPES = {str: ("text",), bool: ("true", "false"), int: ("integer", "real"),
          float: ("integer", "real")}


@dataclass(frozen=True, kw_only=True)
class LocalRecord(SetRecord):
    id: int
    n_rows: int       # rows in the vector file, deleted ones included
    generation: int
    version: int
    checksum: int | None  # CRC-32 of the committed vector file (None: not known)
    n_dead: int | None = None  # rows in the deletion log, dead.bin (None: no log yet)


def record_of(r: sqlite3.Row) -> LocalRecord:
    """A set's record from its ``sets`` row."""
    keys = r.keys()
    return LocalRecord(name=r["name"], model=r["model"], truncate_dim=r["truncate_dim"],
                       stored_dim=r["stored_dim"], storage=r["storage"],
                       allow_non_mrl=bool(r["allow_non_mrl"]), created_at=r["created_at"],
                       transform=Transform.from_json(r["transform"]), id=r["id"],
                       n_rows=r["n_rows"], generation=r["generation"], version=r["version"],
                       checksum=r["checksum"],
                       plan=r["plan"] if "plan" in keys else None,  # read-only: unmigrated
                       n_dead=r["n_dead"] if "n_dead" in keys else None)


def migrate(db: sqlite3.Connection) -> None:
    """Columns stores made by earlier versions lack."""
    columns = {r["name"] for r in db.execute("PRAGMA table_info(sets)")}
    # n_dead of a set made before the deletion log is NULL: its first write starts one
    for column, kind in (("transform", "TEXT"), ("checksum", "INTEGER"), ("plan", "TEXT"),
                         ("n_dead", "INTEGER")):
        if column not in columns:
            db.execute(f"ALTER TABLE sets ADD COLUMN {column} {kind}")


def filter_sql(set_id: int, n_rows: int, filters: Mapping[str, Any]
               ) -> tuple[str, list[Any]]:
    """The rows of a set's snapshot (``row < n_rows``) whose metadata equals ``filters``:
    the key goes in as a quoted JSON path parameter, never into the SQL text, and the
    JSON type is checked too, so that true never matches 1."""
    sql = "SELECT row FROM documents WHERE set_id = ? AND row < ?"
    params: list[Any] = [set_id, n_rows]
    for key, value in filters.items():
        path = "$." + json.dumps(key)
        types = _TYPES[type(value)]
        sql += (f" AND json_type(metadata, ?) IN ({','.join('?' * len(types))})"
                " AND json_extract(metadata, ?) = ?")
        params += [path, *types, path, int(value) if isinstance(value, bool) else value]
    return sql + " ORDER BY row", params


def in_chunks(values: Sequence[Any]) -> Iterator[tuple[list[Any], str]]:
    """``values`` in chunks below SQLite's parameter limit, each with its ``?`` marks
    (for ``... IN ({marks})``)."""
    values = list(values)
    for start in range(0, len(values), 900):
        chunk = values[start:start + 900]
        yield chunk, ",".join("?" * len(chunk))


def live_rows(rows: Iterable[int], n_rows: int) -> np.ndarray:
    """The mask of rows ``[0, n_rows)`` that hold a document, from the rows of the
    documents (the catalogue's answer when no deletion log can be trusted)."""
    have = np.fromiter(rows, np.int64)
    mask = np.zeros(n_rows, bool)
    mask[have[(have >= 0) & (have < n_rows)]] = True
    return mask


def why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextmanager
def catalogue_errors(root: Path) -> Iterator[None]:
    """A damaged catalogue (SQLite's DatabaseError) as a StoreError that says what to do."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise StoreError(f"the catalogue of {root} is locked by another process: "
                             f"{exc}") from None
        raise StoreError(f"the catalogue of {root} is damaged ({exc}): `mrlkit sets "
                         "check` says what it can still read; restore catalog.sqlite "
                         "from a backup") from None


def _tuned(db: sqlite3.Connection) -> sqlite3.Connection:
    db.row_factory = sqlite3.Row
    # a search reads its hits' rows of `documents`: mapped, they cost no read call
    db.execute("PRAGMA mmap_size=1073741824")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def read_connection(path: Path, read_only: bool) -> sqlite3.Connection:
    """A connection for one thread's reads (``query_only``: a read path that tried to
    write would fail loudly); on a store opened read-only, immutable as the writer's."""
    if read_only:
        return _tuned(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True,
                                      timeout=30, isolation_level=None,
                                      check_same_thread=False))
    db = _tuned(sqlite3.connect(path, timeout=30, isolation_level=None,
                                check_same_thread=False))
    db.execute("PRAGMA query_only=ON")
    return db


def connect(path: Path) -> tuple[sqlite3.Connection, bool]:
    """The catalogue's connection, and whether it is read-only. WAL mode needs its
    side files written to open at all; on a full disk the catalogue is opened
    immutable instead (a clean close leaves everything in the main file), so that
    searches still answer."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return _tuned(db), False
    except sqlite3.OperationalError:
        free = os.statvfs(path.parent)
        if not path.exists() or free.f_bavail * free.f_frsize > 1 << 20:
            raise
        db.close()
    ro = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=30,
                         isolation_level=None, check_same_thread=False)
    return _tuned(ro), True
