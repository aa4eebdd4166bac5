"""The ledger: ids, per-lane counts, per-kind ``seq`` high-water marks, counters.

Plain functions over a connection; the caller holds the Spool's lock and, for
the writing ones, an open write transaction. The rows live in ``lane_stats``,
``seqs`` and ``counters`` (see ``_schema``); the rules they follow are in the
package docstring (``lpr_agent/spool/__init__.py``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from lpr_agent.spool.records import SEQ_LANES

DEAD_LANE = -1  # lane_stats row of the dead letters
WM_LANE = -2  # lane_stats row whose ``items`` is the fold watermark
IDS_LANE = -3  # lane_stats row whose ``items`` is the first id not reserved yet
ID_BLOCK = 1000

BUMP_LANE = (
    "UPDATE lane_stats SET items = items + ?, bytes = bytes + ?, waiting = waiting + ? "
    "WHERE lane = ?"
)
# The puts since the last fold: not in lane_stats yet.
TAIL = (
    "SELECT lane, count(*), coalesce(sum(size), 0), coalesce(sum(wait_until IS NOT NULL), 0), "
    "max(id) FROM items WHERE id > ? GROUP BY lane"
)
_TAIL_SEQ = (
    "SELECT lane, max(json_extract(payload, '$.seq')) FROM items WHERE id > ? GROUP BY lane"
)
_BUMP_COUNTER = (
    "INSERT INTO counters(name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)


def ids_json(ids: Iterable[int]) -> str:
    return json.dumps([int(i) for i in ids])


class Deltas:
    """Changes to ``lane_stats``, summed per lane and written once per statement.

    Rows above the fold watermark are not in ``lane_stats`` yet, so changes to
    them are left out (the fold counts them as they are then).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.wm: int = watermark(conn)
        self.lanes: dict[int, list[int]] = {}

    def add(
        self, lane: int, items: int, nbytes: int, waiting: int = 0, item_id: int | None = None
    ) -> None:
        if item_id is not None and item_id > self.wm:
            return
        d = self.lanes.setdefault(lane, [0, 0, 0])
        d[0] += items
        d[1] += nbytes
        d[2] += waiting

    def fold_if_above(self, conn: sqlite3.Connection, ids: Iterable[int]) -> None:
        """Fold first if any of ``ids`` is above the watermark: rows leave the
        table only at or below it (that is what keeps ``seqs`` exact)."""
        if max(ids, default=0) > self.wm:
            self.wm = fold(conn)

    def write(self, conn: sqlite3.Connection) -> None:
        for lane, (items, nbytes, waiting) in self.lanes.items():
            if items or nbytes or waiting:
                conn.execute(BUMP_LANE, (items, nbytes, waiting, lane))
        self.lanes.clear()


def watermark(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT items FROM lane_stats WHERE lane = ?", (WM_LANE,)).fetchone()
    return int(row[0])


def lane_rows(conn: sqlite3.Connection) -> tuple[list[Any], int]:
    """(lane, items, bytes, waiting) rows of lane_stats, and the fold watermark."""
    rows = conn.execute("SELECT lane, items, bytes, waiting FROM lane_stats").fetchall()
    wm = next(r[1] for r in rows if r[0] == WM_LANE)
    return [r for r in rows if r[0] >= DEAD_LANE], wm


def fold(conn: sqlite3.Connection) -> int:
    """Count the puts since the last fold into ``lane_stats`` and their highest
    ``seq`` into ``seqs``; returns the new watermark. Caller is in a write txn."""
    _, wm = lane_rows(conn)
    new_wm = wm
    for lane, n, b, w, top in conn.execute(TAIL, (wm,)).fetchall():
        conn.execute(BUMP_LANE, (n, b, w, lane))
        new_wm = max(new_wm, top)
    if new_wm != wm:
        for lane, seq in conn.execute(_TAIL_SEQ, (wm,)).fetchall():
            if seq is not None:
                conn.execute("UPDATE seqs SET last = max(last, ?) WHERE lane = ?", (seq, lane))
        conn.execute("UPDATE lane_stats SET items = ? WHERE lane = ?", (new_wm, WM_LANE))
    return new_wm


def next_seqs(conn: sqlite3.Connection) -> dict[int, int]:
    """The next ``seq`` of each reading lane: one above the highest ever put.

    ``seqs`` covers every row at or below the watermark (the fold writes it, and
    rows leave the table only at or below the watermark); the rows above it
    are all still there, so their maximum covers the rest.
    """
    last = dict(conn.execute("SELECT lane, last FROM seqs").fetchall())
    for lane, seq in conn.execute(_TAIL_SEQ, (watermark(conn),)).fetchall():
        if seq is not None and lane in last:
            last[lane] = max(last[lane], int(seq))
    return {lane: int(last.get(lane, 0)) + 1 for lane in SEQ_LANES}


def totals(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(items, bytes, health items), exact."""
    lanes, wm = lane_rows(conn)
    tail = conn.execute(TAIL, (wm,)).fetchall()
    items = nbytes = health = 0
    for lane, n, b, _w in [*lanes, *(t[:4] for t in tail)]:
        if lane < 0:
            continue
        items += n
        nbytes += b
        if lane == 0:
            health += n
    return items, nbytes, health


def recount(conn: sqlite3.Connection) -> dict[int, tuple[tuple[int, ...], tuple[int, int, int]]]:
    """Recount ``lane_stats`` the slow way; returns the lanes that disagree."""
    lanes, wm = lane_rows(conn)
    kept = {r[0]: list(r[1:]) for r in lanes}
    for lane, n, b, w, _ in conn.execute(TAIL, (wm,)).fetchall():
        kept[lane] = [kept[lane][0] + n, kept[lane][1] + b, kept[lane][2] + w]
    real = {lane: (0, 0, 0) for lane in kept}
    for lane, n, b, w in conn.execute(
        "SELECT lane, count(*), coalesce(sum(size), 0), "
        "coalesce(sum(wait_until IS NOT NULL), 0) FROM items GROUP BY lane"
    ):
        real[lane] = (n, b, w)
    n, b = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM dead").fetchone()
    real[DEAD_LANE] = (n, b, 0)
    return {
        lane: (tuple(kept[lane]), real[lane])
        for lane in kept
        if tuple(kept[lane]) != real[lane]
    }


def reserve_ids(conn: sqlite3.Connection, n: int, block: int = ID_BLOCK) -> tuple[int, int]:
    """Reserve a block of at least ``n`` ids: returns [first, limit). Caller is in a
    write txn. Above every id ever reserved, folded, queued or dead."""
    floor = conn.execute(
        "SELECT max((SELECT items FROM lane_stats WHERE lane = ?), "
        "(SELECT items FROM lane_stats WHERE lane = ?) + 1, "
        "coalesce((SELECT max(id) FROM items), 0) + 1, "
        "coalesce((SELECT max(id) FROM dead), 0) + 1)",
        (IDS_LANE, WM_LANE),
    ).fetchone()[0]
    limit = floor + max(block, n)
    conn.execute("UPDATE lane_stats SET items = ? WHERE lane = ?", (limit, IDS_LANE))
    return int(floor), int(limit)


def bump(conn: sqlite3.Connection, name: str, delta: int) -> None:
    if delta:
        conn.execute(_BUMP_COUNTER, (name, delta))


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
