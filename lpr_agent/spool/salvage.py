"""Copy what is readable out of a corrupt spool file into the fresh one.

A corrupt file (failed ``quick_check``) usually has a few bad pages and many
good ones. Moving it aside whole would abandon every reading in it, so before
starting afresh the spool copies every row it can still read: resending them
is harmless, because the server keeps each ``event_id`` once.

How: rows are read by id ranges; a range whose read fails is split in two
until single ids, so a bad page costs only the rows on it (and a bounded
number of probes). The ``items_ready``/``items_waiting`` indexes live on other
pages than the rows; when they are readable they list every queued id, which
makes the count of lost rows exact; otherwise it is estimated from the
ledger's counts (a lower bound). The old ledger (id and ``seq`` high-water
marks, counters) is carried over where readable, so ids are never reused and
``seq`` continues.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from lpr_agent.spool import ledger

log = logging.getLogger(__name__)

ITEM_COLS = ("id, lane, event_id, created_at, payload, size, component, has_images, "
             "attempts, last_error")
DEAD_COLS = ITEM_COLS + ", reason, dead_at"
_MAX_PROBES = 50_000  # bounds the time spent on a badly damaged file (~1 s)


class _Reader:
    def __init__(self, src: sqlite3.Connection) -> None:
        self.src = src
        self.probes = 0
        self.gave_up = 0  # id ranges abandoned (unreadable)

    def try_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any] | None:
        try:
            return self.src.execute(sql, params).fetchall()
        except sqlite3.DatabaseError:
            return None

    def rows_by_range(self, table: str, cols: str, lo: int, hi: int) -> list[Any]:
        """Every readable row with lo <= id < hi, splitting ranges that fail."""
        out: list[Any] = []
        stack = [(lo, hi)]
        while stack:
            a, b = stack.pop()
            self.probes += 1
            rows = self.try_rows(f"SELECT {cols} FROM {table} WHERE id >= ? AND id < ?", (a, b))
            if rows is not None:
                out.extend(rows)
            elif b - a > 1 and self.probes < _MAX_PROBES:
                mid = (a + b) // 2
                stack += [(mid, b), (a, mid)]
            else:
                self.gave_up += 1
        return out


def _open_source(aside: Path) -> sqlite3.Connection:
    # Read-only where possible, to leave the evidence as it was; a WAL without
    # its index may need a writable open, which SQLite then rebuilds.
    try:
        src = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return src
    except sqlite3.DatabaseError:
        return sqlite3.connect(aside)


def salvage_into(aside: Path, conn: sqlite3.Connection) -> tuple[int, int]:
    """Copy the readable items and dead letters of ``aside`` into ``conn`` (a fresh,
    empty spool; the caller holds a write transaction). Returns (recovered, lost)."""
    sides = [aside.with_name(aside.name + s) for s in ("-wal", "-shm")]
    made = [p for p in sides if not p.exists()]
    try:
        src = _open_source(aside)
    except sqlite3.Error as exc:
        log.error("spool salvage: cannot open %s at all: %s", aside, exc)
        return 0, 0
    try:
        return _salvage(_Reader(src), conn)
    finally:
        src.close()
        for p in made:  # reading made an empty WAL and its index: not evidence
            p.unlink(missing_ok=True)


def _salvage(r: _Reader, conn: sqlite3.Connection) -> tuple[int, int]:
    tables = r.try_rows("SELECT name FROM sqlite_master WHERE type = 'table'")
    if tables is None or not {("items",), ("dead",)} <= set(tables):
        return 0, 0  # not one of ours (or the schema is gone): nothing to copy
    lanes = dict((row[0], row[1:]) for row in r.try_rows(
        "SELECT lane, items, bytes FROM lane_stats") or [])
    next_id = lanes.get(ledger.IDS_LANE, (0,))[0]
    known = set()
    indexes_ok = True
    for sql in ("SELECT id FROM items INDEXED BY items_ready WHERE wait_until IS NULL",
                "SELECT id FROM items INDEXED BY items_waiting WHERE wait_until IS NOT NULL"):
        rows = r.try_rows(sql)
        if rows is None:
            indexes_ok = False
        else:
            known.update(x[0] for x in rows)
    top = max([next_id, max(known, default=0) + 1,
               *((x[0] or 0) + 1 for t in ("items", "dead")
                 for x in (r.try_rows(f"SELECT max(id) FROM {t}") or []))])
    hi = top if top > 1 else 2**40
    items = r.rows_by_range("items", ITEM_COLS, 1, hi)
    dead = r.rows_by_range("dead", DEAD_COLS, 1, hi)
    got = {row[0] for row in items}
    if indexes_ok:
        lost_items = len(known - got)
    else:  # folded counts of the queue lanes (a lower bound: the tail is unknown)
        folded = sum(v[0] for lane, v in lanes.items() if lane >= 0)
        lost_items = max(0, folded - len(got))
    lost_dead = max(0, lanes.get(ledger.DEAD_LANE, (0,))[0] - len(dead))
    conn.executemany(f"INSERT INTO items ({ITEM_COLS}) VALUES ({','.join('?' * 10)})", items)
    conn.executemany(f"INSERT INTO dead ({DEAD_COLS}) VALUES ({','.join('?' * 12)})", dead)
    _carry_ledger(r, conn, top, dead)
    if r.gave_up:
        log.error("spool salvage: %d id range(s) unreadable after %d probes", r.gave_up,
                  r.probes)
    return len(items) + len(dead), lost_items + lost_dead


def _carry_ledger(r: _Reader, conn: sqlite3.Connection, top: int, dead: list[Any]) -> None:
    """Counts, the id floor, seq high-water marks and counters of the old file."""
    ledger.fold(conn)  # counts the copied items into lane_stats, seqs from their payloads
    n_dead = len(dead)
    conn.execute("UPDATE lane_stats SET items = ?, bytes = ? WHERE lane = ?",
                 (n_dead, sum(row[5] for row in dead), ledger.DEAD_LANE))
    conn.execute("UPDATE lane_stats SET items = max(items, ?) WHERE lane = ?",
                 (top, ledger.IDS_LANE))
    for lane, last in r.try_rows("SELECT lane, last FROM seqs") or []:
        conn.execute("UPDATE seqs SET last = max(last, ?) WHERE lane = ?", (last, lane))
    conn.execute(
        "UPDATE seqs SET last = max(last, coalesce((SELECT max(json_extract(payload, '$.seq')) "
        "FROM dead WHERE dead.lane = seqs.lane), 0))"
    )
    for name, value in r.try_rows("SELECT name, value FROM counters") or []:
        ledger.bump(conn, name, value)
    for row in r.try_rows("SELECT at, reason, n FROM drop_events") or []:
        conn.execute("INSERT INTO drop_events(at, reason, n) VALUES (?, ?, ?)", row)
    for row in r.try_rows("SELECT at, moved_to, recovered, lost, error, acknowledged "
                          "FROM salvages") or []:
        conn.execute("INSERT INTO salvages(at, moved_to, recovered, lost, error, acknowledged) "
                     "VALUES (?, ?, ?, ?, ?, ?)", row)
