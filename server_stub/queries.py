"""Read queries of the stub's storage: record pages, images, cameras, counts.

A mixin over ``self.conn`` (the storage's one SQLite connection); the write
side is ``storage.py``, the schema and its indexes ``schema.py``.

Record lists are pages: at most ``limit`` rows, found through an index for
every filter, in one of three orders:

* with ``camera_id``: the camera's creation order (its ``seq``, then arrival
  for messages without one, which sort first);
* else with ``since``/``until``: event time (``at``, then arrival);
* otherwise: arrival order (``arrival_seq``).

A cursor is a record's ``arrival_seq`` (0: the start): ``after`` pages
forward (oldest first from there), ``before`` backwards; with neither, the
newest ``limit`` (oldest first, as the deployed servers answer).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from lpr_agent.protocol import Kind
from server_stub.codec import IMAGE_SLOTS

TABLES = {Kind.DETECTION: "records", Kind.HEALTH: "health"}
_RECORD_COLUMNS = (
    "arrival_seq, seq, detection_id, event_id, camera_id, checkpoint_id, timestamp, "
    "received_at, channel, vehicles_count, plates_count, ocr_results, payload, "
    "has_annotated, crops"
)
_HEALTH_COLUMNS = "arrival_seq, seq, health_id, event_id, received_at, channel, payload"


class UnknownCursor(ValueError):
    """A camera-order cursor names a record that is not stored (any more)."""


@dataclass(frozen=True)
class RecordQuery:
    limit: int = 100
    camera_id: str | None = None
    checkpoint_id: str | None = None
    plate: str | None = None  # normalised plate prefix (codec.normalise_plate)
    since: str | None = None  # event time, UTC ISO 8601 (codec.utc_of), inclusive
    until: str | None = None  # exclusive
    after: int | None = None  # cursor: arrival_seq
    before: int | None = None
    images: bool = False


@dataclass
class Page:
    records: list[dict[str, Any]]
    total: int
    has_more: bool  # more records lie beyond this page, in the direction paged
    next_cursor: int | None  # give as ``after`` for the records after this page
    prev_cursor: int | None  # give as ``before`` for the records before it
    order: str = field(default="arrival")  # "camera", "time" or "arrival" (ORDERS)


class StorageReads:
    conn: sqlite3.Connection

    # --- record pages -------------------------------------------------------------------

    def page_sql(self, kind: Kind, q: RecordQuery) -> tuple[str, list[Any], bool]:
        """(SELECT, parameters, ascending) of one page; public for EXPLAIN tests."""
        table = TABLES[kind]
        where, params = self._filters(table, q)
        key = ORDERS[_order(q)]
        cursor, ascending = (q.after, True) if q.after is not None else (q.before, False)
        if cursor is not None:
            values = self._cursor_values(table, key, cursor)
            op = ">" if ascending else "<"
            where.append(f"({', '.join(key)}) {op} ({', '.join('?' * len(key))})")
            params += values
        direction = "ASC" if ascending else "DESC"
        columns = _RECORD_COLUMNS if kind == Kind.DETECTION else _HEALTH_COLUMNS
        sql = (
            f"SELECT {columns} FROM {table}{_where(where)} "
            f"ORDER BY {', '.join(f'{k} {direction}' for k in key)} LIMIT ?"
        )
        return sql, [*params, q.limit + 1], ascending

    def count_sql(self, kind: Kind, q: RecordQuery) -> tuple[str, list[Any]]:
        table = TABLES[kind]
        where, params = self._filters(table, q)
        return f"SELECT COUNT(*) FROM {table}{_where(where)}", params

    def page(self, kind: Kind, q: RecordQuery) -> Page:
        sql, params, ascending = self.page_sql(kind, q)
        rows = self.conn.execute(sql, params).fetchall()
        has_more = len(rows) > q.limit
        rows = rows[: q.limit]
        if not ascending:
            rows.reverse()
        build = self._record if kind == Kind.DETECTION else self._health_record
        records = [build(row, q.images) for row in rows]
        count_sql, count_params = self.count_sql(kind, q)
        total = self.conn.execute(count_sql, count_params).fetchone()[0]
        first = rows[0][0] if rows else None
        last = rows[-1][0] if rows else None
        return Page(
            records=records,
            total=total,
            has_more=has_more,
            # An empty forward page keeps the cursor, so a poller asks again.
            next_cursor=last if last is not None else q.after,
            prev_cursor=first if first is not None else q.before,
            order=_order(q),
        )

    @staticmethod
    def _filters(table: str, q: RecordQuery) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column in ("camera_id", "checkpoint_id"):
            value = getattr(q, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if q.plate and table == "records":
            # A prefix as an index range: "AB" -> ["AB", "AC").
            upper = q.plate[:-1] + chr(ord(q.plate[-1]) + 1)
            where.append(
                "arrival_seq IN (SELECT arrival_seq FROM plates WHERE plate >= ? AND plate < ?)"
            )
            params += [q.plate, upper]
        if q.since is not None:
            where.append("at >= ?")
            params.append(q.since)
        if q.until is not None:
            where.append("at < ?")
            params.append(q.until)
        return where, params

    def _cursor_values(self, table: str, key: tuple[str, ...], cursor: int) -> list[Any]:
        if key == ("arrival_seq",):
            return [cursor]  # no look-up: any number is a position in arrival order
        if cursor == 0:
            # The start: before every record (seq >= 0; any time > "").
            return [-1 if key[0] == "seq" else "", 0]
        row = self.conn.execute(
            f"SELECT {key[0]} FROM {table} WHERE arrival_seq = ?", (cursor,)
        ).fetchone()
        if row is None or row[0] is None:
            raise UnknownCursor(f"cursor {cursor} names no record of this listing")
        return [row[0], cursor]

    def _record(self, row: tuple[Any, ...], images: bool) -> dict[str, Any]:
        (arrival, seq, detection_id, event_id, cam, chk, ts, received_at, channel, vc, pc,
         ocr, payload, has_annotated, crops) = row  # fmt: skip
        record: dict[str, Any] = json.loads(payload)
        record.update(
            {
                "arrival_seq": arrival,
                # the camera's seq; a value the stub could not use (legacy) as sent
                "seq": seq or record.get("seq"),
                "detection_id": detection_id,
                # a legacy repeat has no event_id in the (unique) column
                "event_id": event_id or _str_or_none(record.get("event_id")),
                "camera_id": cam,
                "checkpoint_id": chk,
                "timestamp": ts,
                "received_at": received_at,
                "channel": channel,
                "vehicles_count": vc,
                "plates_count": pc,
                "ocr_results": json.loads(ocr),
                "cropped_plates_count": crops,
                "annotated_image_url": (
                    f"/api/records/{detection_id}/image/annotated" if has_annotated else None
                ),
                "cropped_plate_urls": [
                    f"/api/records/{detection_id}/crops/{n}" for n in range(crops)
                ],
            }
        )
        if images:
            self._inline_images(record)
        return record

    @staticmethod
    def _health_record(row: tuple[Any, ...], images: bool) -> dict[str, Any]:
        arrival, seq, health_id, event_id, received_at, channel, payload = row
        record: dict[str, Any] = json.loads(payload)
        record.update(
            {
                "arrival_seq": arrival,
                "seq": seq or record.get("seq"),
                "health_id": health_id,
                "event_id": event_id or _str_or_none(record.get("event_id")),
                "received_at": received_at,
                "channel": channel,
            }
        )
        return record

    def _inline_images(self, record: dict[str, Any]) -> None:
        base = record["arrival_seq"] * IMAGE_SLOTS
        rows = self.conn.execute(
            "SELECT id, data FROM images WHERE id >= ? AND id < ? ORDER BY id",
            (base, base + IMAGE_SLOTS),
        ).fetchall()
        record["cropped_plates"] = []
        for image_id, data in rows:
            encoded = base64.b64encode(data).decode("ascii")
            if image_id == base:
                record["annotated_image"] = encoded
            else:
                record["cropped_plates"].append(encoded)

    def image(self, detection_id: str, kind: str, idx: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT arrival_seq, has_annotated, crops FROM records WHERE detection_id = ?",
            (detection_id,),
        ).fetchone()
        if row is None:
            return None
        arrival, has_annotated, crops = row
        if kind == "annotated":
            slot = 0 if has_annotated else None
        else:
            slot = idx + 1 if 0 <= idx < crops else None
        if slot is None:
            return None
        found = self.conn.execute(
            "SELECT data FROM images WHERE id = ?", (arrival * IMAGE_SLOTS + slot,)
        ).fetchone()
        return found[0] if found else None

    # --- cameras and counts ---------------------------------------------------------------

    def camera(self, camera_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            f"SELECT {', '.join(_CAMERA_COLUMNS)} FROM cameras WHERE camera_id = ?", (camera_id,)
        ).fetchone()
        return _camera_row(row) if row is not None else None

    def cameras(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            f"SELECT {', '.join(_CAMERA_COLUMNS)} FROM cameras ORDER BY camera_id"
        ).fetchall()
        return [_camera_row(row) for row in rows]

    def timestamps(self) -> list[str]:
        """Every stored message timestamp (the legacy statistics parse them all)."""
        rows = self.conn.execute(
            "SELECT timestamp FROM records UNION ALL SELECT timestamp FROM health"
        ).fetchall()
        return [r[0] for r in rows]

    def counts(self, since: str) -> dict[str, Any]:
        q = self.conn.execute
        return {
            "total_detections": q("SELECT COUNT(*) FROM records").fetchone()[0],
            "today_detections": q(
                "SELECT COUNT(*) FROM records WHERE received_at >= ?", (since,)
            ).fetchone()[0],
            "total_health_checks": q("SELECT COUNT(*) FROM health").fetchone()[0],
            "today_health_checks": q(
                "SELECT COUNT(*) FROM health WHERE received_at >= ?", (since,)
            ).fetchone()[0],
            "unique_cameras": q("SELECT COUNT(*) FROM cameras").fetchone()[0],
            "last_detection_at": q("SELECT MAX(received_at) FROM records").fetchone()[0],
        }


_CAMERA_COLUMNS = (
    "camera_id", "checkpoint_id", "registered_at", "registered_via", "last_seen",
    "detection_count", "health_status", "health_component", "health_message",
    "detection_last_seq", "detection_seqs", "health_last_seq", "health_seqs",
)  # fmt: skip


def _camera_row(row: tuple[Any, ...]) -> dict[str, Any]:
    camera = dict(zip(_CAMERA_COLUMNS, row, strict=True))
    for kind in ("detection", "health"):
        last, seen = camera.pop(f"{kind}_last_seq"), camera.pop(f"{kind}_seqs")
        # Readings the camera made (it numbers them 1, 2, ...) that are
        # not here: dropped on the way, or still in its spool.
        camera[f"{kind}_last_seq"] = last or None
        camera[f"{kind}_missing_seq"] = max(last - seen, 0)
    return camera


ORDERS = {
    "camera": ("seq", "arrival_seq"),
    "time": ("at", "arrival_seq"),
    "arrival": ("arrival_seq",),
}


def _order(q: RecordQuery) -> str:
    if q.camera_id is not None:
        return "camera"
    if q.since is not None or q.until is not None:
        return "time"
    return "arrival"


def _where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
