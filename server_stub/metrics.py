"""``GET /metrics``: the stub's state for Prometheus, read at scrape time.

A custom collector on a registry of this app's own (no global registry: two
stubs in one process, as in tests, each report their own). Stored counts come
from the database, so they survive restarts and match ``/api/records``; each
scrape counts only the rows stored since the previous one (a range of the
primary key), so a scrape costs the same at 1 k or 1 M records after the
first. The delete triggers of ``plate_search.py`` bump ``dash_state.deletions``
when records are forgotten (``DELETE /api/records``); the counts then start
over, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from server_stub.service import DASHBOARD_ROOM, StubService

log = logging.getLogger(__name__)


class StoredCounts:
    """Rows per (camera_id, channel) of one table, kept up to date incrementally."""

    def __init__(self, conn: sqlite3.Connection, table: str) -> None:
        self.conn = conn
        self.table = table
        self.counts: Counter[tuple[str, str]] = Counter()
        self.mark = 0
        self.deletions: int | None = None

    def refresh(self) -> Counter[tuple[str, str]]:
        q = self.conn.execute
        deletions = q("SELECT value FROM dash_state WHERE name = 'deletions'").fetchone()[0]
        if deletions != self.deletions:
            self.counts.clear()
            self.mark = 0
            self.deletions = deletions
        top = q(f"SELECT COALESCE(MAX(rowid), 0) FROM {self.table}").fetchone()[0]
        if top > self.mark:
            rows = q(
                f"SELECT camera_id, channel, COUNT(*) FROM {self.table} "
                "WHERE rowid > ? AND rowid <= ? GROUP BY camera_id, channel",
                (self.mark, top),
            )
            for camera_id, channel, n in rows:
                self.counts[(str(camera_id), str(channel))] += n
            self.mark = top
        return self.counts


class StubCollector(Collector):
    def __init__(self, service: StubService) -> None:
        self.service = service
        # dash_state and its delete triggers come from PlateIndex.prepare.
        conn = service.storage.conn
        self.detections = StoredCounts(conn, "records")
        self.health = StoredCounts(conn, "health")

    def collect(self) -> Iterator[Metric]:
        yield self._stored(
            "lpr_stub_detections_stored", "Detections stored (each event_id once)", self.detections
        )
        yield self._stored(
            "lpr_stub_health_stored", "Health messages stored (each event_id once)", self.health
        )
        service = self.service
        cameras = service.storage.cameras()
        yield GaugeMetricFamily("lpr_stub_cameras", "Cameras known to the stub", len(cameras))
        connected = sum(1 for c in cameras if service.connections.is_live(c["camera_id"]))
        yield GaugeMetricFamily(
            "lpr_stub_cameras_connected",
            "Cameras registered on a live Socket.IO connection",
            connected,
        )
        yield GaugeMetricFamily(
            "lpr_stub_socketio_connections",
            "Open Socket.IO connections (cameras and dashboards)",
            service.connections.count,
        )
        yield GaugeMetricFamily(
            "lpr_stub_dashboard_clients",
            "Socket.IO clients in the dashboard room",
            self._room_size(DASHBOARD_ROOM),
        )
        last_seen = GaugeMetricFamily(
            "lpr_stub_camera_last_seen_timestamp_seconds",
            "When the stub last heard from the camera (unix time)",
            labels=["camera_id"],
        )
        for c in cameras:
            seen = _epoch(c.get("last_seen"))
            if seen is not None:
                last_seen.add_metric([str(c["camera_id"])], seen)
        yield last_seen
        missing = GaugeMetricFamily(
            "lpr_stub_camera_missing_readings",
            "Readings the camera numbered (its seq) that have not arrived: dropped on the way "
            "or still in its spool",
            labels=["camera_id", "kind"],
        )
        for c in cameras:
            for kind in ("detection", "health"):
                n = c.get(f"{kind}_missing_seq")
                if isinstance(n, int) and c.get(f"{kind}_last_seq"):
                    missing.add_metric([str(c["camera_id"]), kind], n)
        yield missing
        duplicates = getattr(service.storage, "duplicates", None)
        if isinstance(duplicates, int):
            yield CounterMetricFamily(
                "lpr_stub_duplicates",
                "Messages received again (same event_id), answered without storing, since start",
                duplicates,
            )
        yield CounterMetricFamily(
            "lpr_stub_commits",
            "SQLite transactions of the group committer, since start",
            service.writer.batches,
        )

    @staticmethod
    def _stored(name: str, doc: str, counts: StoredCounts) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["camera_id", "channel"])
        for (camera_id, channel), n in sorted(counts.refresh().items()):
            family.add_metric([camera_id, channel], n)
        return family

    def _room_size(self, room: str) -> int:
        sio = getattr(self.service.broadcaster, "sio", None)
        if sio is None:
            return 0
        return len(sio.manager.rooms.get("/", {}).get(room) or {})


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def add_metrics_route(app: web.Application, service: StubService) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StubCollector(service))
    token = service.config.token

    async def metrics(request: web.Request) -> web.Response:
        if token is not None:
            given = request.headers.get("Authorization", "")
            # Bearer only (Prometheus' `authorization` setting); never ?token=,
            # which would end up in scrape configs and access logs.
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return web.Response(status=401, text="Unauthorized: bad or missing token\n")
        # Prometheus' classic text format, or OpenMetrics when the scraper asks.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    app.router.add_get("/metrics", metrics)
