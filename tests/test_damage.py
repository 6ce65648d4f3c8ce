"""Damaged files and full disks on the local store, as a hostile-file probe found them
(issue 24, cases 9–13): `sets check` finds the damage, `--repair` never re-seals a row it
cannot verify (it quarantines it and names it), derived data is rebuilt from verified
vectors, and a search never needs to write to answer."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrlkit import Funnel, vectors
from mrlkit.stores import open_store
from mrlkit.stores.local import LocalStore

MODEL = "all-MiniLM-L6-v2"
DIM = 384
WIDTH = DIM * 4  # float32 rows: the damage below is placed byte-exactly
EXACT = Funnel.exact(DIM)


def unit(n, seed=0):
    return vectors.normalize(np.random.default_rng(seed).normal(size=(n, DIM)))


def filled(location, n=300, **kw):
    s = LocalStore(location, **kw)
    s.create_set("s", MODEL, storage="float32", allow_non_mrl=True)  # prefix funnels
    x = unit(n)
    s.add("s", [f"d{i}" for i in range(n)], x, [f"text {i}" for i in range(n)])
    return s, x


def vector_file(location) -> Path:
    return Path(location) / "sets" / "1" / "vectors-0.bin"


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mrlkit.cli", *args], capture_output=True,
                          cwd=cwd, timeout=300)


def own_first(store, x, rows, funnel=EXACT):
    """Does each row's own vector find its own document first?"""
    res = store.search("s", x[rows], k=1, funnel=funnel)
    return [h[0].id if h else None for h in res.hits] == [f"d{r}" for r in rows]


@pytest.mark.parametrize("damage", ["two rows swapped", "a sign bit flipped"])
def test_repair_quarantines_rows_it_cannot_verify_instead_of_sealing_them(tmp_path, damage):
    """Case 9: the damage passes every norm check (the rows are still unit vectors), so
    only the checksum written with each row can tell."""
    loc = str(tmp_path / "st")
    s, x = filled(loc)
    path = vector_file(loc)
    raw = bytearray(path.read_bytes())
    if damage == "two rows swapped":
        a, b = raw[20 * WIDTH:21 * WIDTH], raw[40 * WIDTH:41 * WIDTH]
        raw[20 * WIDTH:21 * WIDTH], raw[40 * WIDTH:41 * WIDTH] = b, a
        hurt = ["d20", "d40"]
    else:
        raw[20 * WIDTH + 4 * 7 + 3] ^= 0x80  # the sign bit of value 7 of row 20
        hurt = ["d20"]
    path.write_bytes(bytes(raw))
    s = LocalStore(loc)
    report = s.check("s")
    assert not report.ok and any("do not match the checksum" in p and all(
        h in p for h in hurt) for p in report.problems), report.problems
    r = cli("sets", "check", "s", "--repair", "--json", "--store", loc, cwd=tmp_path)
    got = json.loads(r.stdout)
    assert r.returncode == 0 and got["ok"], got
    assert any("quarantined" in line for line in got["repaired"])
    assert sorted(got["quarantined"]) == sorted(hurt)
    again = LocalStore(loc)
    after = again.check("s")
    assert after.ok and sorted(after.quarantined) == sorted(hurt)
    assert again.get_set("s").count == 300 - len(hurt)
    kept = [i for i in range(300) if f"d{i}" not in hurt]
    assert own_first(again, x, kept)                  # no document finds another first
    assert again.get("s", hurt) == [None] * len(hurt)
    # added again, a document leaves the quarantine
    again.add("s", hurt, x[[int(h[1:]) for h in hurt]], ["back"] * len(hurt))
    assert again.check("s").quarantined == []
    assert own_first(again, x, list(range(300)))


def test_after_a_nan_row_is_repaired_binary_and_int8_searches_still_work(tmp_path):
    """Case 10: the NaN row stays in the file (dead); derived data must skip it."""
    loc = str(tmp_path / "st")
    s, x = filled(loc)
    path = vector_file(loc)
    with open(path, "r+b") as fh:
        fh.seek(10 * WIDTH)
        fh.write(np.full(DIM, np.nan, np.float32).tobytes())
    s = LocalStore(loc)
    assert not s.check("s").ok
    assert s.check("s", repair=True).ok
    again = LocalStore(loc)
    rows = [0, 5, 99, 250]
    for funnel in ("384:binary:50,384", "384:int8:50,384", "64:float32:50,384"):
        assert own_first(again, x, rows, Funnel.parse(funnel)), funnel
    assert again.check("s").ok


def test_a_graph_damaged_anywhere_is_rebuilt_not_walked(tmp_path):
    """Case 11: bytes overwritten far into the index file (not only its header)."""
    loc = str(tmp_path / "st")
    s, x = filled(loc, 3000, native_from=0)
    graph = Funnel.parse("64:float32:50,384")
    want = s.search("s", x[:20], k=5, funnel=graph).hits
    ann = next((Path(loc) / "sets" / "1" / "ann").glob("g0-hnsw-d64.faiss"))
    size = ann.stat().st_size
    with open(ann, "r+b") as fh:
        fh.seek(size * 3 // 4)
        fh.write(os.urandom(4096))
    fresh = LocalStore(loc, native_from=0)
    report = fresh.check("s")
    assert any("does not match its checksum" in p for p in report.problems), report.problems
    res = fresh.search("s", x[:20], k=5, funnel=graph)
    assert res.timings[0].method == "ann"
    assert [[h.id for h in q] for q in res.hits] == [[h.id for h in q] for q in want]
    assert fresh.check("s").ok  # the search rebuilt it


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 24 MiB (tmpfs), filled up by the test: writes fail with
    ENOSPC as on a full disk. Needs root (CI and these machines run as root)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs to make a full disk: {r.stderr.decode()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill_disk(mnt: Path) -> None:
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_on_a_full_disk_every_search_answers_and_says_what_it_could_not_write(small_disk):
    """Case 12: the graph and the views a search would build cannot be written."""
    from mrlkit import errors

    loc = str(small_disk / "st")
    s, x = filled(loc, 3000, native_from=0)  # open, as a server holds it
    _fill_disk(small_disk)
    rows = [1, 77, 2999]

    def answers(store):
        for spec in ("64:float32:50,384", "384:binary:100,384", "128:int8:100,384",
                     "384:float32"):
            res = store.search("s", x[rows], k=3, funnel=Funnel.parse(spec))
            assert [h[0].id for h in res.hits] == [f"d{r}" for r in rows], spec
            if spec != "384:float32":
                assert res.notes and "could not be written" in res.notes[0], (spec,
                                                                               res.notes)

    other = LocalStore(loc, native_from=0)           # another process opens it
    answers(other)
    other.close()
    with pytest.raises(errors.StoreError, match="nothing of this write was kept"):
        s.add("s", ["late"], unit(1, seed=5))          # a write is refused whole
    s.close()
    (small_disk / "filler").unlink()                   # a clean close: no WAL left
    LocalStore(loc).close()
    assert not (Path(loc) / "catalog.sqlite-wal").exists()
    _fill_disk(small_disk)
    closed = LocalStore(loc, native_from=0)          # opened with no room for its WAL
    answers(closed)
    with pytest.raises(errors.StoreError, match="read-only"):
        closed.add("s", ["late"], unit(1, seed=5))
    leftovers = [p.name for p in Path(loc).rglob("*")
                 if p.name.endswith((".tmp", ".json-next"))]
    assert leftovers == []
    assert closed.get_set("s").count == 3000
    (small_disk / "filler").unlink()
    again = LocalStore(loc)
    assert again.check("s").ok and again.get_set("s").count == 3000


def test_garbage_in_a_views_record_is_rebuilt_and_reported(tmp_path):
    """Case 13: a calibration that is not one, a record that is not JSON."""
    loc = str(tmp_path / "st")
    s, x = filled(loc)
    funnel = Funnel.parse("384:int8:50,384")
    assert own_first(s, x, [3, 4], funnel)
    record = Path(loc) / "sets" / "1" / "views" / "d384-int8.json"
    meta = json.loads(record.read_text())
    meta["calibration"] = {"nonsense": 1}
    record.write_text(json.dumps(meta))
    fresh = LocalStore(loc)
    report = fresh.check("s")
    assert any("d384-int8 has a damaged record" in p for p in report.problems), report
    assert own_first(fresh, x, [3, 4], funnel)        # rebuilt, not a KeyError
    record.write_text("{not json")
    assert own_first(LocalStore(loc), x, [3, 4], funnel)
    assert LocalStore(loc).check("s").ok


def test_a_file_where_the_views_folder_belongs(tmp_path):
    loc = str(tmp_path / "st")
    s, x = filled(loc)
    views = Path(loc) / "sets" / "1" / "views"
    views.mkdir(exist_ok=True)
    for p in views.iterdir():
        p.unlink()
    views.rmdir()
    views.write_text("not a folder")
    fresh = LocalStore(loc)
    res = fresh.search("s", x[[8]], k=1, funnel=Funnel.parse("384:binary:50,384"))
    assert res.hits[0][0].id == "d8" and "could not be written" in res.notes[0]
    report = fresh.check("s")
    assert any("is a file where a folder" in p for p in report.problems)
    assert fresh.check("s", repair=True).ok and not views.exists()
    again = LocalStore(loc)
    res = again.search("s", x[[8]], k=1, funnel=Funnel.parse("384:binary:50,384"))
    assert res.hits[0][0].id == "d8" and res.notes == [] and views.is_dir()


def test_a_corrupt_catalogue_page_is_reported_by_check_not_a_crash(tmp_path):
    loc = tmp_path / "st"
    s, _ = filled(str(loc), 2000)
    s.close()
    db = loc / "catalog.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as fh:  # the documents table's pages, past the schema's
        fh.seek(page * 6)
        fh.write(os.urandom(page * 3))
    r = cli("sets", "check", "s", "--store", str(loc), cwd=tmp_path)
    text = (r.stdout + r.stderr).decode()
    assert r.returncode in (2, 3) and "unexpected" not in text and "Traceback" not in text
    assert "catalogue" in text and "damaged" in text, text


def test_a_truncate_killed_midway_leaves_a_file_check_reports_and_repair_removes(tmp_path):
    loc = str(tmp_path / "st")
    filled(loc, 200)[0].close()
    code = (f"import os; from mrlkit.stores import open_store; s = open_store({loc!r}); "
            "from mrlkit.stores import faults; faults.install(lambda n: n == 'before_switch' "
            "and os.kill(os.getpid(), 9)); "
            "s.truncate('s', 128, allow_non_mrl=True)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode == -9, r.stderr
    orphan = Path(loc) / "sets" / "1" / "vectors-1.bin"
    assert orphan.exists()
    s = open_store(loc)
    assert s.get_set("s").stored_dim == DIM
    report = s.check("s")
    assert any("vectors-1.bin" in p and "no reader uses" in p for p in report.problems)
    assert s.check("s", repair=True).ok and not orphan.exists()


def test_info_counts_committed_bytes_only(tmp_path):
    """A write that died midway leaves bytes past the committed rows: nobody's."""
    loc = str(tmp_path / "st")
    s, _ = filled(loc, 100)
    with open(vector_file(loc), "ab") as fh:
        fh.write(b"\1" * (WIDTH * 7 + 3))
    info = LocalStore(loc).info("s")
    assert info.stored_bytes == 100 * WIDTH
