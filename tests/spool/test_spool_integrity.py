"""A corrupt spool is moved aside (kept), a fresh one is created, and it is reported."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from lpr_agent.spool import Kind, Spool, SpoolCorruptError

from .conftest import config, detection


def filled_spool(path: Path, n: int = 400) -> None:
    spool = Spool.open(config(path))
    spool.put_many([(Kind.DETECTION, detection(i, image_bytes=300)) for i in range(n)])
    spool.close()  # last connection: WAL checkpointed into the file and removed
    assert not path.with_name(path.name + "-wal").exists()


def test_garbage_file_is_moved_aside_and_a_fresh_spool_created(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    spool = Spool.open(config(path))
    try:
        assert spool.recovered_from is not None
        assert spool.recovered_from.read_bytes() == garbage  # kept for forensics
        assert spool.recovered_from.parent == tmp_path
        assert spool.stats().counters["corrupt_recoveries"] == 1
        item = spool.put(Kind.DETECTION, detection())
        assert [i.id for i in spool.lease()] == [item]
    finally:
        spool.close()


def test_damaged_pages_fail_quick_check_and_are_recovered(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    filled_spool(path)
    size = path.stat().st_size
    with path.open("r+b") as f:  # trash pages in the middle of the items b-tree
        f.seek(size // 3)
        f.write(b"\xff\x13" * (size // 6))
    spool = Spool.open(config(path))
    try:
        aside = spool.recovered_from
        assert aside is not None and aside.exists() and aside.stat().st_size == size
        assert spool.stats().items == 0
        assert spool.stats().counters["corrupt_recoveries"] == 1
        assert spool._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
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
