"""``mrlkit sets check`` on the local engine: the catalogue, the vector file against its
size and CRC-32, every stored vector, the derived views and indexes, and files a crashed
drop left behind. With ``repair``: derived data is removed (rebuilt on next use),
documents whose vectors are lost are removed and named, the checksum is recomputed.

Example::

    >>> check(engine, engine.record("notes"), CheckReport("notes", "."), False)  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import numpy as np

from .. import vectors
from . import rules
from .local_files import file_crc, read_json, storage_dtype
from .records import CheckReport

if TYPE_CHECKING:  # pragma: no cover
    from .local import LocalEngine, LocalRecord

_BLOCK = 65536


def check(engine: LocalEngine, rec: LocalRecord, report: CheckReport, repair: bool) -> bool:
    db = engine._db
    got = db.execute("PRAGMA quick_check").fetchone()
    report.checked.append("catalogue (SQLite quick_check)")
    if got is None or got[0] != "ok":
        report.found(f"the catalogue is damaged ({got[0] if got else 'no answer'}): "
                     "restore catalog.sqlite from a backup")
    files = engine.files(rec)
    path = files.vector_path()
    width = rec.stored_dim * storage_dtype(rec.storage).itemsize
    size = path.stat().st_size if path.exists() else 0
    readable = min(rec.n_rows, size // width)
    report.checked.append(f"vector file {path.name}: {rec.n_rows:,} rows of {width:,} bytes")
    lost_rows = np.arange(readable, rec.n_rows)
    if readable < rec.n_rows:
        report.found(f"the vector file holds {readable:,} of {rec.n_rows:,} rows",
                     "cut to the rows it holds" if repair else None)
    elif rec.checksum is not None and file_crc(path, rec.n_rows * width) != rec.checksum:
        report.found("the vector file does not match its checksum",
                     "checksum recomputed over the rows kept" if repair else None)
    # every live row must be what mrlkit wrote: finite and unit norm
    live = np.fromiter((r["row"] for r in db.execute(
        "SELECT row FROM documents WHERE set_id = ? ORDER BY row", (rec.id,))), np.int64)
    bad = [lost_rows[np.isin(lost_rows, live)]]
    if readable:
        x = np.memmap(path, mode="r", dtype=storage_dtype(rec.storage),
                      shape=(readable, rec.stored_dim))
        ok_live = live[live < readable]
        for start in range(0, len(ok_live), _BLOCK):
            rows = ok_live[start:start + _BLOCK]
            bad.append(rows[rules.damaged_rows(np.asarray(x[rows]), rec.storage)])
    damaged = np.concatenate(bad)
    report.checked.append(f"{len(live):,} stored vectors: finite and unit norm")
    if len(damaged):
        ids = [r["ext_id"] for r in engine._select_in("ext_id", "row", rec.id,
                                                       damaged.tolist())]
        fix = None
        if repair:
            engine.delete(rec.name, ids)
            fix = "documents removed; add them again"
        report.found(f"{len(ids):,} documents have lost or damaged vectors (ids "
                     f"{sorted(ids)[:5]})", fix)
    if repair and (readable < rec.n_rows or len(damaged) or rec.checksum is None
                   or file_crc(path, rec.n_rows * width) != rec.checksum):
        _reseal(engine, rec, readable, width)
    _check_derived(engine, rec, report, repair)
    _check_orphans(engine, report, repair)
    return True


def _reseal(engine: LocalEngine, rec: LocalRecord, readable: int, width: int) -> None:
    """Keep the readable rows, record their checksum; derived data is rebuilt."""
    path = engine.files(rec).vector_path()
    with engine._write() as db:
        if readable < rec.n_rows:
            with open(path, "a+b") as fh:
                fh.truncate(readable * width)
            db.execute("DELETE FROM documents WHERE set_id = ? AND row >= ?",
                       (rec.id, readable))
        db.execute("UPDATE sets SET n_rows = ?, checksum = ?, version = version + 1 "
                   "WHERE id = ?", (readable, file_crc(path, readable * width), rec.id))
    engine._cache.clear()
    engine.files(rec).remove_derived()


def _check_derived(engine: LocalEngine, rec: LocalRecord, report: CheckReport,
                   repair: bool) -> None:
    files = engine.files(engine.record(rec.name))
    views = sorted((files.folder / "views").glob("*.json"))
    report.checked.append(f"{len(views)} derived views (generation, rows, CRC-32)")
    for meta_path in views:
        meta = read_json(meta_path)
        rows = meta.get("rows", 0) if isinstance(meta.get("rows"), int) else 0
        data = meta_path.with_suffix(".bin")
        size = data.stat().st_size if data.exists() else 0
        dim, _, precision = meta_path.stem[1:].partition("-")
        row_bytes = vectors.bytes_per_vector(int(dim), precision)
        if not files.view_matches(meta, data, row_bytes) or size != rows * row_bytes:
            if repair:
                data.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
            report.found(f"view {meta_path.stem} does not match the vectors it derives from",
                         "removed; rebuilt on next use" if repair else None)
    for ann in sorted((files.folder / "ann").glob("*.faiss")):
        import faiss

        try:
            faiss.read_index(str(ann))
        except RuntimeError:
            if repair:
                ann.unlink(missing_ok=True)
            report.found(f"index {ann.name} cannot be read",
                         "removed; rebuilt on next use" if repair else None)
    engine._cache.clear()


def _check_orphans(engine: LocalEngine, report: CheckReport, repair: bool) -> None:
    known = {str(r["id"]) for r in engine._db.execute("SELECT id FROM sets")}
    for folder in sorted((engine.root / "sets").glob("*")):
        if folder.is_dir() and folder.name not in known:
            if repair:
                shutil.rmtree(folder, ignore_errors=True)
            report.found(f"files of a dropped set in {folder}",
                         "removed" if repair else None)
