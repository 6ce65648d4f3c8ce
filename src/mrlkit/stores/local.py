"""The ``local`` engine: a directory. SQLite (WAL) holds the catalogue; vectors live once
per set in an append-only file read by memory map; resolution views are derived files.

Layout::

    STORE/catalog.sqlite                    models, sets, documents (rows → ids, text, metadata)
    STORE/sets/<id>/vectors-<gen>.bin       every row at the stored dim (float32 or float16)
    STORE/sets/<id>/views/d<D>-<prec>.bin   derived codes, e.g. binary@64; extended on add
    STORE/sets/<id>/ann/g<gen>-hnsw-d<D>.faiss  HNSW index of a short prefix, for big sets

A write batch appends its vectors past the committed row count, fsyncs, then commits the
documents and the new row count in one SQLite transaction. A process killed in between
leaves bytes past the committed count, which nothing reads and the next write overwrites:
every earlier batch is complete and nothing of the interrupted one shows. Set ids are
never reused (AUTOINCREMENT), so files a crashed drop leaves behind belong to no set.

Example::

    >>> store = LocalStore("/tmp/mrlkit-doc")                   # doctest: +SKIP
    >>> store.create_set("notes", "all-MiniLM-L6-v2")           # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from .. import vectors
from ..errors import StoreError
from ..funnel import Stage
from ..vectors import PRECISIONS, Int8Calibration
from . import faults
from .core import Store
from .seam import Calibrate, EngineDefaults, Scan
from .plan import Capabilities
from .local_files import SetFiles, finite_rows
from .row_reader import RowReader
from .local_db import (LocalRecord, catalogue_errors, connect, filter_sql, in_chunks,
                       live_rows, migrate, read_connection, record_of, why)
from .local_graph import GraphFiles
from .local_graph_work import Graphs
from .local_source import LiveMask, LocalSource
from .records import (Batch, CheckReport, Document, Rebuild, SetRecord, StorageInfo,
                      not_found,
                      ViewInfo)

def LocalStore(path: str | os.PathLike[str], *, native_from: int | str | None = None,
               ef_search: int | None = None) -> Store[LocalRecord]:
    """A store on the local engine at ``path`` (a folder, created if needed). A float32
    first stage runs on an HNSW index of its prefix once a set has ``native_from`` rows
    (see :mod:`mrlkit.stores.plan`); ``ef_search`` widens the graph walk past the
    stage's ``keep``."""
    return Store(LocalEngine(path, ef_search=ef_search), native_from=native_from)


class LocalEngine(EngineDefaults[LocalRecord]):
    """The embedded default engine (see module docs)."""

    kind = "local"
    # a float32 prefix graph, built on first use and walked by mrlkit's executor; views
    # of every precision; filters and later stages in mrlkit
    capabilities = Capabilities(first_stages=("float32",), source_index=True,
                                builds=PRECISIONS)

    def __init__(self, path: str | os.PathLike[str], *, ef_search: int | None = None) -> None:
        self.root = Path(path)
        self.ef_search = ef_search
        self.location = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db, self.read_only = connect(self.root / "catalog.sqlite")
        except OSError as exc:
            raise StoreError(f"cannot create store at {self.root}: {exc.strerror}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the catalogue of {self.root}: {exc}") from None
        if not self.read_only:
            migrate(self._db)
        self._lock = threading.RLock()   # writers only: readers share no connection
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._masks: dict[int, LiveMask] = {}
        self._dirs: dict[int, Path] = {}
        self._graph_files: dict[tuple[int, int], GraphFiles] = {}
        self._local = threading.local()  # this thread's read connection and records
        self._readers: list[sqlite3.Connection] = []
        self.graphs = Graphs(writable=not self.read_only)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the graph work running in the background (extension, compaction);
        True when none is left. Searches never wait for it: this is for tests, tools
        and a clean exit."""
        return self.graphs.settle(timeout)

    def close(self) -> None:
        self.graphs.settle()
        with self._lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
            self._db.close()

    def _conn(self) -> sqlite3.Connection:
        """The connection this thread reads with: inside a write transaction the
        writer's (it sees its own changes), else a connection of the thread's own, so
        that concurrent searches share nothing (SQLite's WAL lets readers run beside
        the one writer, each on the last commit)."""
        if getattr(self._local, "writing", False):
            return self._db
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            with catalogue_errors(self.root):
                db = read_connection(self.root / "catalog.sqlite", self.read_only)
            with self._lock:
                self._readers.append(db)
            self._local.db, self._local.records = db, {}
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from the start. A file
        that cannot be written (a full disk) or a damaged catalogue is a StoreError
        saying so, and nothing of the transaction is kept."""
        if self.read_only:
            raise StoreError(f"the store at {self.root} is open read-only: its disk was "
                             "full when it was opened (searches work; free some space and "
                             "open it again to write)")
        with self._lock, catalogue_errors(self.root):
            self._db.execute("BEGIN IMMEDIATE")
            self._local.writing = True
            try:
                yield self._db
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                if isinstance(exc, OSError):
                    raise StoreError(f"cannot write to the store at {self.root}: "
                                     f"{why(exc)}; nothing of this write was kept") from None
                raise
            finally:
                self._local.writing = False
            faults.point("before_commit")
            self._db.execute("COMMIT")

    # --- records ----------------------------------------------------------------------
    def record(self, name: str) -> LocalRecord:
        """The set's row, read again only when the catalogue changed: SQLite's
        ``data_version`` on the thread's read connection counts every other
        connection's commits (every search starts here, so this saves a query and a
        record per search)."""
        db = self._conn()
        with catalogue_errors(self.root):
            writing = db is self._db
            stamp = db.execute("PRAGMA data_version").fetchone()[0]
            records: dict[str, tuple[int, LocalRecord]] = {} if writing else \
                self._local.records
            got = records.get(name)
            if got is not None and got[0] == stamp:
                return got[1]
            r = db.execute("SELECT * FROM sets WHERE name = ?", (name,)).fetchone()
            if r is None:
                known = [k["name"] for k in db.execute("SELECT name FROM sets")]
                raise not_found(name, self.location, known)
            rec = record_of(r)
            if not writing:
                self._local.records = {name: (stamp, rec)}  # the last set asked for
            return rec

    def _read(self, sql: str, params: Sequence[Any] = (), *, tuples: bool = False
              ) -> list[Any]:
        """Every row of a query, on this thread's connection (see :meth:`_conn`)."""
        with catalogue_errors(self.root):
            cur = self._conn().cursor()
            if tuples:
                cur.row_factory = None
            return cur.execute(sql, params).fetchall()

    def save_plan(self, name: str, plan: str | None) -> None:
        with self._write() as db:  # the record read under the write lock: not_found
            db.execute("UPDATE sets SET plan = ? WHERE id = ?", (plan, self.record(name).id))

    def records(self) -> list[LocalRecord]:
        return [record_of(r) for r in self._read("SELECT * FROM sets ORDER BY name")]

    def count(self, rec: LocalRecord) -> int:
        got = self._read("SELECT count(*) AS n FROM documents WHERE set_id = ?", (rec.id,))
        return int(got[0]["n"])

    def rows(self, rec: LocalRecord) -> int:
        return rec.n_rows

    def create(self, rec: SetRecord, first: Stage, build: bool, spec: Mapping[str, Any]
               ) -> bool:
        """Insert the set (views are built on first use, or ahead by ``index``)."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM sets WHERE name = ?", (rec.name,)).fetchone():
                return False
            db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO "
                       "UPDATE SET spec = excluded.spec, mrl_dims = excluded.mrl_dims, "
                       "supports_mrl = excluded.supports_mrl",
                       (spec["name"], spec["provider"], spec["native_dim"],
                        int(spec["supports_mrl"]), json.dumps(spec["mrl_dims"]),
                        json.dumps(dict(spec))))
            cur = db.execute("INSERT INTO sets (name, model, truncate_dim, stored_dim, storage, "
                             "allow_non_mrl, created_at, checksum, n_dead) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)",
                             (rec.name, rec.model, rec.truncate_dim, rec.stored_dim, rec.storage,
                              int(rec.allow_non_mrl), rec.created_at))
            # files a crashed drop left under this id (stores made before ids were never
            # reused) must not be served as the new set's
            shutil.rmtree(self._dir(int(cur.lastrowid or 0)), ignore_errors=True)
        return True

    def drop(self, name: str) -> None:
        with self._write() as db:
            rec = self.record(name)
            db.execute("DELETE FROM documents WHERE set_id = ?", (rec.id,))
            db.execute("DELETE FROM sets WHERE id = ?", (rec.id,))
        shutil.rmtree(self._dir(rec.id), ignore_errors=True)
        self._cache.clear()

    # --- files ------------------------------------------------------------------------
    def _dir(self, set_id: int) -> Path:
        got = self._dirs.get(set_id)  # every search asks: a path built once per set
        if got is None:
            got = self._dirs[set_id] = self.root / "sets" / str(set_id)
        return got

    def files(self, rec: LocalRecord) -> SetFiles:
        return SetFiles(self._dir(rec.id), rec.id, rec.generation, rec.stored_dim,
                        rec.storage, rec.n_rows)

    def graph_files(self, rec: LocalRecord) -> GraphFiles:
        key = (rec.id, rec.generation)
        got = self._graph_files.get(key)
        if got is None:
            got = self._graph_files[key] = GraphFiles(self._dir(rec.id) / "ann",
                                                      rec.generation)
        return got

    def cached(self, kind: str, rec: LocalRecord, extra: tuple[Any, ...],
               make: Callable[[], Any]) -> Any:
        """One cached object per (kind, set, generation, extra), for the current rows."""
        key = (kind, rec.id, rec.generation, *extra)
        got = self._cache.get(key)
        if got is None or got[0] != rec.n_rows:
            got = (rec.n_rows, make())
            self._cache[key] = got
        return got[1]

    def uncache(self, kind: str, rec: LocalRecord, extra: tuple[Any, ...]) -> None:
        self._cache.pop((kind, rec.id, rec.generation, *extra), None)

    def matrix(self, rec: LocalRecord) -> np.ndarray:
        return self.cached("mmap", rec, (),  # type: ignore[no-any-return]
                            lambda: self.files(rec).matrix())

    def reader(self, rec: LocalRecord) -> RowReader:
        """The reader of the set's vector file: one per generation (rows are appended,
        never moved; a read past the file's end is an error it raises)."""
        key = ("rows", rec.id, rec.generation)
        got: RowReader | None = self._cache.get(key)
        if got is None:
            got = self._cache[key] = self.files(rec).rows()
        return got

    # --- writes -----------------------------------------------------------------------
    def add(self, name: str, prepare: Callable[[LocalRecord], Batch]) -> int:
        with self._write() as db:
            rec = self.record(name)
            batch = prepare(rec)
            existing = self._existing(rec.id, batch.ids)
            batch.accept(existing)
            files = self.files(rec)
            crc = files.append(batch.vectors, rec.checksum)
            faults.point("after_vectors")
            n_dead = self._remove(db, rec, "ext_id", list(existing))
            # a document added again leaves the quarantine a check put it in (asked once
            # per batch: a set without quarantined documents pays one indexed lookup)
            if db.execute("SELECT 1 FROM quarantine WHERE set_id = ? LIMIT 1",
                          (rec.id,)).fetchone():
                db.executemany("DELETE FROM quarantine WHERE set_id = ? AND ext_id = ?",
                               [(rec.id, i) for i in batch.ids])
            db.executemany(
                "INSERT INTO documents (set_id, row, ext_id, text, metadata) "
                "VALUES (?, ?, ?, ?, ?)",
                [(rec.id, rec.n_rows + j, i, t, json.dumps(m, ensure_ascii=False))
                 for j, (i, t, m) in enumerate(zip(batch.ids, batch.texts, batch.metadata))])
            db.execute("UPDATE sets SET n_rows = ?, checksum = ?, n_dead = ?, "
                       "version = version + 1 WHERE id = ?",
                       (rec.n_rows + len(batch), crc, n_dead, rec.id))
        return len(batch)

    def _remove(self, db: sqlite3.Connection, rec: LocalRecord, key: str,
                values: Sequence[Any]) -> int:
        """Delete the documents whose ``key`` is in ``values`` and log their rows as dead
        (:meth:`SetFiles.append_dead`, before the commit); returns the log's new length,
        for the write to commit. A set without a log yet (made before it) gets one here,
        from the catalogue, once."""
        dead: list[int] = []
        for chunk, marks in in_chunks(values):
            dead += [r[0] for r in db.execute(
                f"DELETE FROM documents WHERE set_id = ? AND {key} IN ({marks}) "
                "RETURNING row", (rec.id, *chunk))]
        files = self.files(rec)
        if rec.n_dead is None:  # no log: every row without a document is dead
            logged = np.flatnonzero(~live_rows((r[0] for r in db.execute(
                "SELECT row FROM documents WHERE set_id = ?", (rec.id,))), rec.n_rows))
            files.append_dead(logged, 0)
            return len(logged)
        if dead:
            files.append_dead(np.sort(np.asarray(dead, np.int64)), rec.n_dead)
        return rec.n_dead + len(dead)

    def _select_in(self, columns: str, key: str, set_id: int,
                   values: Sequence[Any], *, tuples: bool = False) -> Iterator[Any]:
        """``SELECT columns FROM documents WHERE set_id = ? AND key IN (values)``, in
        chunks below SQLite's parameter limit; rows by name, or plain tuples (cheaper:
        a search's hits are read this way)."""
        for chunk, marks in in_chunks(values):
            yield from self._read(f"SELECT {columns} FROM documents "
                                  f"WHERE set_id = ? AND {key} IN ({marks})",
                                  (set_id, *chunk), tuples=tuples)

    def _existing(self, set_id: int, ids: Sequence[str]) -> set[str]:
        return {r["ext_id"] for r in self._select_in("ext_id", "ext_id", set_id, ids)}

    def delete(self, name: str, ids: list[str]) -> int:
        """Delete documents by id; their rows become dead (masked by every search)."""
        with self._write() as db:
            rec = self.record(name)
            before = db.total_changes
            n_dead = self._remove(db, rec, "ext_id", list(dict.fromkeys(ids)))
            removed = db.total_changes - before
            db.execute("UPDATE sets SET n_dead = ?, version = version + 1 WHERE id = ?",
                       (n_dead, rec.id))
        return removed

    def rebuild(self, name: str, plan: Callable[[LocalRecord], Rebuild]) -> None:
        """Write the next generation's vector file, then switch the catalogue to it in
        one transaction: a process killed before the switch leaves the set as it was."""
        with self._write() as db:
            rec = self.record(name)
            p = plan(rec)
            new: LocalRecord = p.record
            files = self.files(rec)
            crc = files.write_next(files.matrix(), p.apply, new.stored_dim)
            faults.point("before_switch")
            db.execute("UPDATE sets SET stored_dim = ?, truncate_dim = ?, allow_non_mrl = ?, "
                       "transform = ?, plan = ?, generation = ?, checksum = ?, "
                       "version = version + 1 WHERE id = ?",
                       (new.stored_dim, new.truncate_dim, int(new.allow_non_mrl),
                        new.transform_json, new.plan, rec.generation + 1, crc, rec.id))
        self._cache.clear()
        files.remove_derived(old_gen=rec.generation)

    def index(self, rec: LocalRecord, first: Stage, native: bool,
              calibrate: Calibrate) -> list[str]:
        """Build the first stage's view, or its HNSW index when the planner will walk
        one (``native``)."""
        if rec.n_rows == 0:
            return []
        try:
            return self._index(rec, first, native, calibrate)
        except OSError as exc:
            raise StoreError(f"cannot build the first stage {first} in {self.root}: "
                             f"{why(exc)}") from None

    def _index(self, rec: LocalRecord, first: Stage, native: bool,
               calibrate: Calibrate) -> list[str]:
        files = self.files(rec)
        if native:  # built, extended or compacted here, errors raised; then served
            self.graphs.settle()
            got = self.graph_files(rec).open(files.matrix(), first.dim, rec.n_rows,
                                             live=self._live(rec))
            assert got is not None
            self.graphs.install(self.graph_files(rec), first.dim, got.loaded)
            return [f"HNSW index d{first.dim}"]
        if not (first.dim == rec.stored_dim and first.precision in ("float32", rec.storage)):
            files.view(first.dim, first.precision, calibration=calibrate(first.dim)
                       if first.precision == "int8" else None)
            self.uncache("view", rec, (first.dim, first.precision))
            return [f"view d{first.dim}-{first.precision}"]
        return []

    # --- reads ------------------------------------------------------------------------
    def vectors(self, rec: LocalRecord) -> tuple[list[str], np.ndarray]:
        got = self._read("SELECT row, ext_id FROM documents WHERE set_id = ? AND row < ? "
                         "ORDER BY row", (rec.id, rec.n_rows))  # rows of ``rec``'s snapshot
        rows = np.fromiter((r["row"] for r in got), np.int64, len(got))
        return [r["ext_id"] for r in got], np.asarray(self.matrix(rec)[rows], np.float32)

    def get(self, rec: LocalRecord, ids: list[str]) -> dict[str, Document]:
        return {r["ext_id"]: Document(r["ext_id"], r["text"], json.loads(r["metadata"]))
                for r in self._select_in("ext_id, text, metadata", "ext_id", rec.id, ids)}

    def scroll(self, rec: LocalRecord, offset: int, limit: int) -> list[Document]:
        return [Document(r["ext_id"], r["text"], json.loads(r["metadata"]))
                for r in self._read("SELECT ext_id, text, metadata FROM documents "
                                    "WHERE set_id = ? ORDER BY row LIMIT ? OFFSET ?",
                                    (rec.id, limit, offset))]

    def sample(self, rec: LocalRecord, rows: np.ndarray) -> np.ndarray:
        return finite_rows(np.asarray(self.matrix(rec)[rows], np.float32))

    def calibration(self, rec: LocalRecord, dim: int) -> tuple[Int8Calibration, int] | None:
        return self.files(rec).calibration(dim)  # the int8 view's record holds it

    def _live(self, rec: LocalRecord) -> LiveMask:
        """The live rows of ``rec``'s snapshot, from the deletion log: the mask a search
        used before is carried forward by the entries logged since (a write costs the
        next search its own rows, not a read of the set). A set without a log, or with
        a damaged one, is read from the catalogue (once per version)."""
        def catalogue() -> np.ndarray:
            return live_rows((r[0] for r in self._read(
                "SELECT row FROM documents WHERE set_id = ?", (rec.id,), tuples=True)),
                rec.n_rows)
        new = LiveMask.of(rec, self._masks.get(rec.id), self.files(rec), catalogue)
        self._masks[rec.id] = new
        return new

    def _filtered(self, rec: LocalRecord, filters: Mapping[str, Any]) -> np.ndarray:
        # rows a write committed since ``rec`` was read are not this search's (their
        # vectors lie past the snapshot the funnel reads)
        sql, params = filter_sql(rec.id, rec.n_rows, filters)
        return np.fromiter((r[0] for r in self._read(sql, params, tuples=True)),
                           dtype=np.int64)

    def scan(self, rec: LocalRecord, filters: dict[str, Any] | None,
             calibrate: Calibrate) -> Scan:
        live = self._live(rec)
        notes: list[str] = []
        return Scan(rec.n_rows, lambda rows: self._documents(rec.id, rows),
                    source=LocalSource(self, rec, calibrate, notes, live), live=live.mask,
                    candidates=self._filtered(rec, filters) if filters else None,
                    dead=live.dead, notes=notes)

    def _documents(self, set_id: int, rows: np.ndarray) -> dict[int, Document]:
        """The documents of ``rows`` (a search's hits: on every query's path)."""
        return {row: Document(ext_id, text, {} if meta == "{}" else json.loads(meta))
                for row, ext_id, text, meta in self._select_in(
                    "row, ext_id, text, metadata", "row", set_id, rows.tolist(), tuples=True)}

    def check(self, rec: LocalRecord, report: CheckReport, repair: bool) -> bool:
        from .local_check import check

        return check(self, rec, report, repair)

    def forget(self) -> None:
        """Drop every cached record, view and index (after a repair changed files)."""
        self.graphs.forget()
        with self._lock:
            self._cache.clear()
            self._masks.clear()
            self._local.records = {}

    def storage(self, rec: LocalRecord, count: int) -> StorageInfo:
        files = self.files(rec)
        path = files.vector_path()
        views = [ViewInfo(d, p, b, k) for d, p, b, k in files.derived()]
        size = path.stat().st_size if path.exists() else 0
        # the committed rows' bytes: a tail an interrupted write left is nobody's
        return StorageInfo(rec.info(count), rec.n_rows, rec.n_rows - count,
                           min(size, files.committed_bytes),
                           vectors.bytes_per_vector(rec.stored_dim, rec.storage), views,
                           self.location)
