"""The dashboard's read API: charts over time, plate search, and ``/metrics``.

``app.py`` calls :func:`add_routes` once; everything here only *reads* the
stub's tables (``records``, ``health``), apart from the indexes and the plate
search index this module adds for itself.

Time axis: a reading's *event time* is the camera's own ``timestamp`` (when
the plate was seen, when the health sample was taken; the stub keeps it in
UTC as ``at``), so a backlog delivered after an outage lands where it
happened, not at the moment it arrived. A timestamp the stub cannot read
(legacy clients send anything) falls back to the arrival time
``received_at``; one without an offset counts as UTC.

Cost on the write path: one index on health messages (camera, event time);
none on detections (the stub's own index on ``at`` serves the chart); the
substring index is filled in batches when a search needs it
(``plate_search.py``).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server_stub.metrics import add_metrics_route
from server_stub.plate_search import DEFAULT_LIMIT as DEFAULT_SEARCH
from server_stub.plate_search import MAX_LIMIT as MAX_SEARCH
from server_stub.plate_search import PlateIndex, SearchQuery
from server_stub.service import BadRequest, StubService

log = logging.getLogger(__name__)

# A reading's time as text: the stub's ``at`` (the camera's timestamp in UTC,
# ISO 8601 with ms, so it sorts as text), or its arrival time when ``at`` is
# NULL (a timestamp the stub could not read). Both have the same format.
EVENT_TIME = "coalesce(at, received_at)"
# Detections per bucket and camera, through the stub's index on `at` (a
# second branch picks up the few records whose timestamp was unreadable): one
# pass over the window for every camera, which is what the dashboard asks.
# No index of our own on records: it would cost every stored detection ~8 us
# (benchmarks/dashboard_bench.py measured a write ratio of 0.83 with one).
DETECTIONS_SQL = (
    "SELECT camera_id, (unixepoch(t) - ?) / ? AS b, COUNT(*) FROM ("
    "SELECT camera_id, at AS t FROM records WHERE at >= ? AND at < ?{camera} UNION ALL "
    "SELECT camera_id, received_at FROM records "
    "WHERE at IS NULL AND received_at >= ? AND received_at < ?{camera}"
    ") GROUP BY camera_id, b"
)
# Health is a few messages per camera per minute: its own index costs little.
HEALTH_SQL = (
    f"SELECT {EVENT_TIME} AS t, component, status, json_extract(payload, '$.details') "
    f"FROM health WHERE camera_id = ? AND {EVENT_TIME} >= ? AND {EVENT_TIME} < ? "
    "ORDER BY t DESC LIMIT ?"
)
DEFAULT_WINDOW_S = 3600
MAX_BUCKETS = 10_000
DEFAULT_HEALTH_POINTS = 2_000
MAX_HEALTH_POINTS = 20_000
# The numeric health details charted (whichever component carries them: the
# agent's every component carries cpu/memory/disk, `system` the temperature,
# `spool` the backlog, `uplink` the link), and the textual ones.
HEALTH_FIELDS = (
    "cpu_usage",
    "memory_usage",
    "disk_usage",
    "temperature_c",
    "spool_depth",
    "spool_oldest_age_s",
    "last_ack_age_s",
    "ack_latency_ms",
)
HEALTH_TEXT_FIELDS = ("link_state", "channel")
STATUS_RANK = {"healthy": 0, "warning": 1, "error": 2}


def add_routes(app: web.Application, service: StubService) -> None:
    """Indexes, the JSON routes under ``/api/`` (so the token middleware
    guards them) and ``/metrics``."""
    history = History(service)
    history.prepare()
    app[HISTORY_KEY] = history
    r = app.router
    r.add_get("/api/stats/detections_per_minute", history.detections_per_minute)
    r.add_get("/api/stats/health_history", history.health_history)
    r.add_get("/api/search", history.search)
    app.on_cleanup.append(history.stop)
    add_metrics_route(app, service)


class History:
    def __init__(self, service: StubService) -> None:
        self.service = service
        self.conn = service.storage.conn
        self.plates = PlateIndex(self.conn)

    def prepare(self) -> None:
        t0 = time.monotonic()
        prepare_indexes(self.conn)
        self.plates.prepare()
        log.debug("history indexes ready in %.3f s", time.monotonic() - t0)

    async def stop(self, app: web.Application) -> None:
        await self.plates.stop()

    # --- handlers ----------------------------------------------------------------------

    async def detections_per_minute(self, request: web.Request) -> web.Response:
        q = request.query
        since, until = time_window(q)
        bucket = int_arg(q, "bucket", 60, 1, 86_400)
        start = math.floor(since / bucket) * bucket
        n = math.ceil((until - start) / bucket)
        if n > MAX_BUCKETS:
            raise BadRequest(f"{n} buckets of {bucket} s: at most {MAX_BUCKETS}; widen bucket=")
        camera_id = q.get("camera_id")
        sql, params = detections_query(start, bucket, iso(start), iso(until), camera_id)
        series: dict[str, list[int]] = {camera_id: [0] * n} if camera_id else {}
        total = [0] * n
        for camera, b, count in self.conn.execute(sql, params):
            if 0 <= b < n:
                series.setdefault(str(camera), [0] * n)[b] = count
                total[b] += count
        series = dict(sorted(series.items()))
        return web.json_response(
            {
                "success": True,
                "since": since,
                "until": until,
                "bucket_s": bucket,
                "time_basis": "event",
                "t": [start + i * bucket for i in range(n)],
                "cameras": series,
                "total": total,
            }
        )

    async def health_history(self, request: web.Request) -> web.Response:
        q = request.query
        camera_id = q.get("camera_id")
        if not camera_id:
            raise BadRequest("camera_id is required")
        since, until = time_window(q)
        limit = int_arg(q, "limit", DEFAULT_HEALTH_POINTS, 1, MAX_HEALTH_POINTS)
        # Newest `limit` messages (index walked backwards; one more tells
        # whether there was more), then oldest first.
        rows = self.conn.execute(
            HEALTH_SQL, (camera_id, iso(since), iso(until), limit + 1)
        ).fetchall()
        truncated = len(rows) > limit
        rows = rows[:limit]
        data = merge_health(reversed(rows))
        return web.json_response(
            {
                "success": True,
                "camera_id": camera_id,
                "since": since,
                "until": until,
                "time_basis": "event",
                "messages": len(rows),
                "truncated": truncated,
                **data,
            }
        )

    async def search(self, request: web.Request) -> web.Response:
        q = request.query
        query = SearchQuery.build(
            plate=q.get("plate"),
            mode=q.get("match", "substring"),
            camera_id=q.get("camera_id"),
            window=iso_window(time_window(q, required=False)),
            limit=int_arg(q, "limit", DEFAULT_SEARCH, 1, MAX_SEARCH),
            before=int_arg(q, "before", 0, 1, 2**62) if "before" in q else None,
        )
        records, next_before = await self.plates.search(query)
        return web.json_response(
            {
                "success": True,
                "records": records,
                "returned_count": len(records),
                "next_before": next_before,
            }
        )


HISTORY_KEY = web.AppKey("history", History)


def prepare_indexes(conn: sqlite3.Connection) -> None:
    """The health chart's index: each camera's reports in event-time order."""
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS health_camera_event_time ON health(camera_id, {EVENT_TIME})"
    )


def detections_query(
    start: int, bucket: int, since: str, until: str, camera_id: str | None
) -> tuple[str, list[Any]]:
    # "+": not through the camera index (all of the camera's records, at any
    # time); the window on `at` is the narrower one.
    camera = " AND +camera_id = ?" if camera_id else ""
    window = [since, until, camera_id] if camera_id else [since, until]
    return DETECTIONS_SQL.format(camera=camera), [start, bucket, *window, *window]


def merge_health(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """One point per sample time: the agent reports its components together
    (one message each, same timestamp); each detail comes from whichever
    component carries it. Columnar, as the charts take it; ``None`` = gap."""
    columns: dict[str, list[Any]] = {"t": [], "status": []}
    for name in (*HEALTH_FIELDS, *HEALTH_TEXT_FIELDS):
        columns[name] = []
    for stamp, _component, status, details_json in rows:
        # One point per sample time (the text, so reports a few ms apart stay apart).
        t = _epoch(stamp)
        if t is None:
            continue
        if not columns["t"] or columns["t"][-1] != t:
            columns["t"].append(t)
            for name, values in columns.items():
                if name != "t":
                    values.append(None)
        try:
            details = json.loads(details_json) if details_json else {}
        except ValueError:
            details = {}
        if not isinstance(details, dict):
            details = {}
        for name in HEALTH_FIELDS:
            value = details.get(name)
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                columns[name][-1] = value
        for name in HEALTH_TEXT_FIELDS:
            if isinstance(details.get(name), str):
                columns[name][-1] = details[name]
        worst = columns["status"][-1]
        if STATUS_RANK.get(status, -1) > STATUS_RANK.get(worst, -1):
            columns["status"][-1] = status
    return columns


def iso(seconds: float) -> str:
    """Epoch seconds as the stub stores times (UTC, ms): comparable as text."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def iso_window(window: tuple[float, float] | None) -> tuple[str, str] | None:
    return None if window is None else (iso(window[0]), iso(window[1]))


def _epoch(stamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


def parse_time(value: str, name: str) -> float:
    """Epoch seconds from ``1764540000`` or ISO 8601 (no offset = UTC)."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(
                f"{name} must be epoch seconds or an ISO 8601 time, got {value!r}"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
        raise BadRequest(f"{name} out of range: {value!r}")
    return seconds


def time_window(query: Any, required: bool = True) -> tuple[float, float] | None:
    """(since, until) from the query; default: the last hour. ``required=False``:
    None when neither is given (no time filter at all)."""
    if not required and "since" not in query and "until" not in query:
        return None
    until = parse_time(query["until"], "until") if "until" in query else time.time()
    since = parse_time(query["since"], "since") if "since" in query else until - DEFAULT_WINDOW_S
    if since >= until:
        raise BadRequest("since must be before until")
    return since, until


def int_arg(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value
