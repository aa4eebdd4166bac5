"""Reading the spool: lease (the uplink's hot path), get/list (the CLI), stats."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection
from typing import Any

from lpr_agent.protocol import Kind
from lpr_agent.spool import ledger
from lpr_agent.spool.core import SpoolCore
from lpr_agent.spool.ledger import DEAD_LANE, TAIL, Deltas, ids_json
from lpr_agent.spool.records import (
    DROP_REASONS,
    KIND_OF_LANE,
    LANES,
    SalvageRecord,
    SpoolItem,
    SpoolStats,
    make_item,
)

ITEM_COLUMNS = "id, lane, event_id, created_at, payload, attempts, last_error, wait_until, size"
_READY_ROWS = {
    "ASC": f"SELECT {ITEM_COLUMNS} FROM items WHERE lane = ? AND wait_until IS NULL "
    "ORDER BY id LIMIT ?",
    "DESC": f"SELECT {ITEM_COLUMNS} FROM items WHERE lane = ? AND wait_until IS NULL "
    "ORDER BY id DESC LIMIT ?",
}
_READY_IDS = {
    "ASC": "SELECT id FROM items WHERE lane = ? AND wait_until IS NULL ORDER BY id LIMIT ?",
    "DESC": "SELECT id FROM items WHERE lane = ? AND wait_until IS NULL ORDER BY id DESC LIMIT ?",
}
_ROWS_BY_ID = f"SELECT {ITEM_COLUMNS} FROM items WHERE id IN (SELECT value FROM json_each(?))"


class ReaderMixin(SpoolCore):
    def lease(
        self,
        limit: int = 100,
        kinds: Collection[Kind | str] | None = None,
        lease_seconds: float = 30.0,
    ) -> list[SpoolItem]:
        """Take up to ``limit`` ready items, not leased already, for ``lease_seconds``.

        Order: health newest-first, then registrations, then detections, each
        of the last two FIFO by creation. An item neither acked, nacked,
        dead-lettered nor released before its lease expires becomes ready again.
        The items carry the stored JSON text (``payload_json``); ``payload``
        decodes it on first use.
        """
        if limit <= 0:
            return []
        lanes = (0, 1, 2) if kinds is None else sorted({LANES[Kind(k)] for k in kinds})
        now = self._clock()
        rows: list[Any] = []
        with self._lock:
            self._check_open()
            conn = self._conn
            if now >= self._next_due:
                self._promote_due(now)
            leases = self._leases
            leases.expire(now)
            for lane in lanes:
                need = limit - len(rows)
                if need <= 0:
                    break
                order = "DESC" if lane == 0 else "ASC"
                held = leases.held_in_lane(lane)
                if not held:
                    rows.extend(conn.execute(_READY_ROWS[order], (lane, need)).fetchall())
                    continue
                # Skip the items we hold: read ids from the (covering) ready
                # index first and fetch only the rows we take.
                held_ids = leases.held_ids()
                ids = [
                    r[0]
                    for r in conn.execute(_READY_IDS[order], (lane, need + held))
                    if r[0] not in held_ids
                ][:need]
                if ids:
                    got = {r[0]: r for r in conn.execute(_ROWS_BY_ID, (ids_json(ids),))}
                    rows.extend(got[i] for i in ids if i in got)
            if rows:
                leases.take(((r[0], r[1], r[8]) for r in rows), now + lease_seconds)
        return [
            make_item(r[0], r[2], KIND_OF_LANE[r[1]], r[3], r[4], r[5], r[6], None, True, r[8])
            for r in rows
        ]

    def _promote_due(self, now: float) -> None:
        """Backing-off items whose next attempt is due become ready."""
        with self._txn(durable=False) as conn:
            deltas = Deltas(conn)
            for item_id, lane in conn.execute(
                "UPDATE items SET wait_until = NULL WHERE wait_until <= ? RETURNING id, lane",
                (now,),
            ).fetchall():
                deltas.add(lane, 0, 0, -1, item_id)
            deltas.write(conn)
        self._next_due = self._min_wait_until()

    def _min_wait_until(self) -> float:
        row = self._conn.execute(
            "SELECT min(wait_until) FROM items WHERE wait_until IS NOT NULL"
        ).fetchone()
        return math.inf if row[0] is None else float(row[0])

    # --- the CLI's side -----------------------------------------------------------

    def _item(self, r: Any) -> SpoolItem:
        return make_item(r[0], r[2], KIND_OF_LANE[r[1]], r[3], r[4], r[5], r[6], r[7],
                         r[0] in self._leases, r[8])

    def get(self, item_id: int) -> SpoolItem | None:
        rows = self._read(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
        return self._item(rows[0]) if rows else None

    def list_items(
        self, limit: int = 100, offset: int = 0, kind: Kind | str | None = None
    ) -> list[SpoolItem]:
        """Items in id (creation) order, whatever their state."""
        where, params = ("", ()) if kind is None else (" WHERE lane = ?", (LANES[Kind(kind)],))
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items{where} ORDER BY id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [self._item(r) for r in rows]

    def check_counts(self) -> dict[int, tuple[tuple[int, ...], tuple[int, int, int]]]:
        """Recount ``lane_stats`` the slow way; returns the lanes that disagree."""
        with self._lock:
            self._check_open()
            return ledger.recount(self._conn)

    # --- stats --------------------------------------------------------------------

    def _stats_connection(self) -> sqlite3.Connection:
        """Caller holds ``_stats_lock``. A reader: WAL lets it read while a put commits."""
        if self._stats_conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA cache_size = -256")  # KiB: it reads a handful of pages
            conn.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout_s * 1000)}")
            self._stats_conn = conn
        return self._stats_conn

    def stats(self) -> SpoolStats:
        """A handful of single-row reads on a connection of their own: cheap enough
        to call every second, from the event loop, while another thread commits."""
        now = self._clock()
        window = self.config.drop_window_s
        with self._stats_lock:
            self._check_open()
            conn = self._stats_connection()
            conn.execute("BEGIN")  # one snapshot for all the reads below
            try:
                lanes, wm = ledger.lane_rows(conn)
                tail = conn.execute(TAIL, (wm,)).fetchall()
                counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
                oldest = conn.execute(
                    "SELECT created_at FROM items ORDER BY id LIMIT 1"
                ).fetchone()
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                recent = conn.execute(
                    "SELECT reason, sum(n) FROM drop_events WHERE at > ? GROUP BY reason",
                    (now - window,),
                ).fetchall()
                last_drop = conn.execute(
                    "SELECT reason, max(at) FROM drop_events GROUP BY reason"
                ).fetchall()
                salvages = conn.execute(
                    "SELECT at, moved_to, recovered, lost, error FROM salvages "
                    "WHERE acknowledged IS NULL ORDER BY id"
                ).fetchall()
                seqs = ledger.next_seqs(conn)
            finally:
                conn.execute("COMMIT")
        in_flight = self._leases.in_flight(now)
        depth = {kind.value: 0 for kind in Kind}
        items = nbytes = waiting = dead = dead_bytes = 0
        for lane, n, b, wa in [*lanes, *(t[:4] for t in tail)]:
            if lane == DEAD_LANE:
                dead, dead_bytes = n, b
                continue
            depth[KIND_OF_LANE[lane].value] += n
            items += n
            nbytes += b
            waiting += wa
        drops = {reason: counters.pop(f"drop:{reason}", 0) for reason in DROP_REASONS}
        if self._next_seq is not None:  # ours is ahead of the file only by uncommitted puts
            seqs = dict(self._next_seq)
        return SpoolStats(
            depth=depth,
            items=items,
            bytes=nbytes,
            oldest_age_s=None if oldest is None else max(0.0, now - oldest[0]),
            ready=max(0, items - waiting - in_flight),
            in_flight=in_flight,
            backing_off=waiting,
            dead_letters=dead,
            dead_bytes=dead_bytes,
            drops=drops,
            counters=counters,
            file_bytes=pages * page_size,
            free_disk_bytes=self.free_disk_bytes,
            drops_recent={reason: 0 for reason in DROP_REASONS} | dict(recent),
            drops_window_s=window,
            last_drop_at=dict(last_drop),
            next_seq={KIND_OF_LANE[lane].value: n for lane, n in seqs.items()},
            salvages=[SalvageRecord(*r) for r in salvages],
        )
