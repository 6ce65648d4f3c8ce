"""The embedded store: a directory. SQLite (WAL) holds the catalogue; vectors live once
per set in an append-only file read by memory map; resolution views are derived files.

Layout::

    STORE/catalog.sqlite                    models, sets, documents (rows → ids, text, metadata)
    STORE/sets/<id>/vectors-<gen>.bin       every row at the stored dim (float32 or float16)
    STORE/sets/<id>/views/d<D>-<prec>.bin   derived codes, e.g. binary@64; extended on add
    STORE/sets/<id>/ann/d<D>.faiss          HNSW index of a float prefix, for big sets

A write batch appends its vectors past the committed row count, fsyncs, then commits the
documents and the new row count in one SQLite transaction. A process killed in between
leaves bytes past the committed count, which nothing reads and the next write overwrites:
every earlier batch is complete and nothing of the interrupted one shows.

Example::

    >>> store = LocalStore("/tmp/mrlkit-doc")                   # doctest: +SKIP
    >>> store.create_set("notes", "all-MiniLM-L6-v2")           # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .. import vectors
from ..errors import (InvalidInputError, ReembedRequiredError, SetExistsError,
                      SetNotFoundError, StoreError)
from ..registry import get_spec, validate_dim
from ..vectors import Int8Calibration
from .base import (STORAGE_PRECISIONS, Document, SearchResult, SetInfo, View,
                   apply_transform, check_batch, compose_transform, crash_point,
                   refuse_adapted_reindex, transform_fields)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY, provider TEXT NOT NULL, native_dim INTEGER NOT NULL,
    supports_mrl INTEGER NOT NULL, mrl_dims TEXT, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sets (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, model TEXT NOT NULL REFERENCES models,
    truncate_dim INTEGER, stored_dim INTEGER NOT NULL, storage TEXT NOT NULL,
    allow_non_mrl INTEGER NOT NULL DEFAULT 0, n_rows INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    set_id INTEGER NOT NULL REFERENCES sets ON DELETE CASCADE, row INTEGER NOT NULL,
    ext_id TEXT NOT NULL, text TEXT, metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (set_id, row), UNIQUE (set_id, ext_id));
"""

_COLUMNS = ("id, name, model, truncate_dim, stored_dim, storage, n_rows, created_at, "
            "allow_non_mrl, generation, version, transform")
CALIBRATION_SAMPLE = 20_000


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LocalStore:
    """The embedded default backend (see module docs)."""

    def __init__(self, path: str | os.PathLike[str], *, ann_nprobe: int = 32) -> None:
        self.root = Path(path)
        self.ann_nprobe = ann_nprobe
        self.location = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store at {self.root}: {exc.strerror}") from None
        self._db = sqlite3.connect(self.root / "catalog.sqlite", timeout=30,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(sets)")}
        if "transform" not in columns:  # stores made before `mrlkit adapt` existed
            self._db.execute("ALTER TABLE sets ADD COLUMN transform TEXT")
        self._lock = threading.RLock()
        self._cache: dict[tuple, Any] = {}

    # --- catalogue --------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LocalStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from the start."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            crash_point("before_commit")
            self._db.execute("COMMIT")

    def _row(self, name: str) -> sqlite3.Row:
        cur = self._db.execute(f"SELECT {_COLUMNS} FROM sets WHERE name = ?", (name,))
        row = cur.fetchone()
        if row is None:
            known = [r[0] for r in self._db.execute("SELECT name FROM sets ORDER BY name")]
            raise SetNotFoundError(f"no embedding set named {name!r} in {self.location}"
                                   + (f"; sets: {', '.join(known)}" if known else
                                      "; create one with `mrlkit sets create`"))
        return row

    def _info(self, row) -> SetInfo:
        count = self._db.execute("SELECT count(*) FROM documents WHERE set_id = ?",
                                 (row[0],)).fetchone()[0]
        return SetInfo(name=row[1], model=row[2], truncate_dim=row[3], stored_dim=row[4],
                       storage=row[5], count=count, created_at=row[7],
                       allow_non_mrl=bool(row[8]), **transform_fields(row[11]))

    def create_set(self, name: str, model: str, truncate_dim: int | None = None, *,
                   storage: str = "float32", allow_non_mrl: bool = False,
                   index: bool = True) -> SetInfo:
        """Create an empty set (``index`` is accepted for the protocol: the local store
        builds each view on first use, or ahead with :meth:`index`)."""
        if not name or not name.strip() or "/" in name:
            raise InvalidInputError(f"bad set name {name!r}: use a non-empty name without '/'")
        if storage not in STORAGE_PRECISIONS:
            raise InvalidInputError(f"storage must be float32 or float16, not {storage!r}")
        spec = get_spec(model)
        dim = validate_dim(spec, truncate_dim, allow_non_mrl=allow_non_mrl)
        stored_truncate = None if truncate_dim in (None, spec.native_dim) else dim
        with self._write() as db:
            if db.execute("SELECT 1 FROM sets WHERE name = ?", (name,)).fetchone():
                raise SetExistsError(f"embedding set {name!r} exists already in "
                                     f"{self.location}")
            db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO "
                       "UPDATE SET spec = excluded.spec, mrl_dims = excluded.mrl_dims, "
                       "supports_mrl = excluded.supports_mrl",
                       (spec.name, spec.provider, spec.native_dim, int(spec.supports_mrl),
                        json.dumps(spec.as_dict()["mrl_dims"]), json.dumps(spec.as_dict())))
            db.execute("INSERT INTO sets (name, model, truncate_dim, stored_dim, storage, "
                       "allow_non_mrl, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (name, spec.name, stored_truncate, dim, storage, int(allow_non_mrl),
                        datetime.now(timezone.utc).isoformat(timespec="seconds")))
        return self.get_set(name)

    def list_sets(self) -> list[SetInfo]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM sets ORDER BY name").fetchall()
        return [self._info(r) for r in rows]

    def get_set(self, name: str) -> SetInfo:
        return self._info(self._row(name))

    def drop_set(self, name: str) -> None:
        with self._write() as db:
            row = self._row(name)
            db.execute("DELETE FROM documents WHERE set_id = ?", (row[0],))
            db.execute("DELETE FROM sets WHERE id = ?", (row[0],))
        shutil.rmtree(self._dir(row[0]), ignore_errors=True)
        self._cache.clear()

    # --- files ----------------------------------------------------------------------
    def _dir(self, set_id: int) -> Path:
        return self.root / "sets" / str(set_id)

    def _vector_path(self, set_id: int, generation: int) -> Path:
        return self._dir(set_id) / f"vectors-{generation}.bin"

    @staticmethod
    def _dtype(storage: str) -> np.dtype:
        return np.dtype(np.float16 if storage == "float16" else np.float32)

    def _matrix(self, row) -> np.ndarray:
        """The committed rows of a set's vector file, memory-mapped read-only."""
        set_id, stored_dim, storage, n_rows, gen = row[0], row[4], row[5], row[6], row[9]
        if n_rows == 0:
            return np.empty((0, stored_dim), self._dtype(storage))
        key = ("mmap", set_id, gen, n_rows)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items()
                           if not (k[0] == "mmap" and k[1] == set_id)}
            self._cache[key] = np.memmap(self._vector_path(set_id, gen), mode="r",
                                         dtype=self._dtype(storage), shape=(n_rows, stored_dim))
        return self._cache[key]

    def _append_vectors(self, row, emb: np.ndarray) -> None:
        set_id, storage, n_rows, gen = row[0], row[5], row[6], row[9]
        path = self._vector_path(set_id, gen)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.ascontiguousarray(emb, dtype=self._dtype(storage))
        with open(path, "r+b" if path.exists() else "w+b") as fh:
            offset = n_rows * data.shape[1] * data.itemsize
            fh.truncate(offset)  # drop the tail of a batch that never committed
            fh.seek(offset)
            fh.write(data.tobytes())
            fh.flush()
            os.fsync(fh.fileno())

    # --- writes ---------------------------------------------------------------------
    def add(self, name: str, ids: Sequence[str], embeddings: np.ndarray,
            texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
            upsert: bool = False) -> int:
        """Add a batch atomically; with ``upsert``, existing ids are replaced."""
        with self._write() as db:
            row = self._row(name)
            set_id, n_rows = row[0], row[6]
            # checked against the row read under the write lock: a concurrent reindex
            # cannot slip a dimension change between the check and the write
            ids, emb, texts, metas = check_batch(name, row[4], ids, embeddings, texts,
                                                 metadata, transform=row[11])
            existing = self._existing(set_id, ids)
            if existing and not upsert:
                raise InvalidInputError(f"ids already in set {name!r}: {sorted(existing)[:5]}"
                                        "; use upsert to replace them")
            self._append_vectors(row, emb)
            crash_point("after_vectors")
            if existing:
                db.executemany("DELETE FROM documents WHERE set_id = ? AND ext_id = ?",
                               [(set_id, i) for i in existing])
            db.executemany(
                "INSERT INTO documents (set_id, row, ext_id, text, metadata) "
                "VALUES (?, ?, ?, ?, ?)",
                [(set_id, n_rows + j, i, t, json.dumps(m, ensure_ascii=False))
                 for j, (i, t, m) in enumerate(zip(ids, texts, metas))])
            db.execute("UPDATE sets SET n_rows = ?, version = version + 1 WHERE id = ?",
                       (n_rows + len(ids), set_id))
        return len(ids)

    def _select_in(self, columns: str, key: str, set_id: int, values: Sequence) -> Iterator:
        """``SELECT columns FROM documents WHERE set_id = ? AND key IN (values)``, in
        chunks below SQLite's parameter limit."""
        values = list(values)
        for start in range(0, len(values), 900):
            chunk = values[start:start + 900]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(f"SELECT {columns} FROM documents "
                                        f"WHERE set_id = ? AND {key} IN ({marks})",
                                        (set_id, *chunk))

    def _existing(self, set_id: int, ids: Sequence[str]) -> set[str]:
        return {r[0] for r in self._select_in("ext_id", "ext_id", set_id, ids)}

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete documents by id; returns how many existed. Their rows become dead."""
        ids = [str(i) for i in ids]
        with self._write() as db:
            set_id = self._row(name)[0]
            before = db.total_changes
            db.executemany("DELETE FROM documents WHERE set_id = ? AND ext_id = ?",
                           [(set_id, i) for i in ids])
            removed = db.total_changes - before
            db.execute("UPDATE sets SET version = version + 1 WHERE id = ?", (set_id,))
        return removed

    def reindex(self, name: str, dim: int, *, allow_non_mrl: bool = False) -> SetInfo:
        """Re-store a set at a smaller allowed prefix, from its own vectors: no model call."""
        with self._write() as db:
            row = self._row(name)
            set_id, model, stored_dim, storage, n_rows, gen = (row[0], row[2], row[4],
                                                               row[5], row[6], row[9])
            spec = get_spec(model)
            if dim > stored_dim:
                raise ReembedRequiredError(
                    f"set {name!r} stores {stored_dim} dimensions; {dim} needs the texts "
                    "embedded again (create a new set and index it)")
            refuse_adapted_reindex(name, row[11])
            dim = validate_dim(spec, dim, allow_non_mrl=allow_non_mrl or bool(row[8]))
            new_path = self._vector_path(set_id, gen + 1)
            new_path.parent.mkdir(parents=True, exist_ok=True)
            old = self._matrix(row)
            with open(new_path, "wb") as fh:
                for start in range(0, n_rows, 65536):
                    block = vectors.truncate(np.asarray(old[start:start + 65536]), dim)
                    fh.write(block.astype(self._dtype(storage)).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            db.execute("UPDATE sets SET stored_dim = ?, truncate_dim = ?, generation = ?, "
                       "allow_non_mrl = ?, version = version + 1 WHERE id = ?",
                       (dim, None if dim == spec.native_dim else dim, gen + 1,
                        int(allow_non_mrl or row[8]), set_id))
        self._cache.clear()
        self._vector_path(set_id, gen).unlink(missing_ok=True)
        shutil.rmtree(self._dir(set_id) / "views", ignore_errors=True)
        shutil.rmtree(self._dir(set_id) / "ann", ignore_errors=True)
        return self.get_set(name)

    def adapt(self, name: str, transform) -> SetInfo:
        """Apply an orthogonal :class:`~mrlkit.training.Transform` to every stored vector
        (a new vector file, views rebuilt) and keep it with the set: later adds and every
        query are transformed alike. A second adapt composes with the first."""
        with self._write() as db:
            row = self._row(name)
            set_id, stored_dim, storage, n_rows, gen = row[0], row[4], row[5], row[6], row[9]
            total = compose_transform(row[11], transform, stored_dim)
            new_path = self._vector_path(set_id, gen + 1)
            new_path.parent.mkdir(parents=True, exist_ok=True)
            old = self._matrix(row)
            with open(new_path, "wb") as fh:
                for start in range(0, n_rows, 65536):
                    block = transform.apply(np.asarray(old[start:start + 65536], np.float32))
                    fh.write(block.astype(self._dtype(storage)).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            crash_point("before_switch")
            db.execute("UPDATE sets SET generation = ?, transform = ?, version = version + 1 "
                       "WHERE id = ?", (gen + 1, json.dumps(total), set_id))
        self._cache.clear()
        self._vector_path(set_id, gen).unlink(missing_ok=True)
        shutil.rmtree(self._dir(set_id) / "views", ignore_errors=True)
        shutil.rmtree(self._dir(set_id) / "ann", ignore_errors=True)
        return self.get_set(name)

    def vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        """Every live document's id and stored vector (float32), in row order."""
        row = self._row(name)
        got = list(self._db.execute("SELECT row, ext_id FROM documents WHERE set_id = ? "
                                    "ORDER BY row", (row[0],)))
        rows = np.fromiter((r[0] for r in got), np.int64, len(got))
        return [r[1] for r in got], np.asarray(self._matrix(row)[rows], np.float32)

    # --- reads ----------------------------------------------------------------------
    def get(self, name: str, ids: Sequence[str]) -> list[Document | None]:
        ids = [str(i) for i in ids]
        found = {r[0]: Document(r[0], r[1], json.loads(r[2])) for r in self._select_in(
            "ext_id, text, metadata", "ext_id", self._row(name)[0], ids)}
        return [found.get(i) for i in ids]

    def _live(self, row) -> np.ndarray | None:
        """Boolean mask of live rows, or None when no row was ever deleted."""
        key = ("live", row[0], row[10])
        if key not in self._cache:
            rows = np.fromiter((r[0] for r in self._db.execute(
                "SELECT row FROM documents WHERE set_id = ?", (row[0],))), dtype=np.int64)
            mask = None
            if len(rows) != row[6]:
                mask = np.zeros(row[6], bool)
                mask[rows] = True
            self._cache[key] = mask
        return self._cache[key]

    def _filtered(self, row, filters: Mapping[str, Any]) -> np.ndarray:
        sql = "SELECT row FROM documents WHERE set_id = ?"
        params: list[Any] = [row[0]]
        for key, value in filters.items():
            # the key goes in as a quoted JSON path parameter, never into the SQL text
            path = "$." + json.dumps(str(key))
            if value is None:
                sql += " AND json_type(metadata, ?) = 'null'"
                params.append(path)
            else:
                sql += " AND json_extract(metadata, ?) = ?"
                params += [path, int(value) if isinstance(value, bool) else value]
        sql += " ORDER BY row"
        return np.fromiter((r[0] for r in self._db.execute(sql, params)), dtype=np.int64)

    def view(self, name: str, dim: int, precision: str) -> View:
        """The (dim, precision) view of every row: built on first use, persisted, and
        extended when rows were added since. The float view at the stored dimension is
        the vector file itself: never a second full copy."""
        row = self._row(name)
        return self._view(row, dim, precision)

    def _view(self, row, dim: int, precision: str) -> View:
        set_id, stored_dim, storage, n_rows, gen = row[0], row[4], row[5], row[6], row[9]
        matrix = self._matrix(row)
        if dim == stored_dim and precision in ("float32", storage):
            return View(dim, precision, matrix)
        key = ("view", set_id, gen, dim, precision, n_rows)
        if key in self._cache:
            return self._cache[key]
        base = self._dir(set_id) / "views" / f"d{dim}-{precision}"
        data_path, meta_path = base.with_suffix(".bin"), base.with_suffix(".json")
        width = vectors.bytes_per_vector(dim, precision) // (
            {"float32": 4, "float16": 2}.get(precision, 1))
        dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8,
                 "binary": np.uint8}[precision]
        with _locked(base.with_suffix(".lock")):
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if meta.get("generation") != gen:
                meta = {"generation": gen, "rows": 0}
            cal = None
            if precision == "int8":
                cal = (Int8Calibration.from_dict(meta["calibration"]) if "calibration" in meta
                       else self._calibration(row, dim))
                meta["calibration"] = cal.to_dict()
            done = meta["rows"]
            if done < n_rows:
                with open(data_path, "r+b" if data_path.exists() and done else "w+b") as fh:
                    itemsize = np.dtype(dtype).itemsize
                    fh.truncate(done * width * itemsize)
                    fh.seek(done * width * itemsize)
                    for start in range(done, n_rows, 65536):
                        block = vectors.truncate(np.asarray(matrix[start:start + 65536],
                                                            dtype=np.float32), dim)
                        fh.write(vectors.quantize(block, precision, cal).tobytes())
                    fh.flush()
                meta["rows"] = n_rows
                tmp = meta_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(meta))
                os.replace(tmp, meta_path)
        codes = np.fromfile(data_path, dtype=dtype, count=n_rows * width).reshape(n_rows, width)
        view = View(dim, precision, codes, cal)
        self._cache = {k: v for k, v in self._cache.items()
                       if not (k[0] == "view" and k[1:5] == key[1:5])}
        self._cache[key] = view
        return view

    def _calibration(self, row, dim: int) -> Int8Calibration:
        matrix = self._matrix(row)
        n = matrix.shape[0]
        if n == 0:
            raise StoreError("cannot calibrate int8 on an empty set")
        # an even spread of rows: the first rows of a corpus are often one topic
        sample = matrix[np.linspace(0, n - 1, min(n, CALIBRATION_SAMPLE)).astype(np.int64)]
        return Int8Calibration.fit(vectors.truncate(np.asarray(sample, np.float32), dim))

    def calibration(self, name: str, dim: int) -> Int8Calibration:
        """The int8 calibration at ``dim`` (the int8 view's, built if needed)."""
        return _Pinned(self, self._row(name)).calibration(name, dim)

    def full_vectors(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of the given rows, as float32."""
        return _Pinned(self, self._row(name)).full_vectors(name, rows)

    def ann(self, name: str, dim: int):
        """A persisted faiss IVF index over the float32 view at ``dim``, covering every
        row (extended when rows were added since it was built).

        IVF rather than HNSW: on a short prefix it builds in under a minute at a million
        rows and holds no graph; the funnel's rerank recovers the precision it gives up.
        ``nprobe`` is the store's ``ann_nprobe`` (lists scanned per query).
        """
        return self._ann(self._row(name), dim)

    def index(self, name: str, funnel) -> list[str]:
        """Build ahead of the first search what a funnel's first stage reads: its view,
        and its IVF index when the set is large enough for the funnel to use one.

        Example::

            >>> store.index("notes", Funnel.parse("64:binary:1000,384"))  # doctest: +SKIP
            ['view d64-binary']
        """
        from ..funnel import ANN_THRESHOLD, Funnel

        row = self._row(name)
        first = Funnel(funnel.stages[:1]).check(row[4], 1).stages[0]
        if row[6] == 0:
            return []
        made = []
        if not (first.dim == row[4] and first.precision in ("float32", row[5])):
            self._view(row, first.dim, first.precision)
            made.append(f"view d{first.dim}-{first.precision}")
        if first.precision == "float32" and row[6] >= ANN_THRESHOLD:
            self._ann(row, first.dim)
            made.append(f"IVF index d{first.dim}")
        return made

    def _ann(self, row, dim: int):
        import faiss

        set_id, n_rows, gen = row[0], row[6], row[9]
        key = ("ann", set_id, gen, dim, n_rows)
        if key not in self._cache:
            path = self._dir(set_id) / "ann" / f"d{dim}.faiss"
            with _locked(path.with_suffix(".lock")):
                index = faiss.read_index(str(path)) if path.exists() else None
                view = self._view(row, dim, "float32").codes
                if index is None or index.ntotal > n_rows:
                    nlist = int(np.clip(4 * np.sqrt(n_rows), 16, 8192))
                    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist,
                                               faiss.METRIC_INNER_PRODUCT)
                    sample = np.linspace(0, n_rows - 1, min(n_rows, 64 * nlist)).astype(int)
                    index.train(np.ascontiguousarray(view[sample], np.float32))
                if index.ntotal < n_rows:
                    for start in range(index.ntotal, n_rows, 65536):
                        index.add(np.ascontiguousarray(view[start:start + 65536], np.float32))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    faiss.write_index(index, str(path.with_suffix(".tmp")))
                    os.replace(path.with_suffix(".tmp"), path)
            self._cache = {k: v for k, v in self._cache.items()
                           if not (k[0] == "ann" and k[1:4] == key[1:4])}
            self._cache[key] = index
        index = self._cache[key]
        index.nprobe = self.ann_nprobe
        return index

    # --- search ---------------------------------------------------------------------
    def search(self, name: str, queries: np.ndarray, *, k: int = 10, funnel=None,
               filters: Mapping[str, Any] | None = None, adaptive=None) -> SearchResult:
        """Run a funnel (default: chosen from the set's size and model) for prepared
        query vectors at the set's stored dimension."""
        from ..funnel import default_funnel, execute
        from .base import Hit

        row = self._row(name)
        stored_dim, n_rows = row[4], row[6]
        q = vectors.as_matrix(queries, name="queries")
        if q.shape[1] != stored_dim:
            raise InvalidInputError(f"set {name!r} expects {stored_dim}-d queries, "
                                    f"not {q.shape[1]}")
        q = apply_transform(row[11], q)
        if funnel is None:
            funnel = default_funnel(n_rows, stored_dim,
                                    get_spec(row[2]).supports_mrl or row[11] is not None, k)
        funnel = funnel.check(stored_dim, k)
        live = self._live(row)
        candidates = self._filtered(row, filters) if filters else None
        if n_rows == 0 or (candidates is not None and len(candidates) == 0) or (
                live is not None and not live.any()):
            return SearchResult([[] for _ in q], [], [[] for _ in q])
        rows, scores, timings, dims = execute(_Pinned(self, row), name, q, funnel,
                                              n_rows=n_rows,
                                              live=live, candidates=candidates,
                                              adaptive=adaptive)
        docs = self._documents(row[0], np.unique(np.concatenate(rows)) if rows else [])
        hits = [[Hit(docs[r][0], float(s), docs[r][1], docs[r][2])
                 for r, s in zip(rr, ss) if r in docs] for rr, ss in zip(rows, scores)]
        return SearchResult(hits, timings, dims)

    def _documents(self, set_id: int, rows) -> dict[int, tuple[str, str | None, dict]]:
        return {r[0]: (r[1], r[2], json.loads(r[3])) for r in self._select_in(
            "row, ext_id, text, metadata", "row", set_id, [int(r) for r in rows])}

    # --- storage summary ------------------------------------------------------------
    def info(self, name: str) -> dict[str, Any]:
        """Count, stored bytes and the bytes of each view (the storage summary)."""
        row = self._row(name)
        info = self._info(row)
        set_dir = self._dir(row[0])
        vector_file = self._vector_path(row[0], row[9])
        views = []
        for meta_path in sorted((set_dir / "views").glob("*.json")):
            data = meta_path.with_suffix(".bin")
            dim, precision = meta_path.stem[1:].split("-")
            views.append({"dim": int(dim), "precision": precision,
                          "bytes": data.stat().st_size if data.exists() else 0})
        for ann in sorted((set_dir / "ann").glob("*.faiss")):
            views.append({"dim": int(ann.stem[1:]), "precision": "float32 (IVF index)",
                          "bytes": ann.stat().st_size})
        return {**info.as_dict(), "rows": row[6], "dead_rows": row[6] - info.count,
                "stored_bytes": vector_file.stat().st_size if vector_file.exists() else 0,
                "bytes_per_vector": vectors.bytes_per_vector(row[4], row[5]),
                "views": views, "location": self.location}


class _Pinned:
    """A store seen through one set's catalogue row, read once per search, so that the
    funnel's calls do not each query SQLite again."""

    def __init__(self, store: LocalStore, row) -> None:
        self.store, self.row = store, row

    def view(self, name: str, dim: int, precision: str) -> View:
        return self.store._view(self.row, dim, precision)

    def full_vectors(self, name: str, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.store._matrix(self.row)[rows], dtype=np.float32)

    def calibration(self, name: str, dim: int) -> Int8Calibration:
        return self.store._view(self.row, dim, "int8").calibration

    def ann(self, name: str, dim: int):
        return self.store._ann(self.row, dim)
