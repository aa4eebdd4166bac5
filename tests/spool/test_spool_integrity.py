"""A corrupt spool is moved aside (kept, within a budget), its readable rows are
salvaged into a fresh one, and the loss is reported until acknowledged."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from lpr_agent.spool import Kind, Spool, SpoolCorruptError

from .conftest import config, detection


def filled_spool(path: Path, n: int = 400) -> dict[str, dict]:
    """A spool of ``n`` detections, closed (checkpointed); returns the stored payloads."""
    spool = Spool.open(config(path))
    payloads = [detection(i, image_bytes=300) for i in range(n)]
    spool.put_many([(Kind.DETECTION, p) for p in payloads])
    spool.close()  # last connection: WAL checkpointed into the file and removed
    assert not path.with_name(path.name + "-wal").exists()
    return {p["event_id"]: p for p in payloads}


def damage(path: Path) -> int:
    size = path.stat().st_size
    with path.open("r+b") as f:  # trash pages in the middle of the items b-tree
        f.seek(size // 3)
        f.write(b"\xff\x13" * (size // 6))
    return size


def test_garbage_file_is_moved_aside_and_a_fresh_spool_created(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    spool = Spool.open(config(path))
    try:
        assert spool.recovered_from is not None
        assert spool.recovered_from.read_bytes() == garbage  # kept for forensics
        assert spool.recovered_from.parent == tmp_path
        st = spool.stats()
        assert st.counters["corrupt_recoveries"] == 1
        [report] = st.salvages
        assert (report.recovered, report.lost) == (0, 0)  # nothing of ours in it
        assert report.moved_to == str(spool.recovered_from)
        item = spool.put(Kind.DETECTION, detection())
        assert [i.id for i in spool.lease()] == [item]
    finally:
        spool.close()


def test_readable_rows_of_a_damaged_file_are_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    put = filled_spool(path)
    size = damage(path)
    spool = Spool.open(config(path))
    try:
        aside = spool.recovered_from
        assert aside is not None and aside.exists() and aside.stat().st_size == size
        back = spool.list_items(10**6)
        # The readable rows came back unchanged (not 0, not the whole file) ...
        assert 100 <= len(back) < 400
        for item in back:
            assert item.payload == put[item.event_id]
        assert spool.check_counts() == {}
        assert spool._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # ... and what could not be read is counted exactly (the indexes were readable).
        st = spool.stats()
        [report] = st.salvages
        assert report.recovered == len(back) and report.recovered + report.lost == 400
        assert report.moved_to == str(aside) and "malformed" in report.error
        assert st.counters["corrupt_recoveries"] == 1
        assert st.counters["salvaged_rows"] == len(back)
        # Ids and seq go on above the old file's: no reuse.
        new = detection(1000)
        new_id = spool.put(Kind.DETECTION, new)
        assert new_id > max(i.id for i in back) and new["seq"] == 401
    finally:
        spool.close()
    # The moved-aside copy really is corrupt (not a false alarm).
    conn = sqlite3.connect(aside)
    try:
        with pytest.raises(sqlite3.DatabaseError):
            rows = conn.execute("PRAGMA quick_check").fetchall()
            assert rows == [("ok",)]
    finally:
        conn.close()


def test_salvage_report_stays_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    filled_spool(path, n=100)
    damage(path)
    Spool.open(config(path)).close()
    spool = Spool.open(config(path))  # a restart does not forget it
    try:
        assert len(spool.stats().salvages) == 1
        assert spool.ack_salvage() == 1
        assert spool.stats().salvages == []
        assert spool.ack_salvage() == 0
    finally:
        spool.close()


def test_moved_aside_copies_are_kept_within_their_budget(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    sizes = []
    for _ in range(5):
        path.unlink(missing_ok=True)
        filled_spool(path, n=100)
        sizes.append(damage(path))
        Spool.open(config(path, corrupt_keep_files=3)).close()
    copies = sorted(tmp_path.glob("spool.db.corrupt-*"))
    assert len(copies) == 3, copies  # no WAL/SHM left beside them either
    # A byte budget smaller than two copies keeps one (the newest).
    newest = copies[-1]
    path.unlink()
    filled_spool(path, n=100)
    damage(path)
    spool = Spool.open(config(path, corrupt_keep_files=3, corrupt_keep_bytes=sizes[0] + 1))
    try:
        assert sorted(tmp_path.glob("spool.db.corrupt-*")) == [spool.recovered_from]
        assert not newest.exists()
    finally:
        spool.close()


def test_guest_open_does_not_move_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SpoolCorruptError):
        Spool.open(config(path), recover=False)
    assert path.read_bytes().startswith(b"not a database")
    assert [p.name for p in tmp_path.iterdir()] == ["spool.db"]


def test_foreign_sqlite_database_is_not_used_as_a_spool(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, something TEXT)")
    conn.execute("INSERT INTO items VALUES (1, 'precious')")
    conn.commit()
    conn.close()
    spool = Spool.open(config(path))
    try:
        assert spool.recovered_from is not None
        kept = sqlite3.connect(spool.recovered_from)
        assert kept.execute("SELECT something FROM items").fetchall() == [("precious",)]
        kept.close()
        spool.put(Kind.DETECTION, detection())
    finally:
        spool.close()


def test_reopening_a_good_spool_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    filled_spool(path, n=50)
    spool = Spool.open(config(path))
    try:
        assert spool.recovered_from is None
        assert spool.stats().items == 50
        assert spool.check_counts() == {}
    finally:
        spool.close()
