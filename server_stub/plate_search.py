"""Plate search for the dashboard: prefix, exact and substring.

Prefix and exact searches use the stub's own ``plates`` table (one row per
normalised plate text of a record, kept by the storage in the same
transaction as the record, primary key ``(plate, arrival_seq)``): an index
range or look-up, always current.

Substring searches use ``dash_plate_fts``, an FTS5 table with the
``trigram`` tokenizer: one row per plate text of a record (rowid =
arrival_seq * 64 + position), the text normalised the same way
(``codec.normalise_plate``: upper case, letters and digits only, so
``ka-01 ab`` finds ``KA01AB1234``). FTS5 answers ``LIKE '%ABC%'`` from the
trigram index for three characters or more; shorter ones scan the (small)
plate table, newest first, stopping at the page size.

The trigram index is filled *in batches, when a search needs it*, not on
every write: a trigger doing it cost ~40 us per stored detection (measured
16 -> 57 us per insert), more than the rest of the write, while the stub's
job is mostly to take messages fast. ``dash_state.plate_mark`` is the last
record indexed. Records are only ever deleted all together (``DELETE
/api/records``); delete triggers bump ``dash_state.deletions`` so the index
is rebuilt then. Once someone has searched, a background task keeps it
current.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from server_stub.codec import normalise_plate, plate_keys
from server_stub.service import BadRequest

log = logging.getLogger(__name__)

SLOTS = 64  # rowids per record in dash_plate_fts (codec indexes at most 16 plates)
CHUNK = 1_000  # records indexed per transaction (~10 ms of the event loop)
WARM_INTERVAL_S = 2.0
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_PLATE = 32
MODES = ("substring", "prefix", "exact")


@dataclass(frozen=True)
class SearchQuery:
    plate: str | None  # normalised
    mode: str
    camera_id: str | None
    window: tuple[str, str] | None  # event time, as stored (UTC ISO 8601, ms)
    limit: int
    before: int | None  # cursor: only records older (by arrival) than this

    @classmethod
    def build(
        cls,
        plate: str | None,
        mode: str,
        camera_id: str | None,
        window: tuple[str, str] | None,
        limit: int,
        before: int | None,
    ) -> SearchQuery:
        """Checks the user's input; BadRequest (400) says what is wrong."""
        if plate:
            plate = normalise_plate(plate)
            if not plate:
                raise BadRequest("plate must contain letters or digits")
            if len(plate) > MAX_PLATE:
                raise BadRequest(f"plate longer than {MAX_PLATE} characters")
        if mode not in MODES:
            raise BadRequest(f"match must be one of {', '.join(MODES)}, got {mode!r}")
        return cls(plate or None, mode, camera_id or None, window, limit, before)


class PlateIndex:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()
        self._warm: asyncio.Task[None] | None = None

    def prepare(self) -> None:
        c = self.conn
        c.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS dash_plate_fts "
            "USING fts5(plate, tokenize='trigram', detail='none')"
        )
        c.execute("CREATE TABLE IF NOT EXISTS dash_state (name TEXT PRIMARY KEY, value INTEGER)")
        for name in ("plate_mark", "deletions", "plate_deletions"):
            c.execute("INSERT OR IGNORE INTO dash_state VALUES (?, 0)", (name,))
        # Deleting is rare (test mode's DELETE /api/records), so a per-row
        # trigger costs nothing in normal running. metrics.py reads it too.
        for table in ("records", "health"):
            c.execute(
                f"CREATE TRIGGER IF NOT EXISTS dash_{table}_deleted AFTER DELETE ON {table} "
                "BEGIN UPDATE dash_state SET value = value + 1 WHERE name = 'deletions'; END"
            )

    # --- indexing -----------------------------------------------------------------------

    def _state(self, name: str) -> int:
        row = self.conn.execute("SELECT value FROM dash_state WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def index_chunk(self, limit: int = CHUNK) -> int:
        """Index up to ``limit`` more records in one transaction; how many it did."""
        c = self.conn
        if c.in_transaction:  # never inside the group committer's transaction
            return 0
        # IMMEDIATE: should several stub processes share the file, one indexes
        # at a time and the next one reads the mark it left.
        c.execute("BEGIN IMMEDIATE")
        try:
            deletions = self._state("deletions")
            if deletions != self._state("plate_deletions"):
                c.execute("DELETE FROM dash_plate_fts")
                c.execute("UPDATE dash_state SET value = 0 WHERE name = 'plate_mark'")
                c.execute(
                    "UPDATE dash_state SET value = ? WHERE name = 'plate_deletions'", (deletions,)
                )
            mark = self._state("plate_mark")
            rows = c.execute(
                "SELECT rowid, ocr_results FROM records WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (mark, limit),
            ).fetchall()
            entries = [
                (rowid * SLOTS + k, text)
                for rowid, ocr in rows
                for k, text in enumerate(plate_keys(_json(ocr)))
            ]
            c.executemany("INSERT INTO dash_plate_fts(rowid, plate) VALUES (?, ?)", entries)
            if rows:
                c.execute(
                    "UPDATE dash_state SET value = ? WHERE name = 'plate_mark'", (rows[-1][0],)
                )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return len(rows)

    async def catch_up(self) -> None:
        """Index every record stored so far, yielding to the loop between chunks."""
        async with self._lock:
            while self.index_chunk() == CHUNK:
                await asyncio.sleep(0)

    async def _keep_warm(self) -> None:
        while True:
            await asyncio.sleep(WARM_INTERVAL_S)
            try:
                await self.catch_up()
            except sqlite3.Error:
                log.exception("indexing plates for search failed; retrying")

    async def stop(self) -> None:
        if self._warm is not None:
            self._warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm

    # --- search ---------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first (by arrival); and the cursor of the next page, if any."""
        sql, params = self.sql(query)
        if query.plate is None:
            rows = self.conn.execute(sql, params).fetchall()
            return _page(rows, query.limit)
        if query.mode == "substring":
            if self._warm is None:
                self._warm = asyncio.get_running_loop().create_task(self._keep_warm())
            await self.catch_up()
        # A record with two matching plates comes twice: keep the first. No
        # LIMIT: SQLite yields rows as the loop asks, so breaking stops it.
        seen: set[int] = set()
        unique = []
        for row in self.conn.execute(sql, params):
            if row[0] not in seen:
                seen.add(row[0])
                unique.append(row)
                if len(unique) > query.limit:
                    break
        return _page(unique, query.limit)

    def sql(self, query: SearchQuery) -> tuple[str, list[Any]]:
        """The statement a search runs (``explain`` shows its plan). Rows come
        newest first; a record whose several plates match comes once per plate."""
        where: list[str] = []
        params: list[Any] = []
        if query.camera_id is not None:
            where.append("r.camera_id = ?")
            params.append(query.camera_id)
        if query.window is not None:
            # The event time (`at`, or the arrival when `at` is unknown), in a
            # form the stub's index on `at` can serve.
            where.append(
                "((r.at >= ? AND r.at < ?) OR "
                "(r.at IS NULL AND r.received_at >= ? AND r.received_at < ?))"
            )
            params += [*query.window, *query.window]
        if query.plate is None:
            if query.before is not None:
                where.append("r.rowid < ?")
                params.append(query.before)
            sql = f"SELECT {_COLUMNS} FROM records r{_where(where)} ORDER BY r.rowid DESC LIMIT ?"
            return sql, [*params, query.limit + 1]
        if query.mode == "substring":
            source = f"dash_plate_fts f JOIN records r ON r.rowid = f.rowid / {SLOTS}"
            match, match_params, key = "f.plate LIKE ?", [f"%{query.plate}%"], "f.rowid"
            before = None if query.before is None else query.before * SLOTS
        else:
            source = "plates p JOIN records r ON r.rowid = p.arrival_seq"
            key, before = "p.arrival_seq", query.before
            if query.mode == "exact":
                match, match_params = "p.plate = ?", [query.plate]
            else:  # a prefix as an index range: "AB" -> ["AB", "AC")
                upper = query.plate[:-1] + chr(ord(query.plate[-1]) + 1)
                match, match_params = "p.plate >= ? AND p.plate < ?", [query.plate, upper]
        where.insert(0, match)
        params[0:0] = match_params
        if before is not None:
            where.append(f"{key} < ?")
            params.append(before)
        return f"SELECT {_COLUMNS} FROM {source}{_where(where)} ORDER BY {key} DESC", params

    def explain(self, query: SearchQuery) -> list[str]:
        """EXPLAIN QUERY PLAN of ``query`` (tests assert it is index-served)."""
        sql, params = self.sql(query)
        return [row[3] for row in self.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


_COLUMNS = (
    "r.rowid, r.detection_id, r.camera_id, r.checkpoint_id, r.timestamp, r.received_at, "
    "r.channel, r.vehicles_count, r.plates_count, r.ocr_results, r.has_annotated, r.crops"
)


def _where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def _ceil(x: float) -> int:
    return int(-(-x // 1))


def _json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _page(rows: list[Any], limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """``rows``: up to ``limit + 1``; the extra one only says there is more."""
    records = [_record(row) for row in rows[:limit]]
    # The cursor: this page's oldest arrival, when something older matched.
    next_before = rows[limit - 1][0] if len(rows) > limit else None
    return records, next_before


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    (rowid, detection_id, cam, chk, ts, received_at, channel, vc, pc, ocr, annotated, crops) = row
    try:
        ocr_results = json.loads(ocr)
    except (TypeError, ValueError):
        ocr_results = []
    return {
        "arrival_seq": rowid,
        "detection_id": detection_id,
        "camera_id": cam,
        "checkpoint_id": chk,
        "timestamp": ts,
        "received_at": received_at,
        "channel": channel,
        "vehicles_count": vc,
        "plates_count": pc,
        "ocr_results": ocr_results,
        "cropped_plates_count": crops,
        "annotated_image_url": (
            f"/api/records/{detection_id}/image/annotated" if annotated else None
        ),
        "cropped_plate_urls": [f"/api/records/{detection_id}/crops/{n}" for n in range(crops)],
    }
