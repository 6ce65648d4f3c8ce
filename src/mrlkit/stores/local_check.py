"""``mrlkit sets check`` on the local engine: the catalogue, the vector file row by row
against the CRC-32 recorded for each row when it was written, every stored vector
(finite, unit norm), the derived views and indexes against their sealed records, and
files that belong to no set or generation.

With ``repair``: a row whose bytes cannot be verified is never re-sealed — its document
is moved to quarantine (the ``quarantine`` table keeps its id, text and metadata, and
the report names it: add it again) and its row becomes dead; a cut file is cut to the
rows it holds; every derived file is removed and rebuilt on next use from the verified
vectors; stray files are removed.

Example::

    >>> check(engine, engine.record("notes"), CheckReport("notes", "."), False)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .rows import damaged_rows
from .local_files import (SetFiles, _view_shape, file_crc, read_sealed, remove_path, row_crcs,
                          storage_dtype, _calibration)
from .local_db import in_chunks, live_rows
from .local_graph import verify
from .records import CheckReport

if TYPE_CHECKING:  # pragma: no cover
    from .local import LocalEngine
    from .local_db import LocalRecord

_BLOCK = 65536


def check(engine: LocalEngine, rec: LocalRecord, report: CheckReport, repair: bool) -> bool:
    report.checked.append("catalogue (SQLite quick_check)")
    try:
        got = engine._db.execute("PRAGMA quick_check").fetchone()
        problem = None if got is not None and got[0] == "ok" else (
            got[0] if got else "no answer")
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
    if problem is not None:  # nothing below can be trusted to read
        report.found(f"the catalogue is damaged ({problem}): restore catalog.sqlite from "
                     "a backup; the vector files are intact and are not changed")
        return True
    _check_vectors(engine, rec, report, repair)
    _check_deletions(engine, engine.record(rec.name), report, repair)
    _check_derived(engine, engine.record(rec.name), report, repair)
    _check_orphans(engine, engine.record(rec.name), report, repair)
    engine.forget()
    return True


def _check_deletions(engine: LocalEngine, rec: LocalRecord, report: CheckReport,
                     repair: bool) -> None:
    """The deletion log names exactly the rows without a document (the catalogue is
    the truth: a log that disagrees is started again from it, at the next write, and
    searches read the catalogue until then)."""
    if rec.n_dead is None:
        return
    report.checked.append(f"deletion log ({rec.n_dead:,} dead rows)")
    files = engine.files(rec)
    logged = files.dead_rows(0, rec.n_dead)
    live = live_rows((r[0] for r in engine._read(
        "SELECT row FROM documents WHERE set_id = ?", (rec.id,), tuples=True)), rec.n_rows)
    if logged is not None and len(logged) == len(np.unique(logged)) and \
            np.array_equal(np.sort(logged), np.flatnonzero(~live)):
        return
    report.found("the deletion log " + ("cannot be read" if logged is None else
                                         "disagrees with the catalogue") +
                 " (searches would mask the wrong rows)",
                 "started again from the catalogue" if repair else None)
    if repair:
        with engine._write() as db:
            files.dead_path().unlink(missing_ok=True)
            db.execute("UPDATE sets SET n_dead = NULL, version = version + 1 WHERE id = ?",
                       (rec.id,))


def _check_vectors(engine: LocalEngine, rec: LocalRecord, report: CheckReport,
                   repair: bool) -> None:
    files = engine.files(rec)
    path = files.vector_path()
    dtype = storage_dtype(rec.storage)
    width = rec.stored_dim * dtype.itemsize
    size = path.stat().st_size if path.exists() else 0
    readable = min(rec.n_rows, size // width)
    crcs = files.stored_crcs()
    report.checked.append(f"vector file {path.name}: {rec.n_rows:,} rows of {width:,} "
                          f"bytes, each against its CRC-32 ({len(crcs):,} recorded)")
    if readable < rec.n_rows:
        report.found(f"the vector file holds {readable:,} of {rec.n_rows:,} rows",
                     "cut to the rows it holds" if repair else None)
    whole = (readable == rec.n_rows and rec.checksum is not None
             and file_crc(path, rec.n_rows * width) == rec.checksum)
    live = np.asarray([r[0] for r in engine._read(
        "SELECT row FROM documents WHERE set_id = ? ORDER BY row", (rec.id,), tuples=True)],
        np.int64)
    lost = live[live >= readable]
    mismatch, unverified, broken = [], [], []
    if readable:
        x = np.memmap(path, mode="r", dtype=dtype, shape=(readable, rec.stored_dim))
        ok_live = live[live < readable]
        for start in range(0, len(ok_live), _BLOCK):
            rows = ok_live[start:start + _BLOCK]
            block = np.asarray(x[rows])
            have = rows < len(crcs)
            if have.any():
                differ = row_crcs(block[have]) != crcs[rows[have]]
                mismatch.append(rows[have][differ])
            if not whole:  # rows written before row checksums: only the norm check
                unverified.append(rows[~have])
            broken.append(rows[damaged_rows(block, rec.storage)])
    mism = _cat(mismatch)
    unver = np.setdiff1d(_cat(unverified), _cat(broken))
    damaged = np.union1d(np.union1d(lost, mism), _cat(broken))
    report.checked.append(f"{len(live):,} stored vectors: checksums, finite and unit norm")
    if len(damaged) or len(unver):
        ids = _ids(engine, rec, np.union1d(damaged, unver))
        why = []
        if len(lost):
            why.append(f"{len(lost):,} lost with the end of the file")
        if len(mism):
            why.append(f"{len(mism):,} do not match the checksum written with them")
        if len(_cat(broken)):
            why.append(f"{len(_cat(broken)):,} are not finite unit vectors")
        if len(unver):
            why.append(f"{len(unver):,} were written before row checksums and the file's "
                       "own checksum no longer matches, so they cannot be verified")
        fix = None
        if repair:
            quarantine(engine, rec, np.union1d(damaged, unver), "; ".join(why))
            fix = ("quarantined (their ids, texts and metadata are kept in the catalogue's "
                   "quarantine table): add them again")
        report.found(f"{len(ids):,} documents' vectors cannot be trusted ({'; '.join(why)}):"
                     f" ids {_show(ids)}", fix)
    elif not whole and rec.checksum is not None and readable == rec.n_rows:
        report.found("the vector file changed in rows no document uses (deleted or "
                     "replaced documents)", "its checksum recomputed" if repair else None)
    if len(crcs) < readable and whole:
        report.found(f"{readable - len(crcs):,} rows were written before row checksums",
                     "their checksums written (the file's checksum verified them)"
                     if repair else None)
    held = quarantined(engine, rec)
    report.quarantined = held
    if held:
        report.checked.append(f"{len(held):,} documents in quarantine (ids "
                              f"{_show(held)}): add them again to search them")
    if repair and (len(damaged) or len(unver) or not whole or len(crcs) < readable):
        reseal(engine, rec, readable)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def _ids(engine: LocalEngine, rec: LocalRecord, rows: np.ndarray) -> list[str]:
    return sorted(r["ext_id"] for r in engine._select_in("ext_id", "row", rec.id,
                                                          rows.tolist()))


def _show(ids: list[str], most: int = 10) -> str:
    return str(ids[:most]) + (f" and {len(ids) - most:,} more" if len(ids) > most else "")


def _check_derived(engine: LocalEngine, rec: LocalRecord, report: CheckReport,
                   repair: bool) -> None:
    files = engine.files(rec)
    fix = "removed; rebuilt from the stored vectors on next use" if repair else None
    for sub in ("views", "ann"):
        where = files.folder / sub
        if where.exists() and not where.is_dir():
            report.found(f"{where} is a file where a folder of derived data belongs", fix)
            if repair:
                remove_path(where)
    views = files.folder / "views"
    records = sorted(views.glob("*.json")) if views.is_dir() else []
    report.checked.append(f"{len(records)} derived views (sealed record, generation, rows, "
                          "CRC-32, int8 calibration)")
    for meta_path in records:
        data = meta_path.with_suffix(".bin")
        dim, _, precision = meta_path.stem[1:].partition("-")
        meta = read_sealed(meta_path)
        bad = None
        if not dim.isdigit() or precision not in ("float32", "float16", "int8", "binary"):
            bad = "is not a view mrlkit writes"
        elif meta is None:
            bad = "has a damaged record"
        else:
            row_bytes = _view_shape(int(dim), precision)[2]
            size = data.stat().st_size if data.exists() else 0
            if not files.view_matches(meta, data, row_bytes) or \
                    size != meta["rows"] * row_bytes:
                bad = "does not match the vectors it derives from"
            elif precision == "int8" and _calibration(meta, int(dim)) is None:
                bad = "has no valid int8 calibration"
        if bad:
            report.found(f"view {meta_path.stem} {bad}", fix)
            if repair:
                data.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
    ann = files.folder / "ann"
    graphs = sorted(ann.glob(f"g{rec.generation}-hnsw-d*.faiss")) if ann.is_dir() else []
    report.checked.append(f"{len(graphs)} HNSW indexes (size and CRC-32 of the whole file)")
    for graph in graphs:
        bad = verify(graph)
        if bad is None:
            import faiss

            try:
                faiss.read_index(str(graph), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError:
                bad = "it cannot be read"
        if bad:
            report.found(f"index {graph.name}: {bad}", fix)
            if repair:
                graph.unlink(missing_ok=True)
                graph.with_suffix(".json").unlink(missing_ok=True)


def _strays(folder: Path, gen: int) -> list[Path]:
    """Files in a set's folder that no reader of generation ``gen`` uses: another
    generation's vectors (a truncate or adapt that died midway, or its leftovers),
    temporary files of writes that died, indexes of other generations."""
    keep = {f"vectors-{gen}.bin", f"vectors-{gen}.crc"}
    out = [p for p in folder.glob("vectors-*") if p.name not in keep]
    for sub in ("views", "ann"):
        if (folder / sub).is_dir():
            out += [p for p in (folder / sub).iterdir()
                    if p.name.endswith((".tmp", ".json-next"))]
    if (folder / "ann").is_dir():
        out += [p for p in (folder / "ann").glob("g*-hnsw-*")
                if not p.name.startswith(f"g{gen}-")]
    return sorted(out)


def _check_orphans(engine: LocalEngine, rec: LocalRecord, report: CheckReport,
                   repair: bool) -> None:
    known = {str(r[0]) for r in engine._read("SELECT id FROM sets", tuples=True)}
    for folder in sorted((engine.root / "sets").glob("*")):
        if folder.is_dir() and folder.name not in known:
            if repair:
                remove_path(folder)
            report.found(f"files of a dropped set in {folder}",
                         "removed" if repair else None)
    strays = _strays(engine.files(rec).folder, rec.generation)
    if strays:
        names = ", ".join(p.name for p in strays[:5]) + (
            f" and {len(strays) - 5} more" if len(strays) > 5 else "")
        report.found(f"{len(strays)} files no reader uses (left by an interrupted write, "
                     f"truncate or adapt): {names}", "removed" if repair else None)
        if repair:
            for p in strays:
                remove_path(p)


def quarantine(engine: LocalEngine, rec: LocalRecord, rows: np.ndarray, reason: str) -> int:
    """Move the documents of ``rows`` to quarantine: out of every search, their id,
    text and metadata kept (and listed by a check) until they are added again."""
    from datetime import UTC, datetime

    at = datetime.now(UTC).isoformat(timespec="seconds")
    with engine._write() as db:
        rec = engine.record(rec.name)
        for chunk, marks in in_chunks([int(r) for r in rows]):
            db.execute("INSERT OR REPLACE INTO quarantine (set_id, ext_id, text, "
                       "metadata, row, reason, at) SELECT set_id, ext_id, text, "
                       f"metadata, row, ?, ? FROM documents WHERE set_id = ? AND row IN "
                       f"({marks})", (reason, at, rec.id, *chunk))
        n_dead = engine._remove(db, rec, "row", [int(r) for r in rows])
        db.execute("UPDATE sets SET n_dead = ?, version = version + 1 WHERE id = ?",
                   (n_dead, rec.id))
    engine.forget()
    return len(rows)



def quarantined(engine: LocalEngine, rec: LocalRecord) -> list[str]:
    """Ids of the set's documents in quarantine."""
    return [r[0] for r in engine._read("SELECT ext_id FROM quarantine WHERE set_id = ? "
                                     "ORDER BY ext_id", (rec.id,), tuples=True)]



def reseal(engine: LocalEngine, rec: LocalRecord, readable: int) -> None:
    """After a repair: keep the first ``readable`` rows (documents past them were
    quarantined), give every row a checksum of what it holds now (the rows that
    could not be verified are dead by now), record the file's checksum, and drop
    derived data so that it is rebuilt from these vectors."""
    files = engine.files(rec)
    width = rec.stored_dim * storage_dtype(rec.storage).itemsize
    path = files.vector_path()
    with engine._write() as db:
        if readable < rec.n_rows:
            with open(path, "a+b") as fh:
                fh.truncate(readable * width)
            db.execute("DELETE FROM documents WHERE set_id = ? AND row >= ?",
                       (rec.id, readable))
        crc_path = files.crc_path()
        if crc_path.exists() and crc_path.stat().st_size > readable * 4:
            os.truncate(crc_path, readable * 4)
        kept = SetFiles(files.folder, rec.id, rec.generation, rec.stored_dim,
                        rec.storage, readable)
        kept.fill_crcs()
        # the deletion log starts again from the catalogue at the next write
        files.dead_path().unlink(missing_ok=True)
        db.execute("UPDATE sets SET n_rows = ?, checksum = ?, n_dead = NULL, "
                   "version = version + 1 WHERE id = ?",
                   (readable, file_crc(path, readable * width), rec.id))
    engine.forget()
    files.remove_derived()
