"""The agent's metrics, read from the stages at scrape time.

Counters and gauges come from the stages' ``stats()`` snapshots when
Prometheus scrapes (nothing to keep in step, no global registry: one
``AgentMetrics`` and registry per Agent). What no snapshot holds — readings
delivered per kind, and the latency histograms — the agent records as it
happens (``Tally``, ``observe_*``).

Naming follows the Prometheus conventions: ``lpr_agent_`` prefix, base units
(seconds, bytes), ``_total`` for counters. A counter that a stage keeps
across restarts (the spool's drop counters live in the spool file) simply
starts at its stored value, which Prometheus handles like any counter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

KINDS = ("detection", "health", "registration")
CHANNELS = ("socketio", "rest", "none")
HEALTH_STATES = ("healthy", "warning", "error")
DETECTION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# put -> ack spans milliseconds (online) to hours (after an outage).
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


class Tally:
    """Thread-safe event counts the agent records (the stages do not keep them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, name: str, label: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(name, label)] = self._counts.get((name, label), 0) + n

    def get(self, name: str, label: str) -> int:
        with self._lock:
            return self._counts.get((name, label), 0)


@dataclass
class Sources:
    """Accessors of the stages' snapshots; each may return None (stage not running)."""

    pipeline: Callable[[], Any] = lambda: None
    spool: Callable[[], Any] = lambda: None
    uplink: Callable[[], Any] = lambda: None
    health: Callable[[], list[dict[str, Any]]] = lambda: []
    max_fps: Callable[[], float | None] = lambda: None
    info: Callable[[], dict[str, str]] = dict
    started_at: float = 0.0


def _get(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # a stage's stats failing must not fail the whole scrape
        log.warning("metrics: stats unavailable", extra={"error": exc})
        return None


def _counter(name: str, doc: str, value: float | None, **labels: str) -> Metric:
    # CounterMetricFamily appends "_total" itself: pass the name without it.
    family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))
    if value is not None:
        family.add_metric(list(labels.values()), value)
    return family


def _gauge(name: str, doc: str, value: float | None) -> Metric:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


class StageCollector(Collector):
    """Yields every metric family on each scrape; families without data stay empty."""

    def __init__(self, sources: Sources, tally: Tally) -> None:
        self.sources = sources
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        s = self.sources
        info = GaugeMetricFamily("lpr_agent_info", "agent version and camera identity",
                                 labels=["version", "camera_id", "checkpoint_id"])
        i = _get(s.info) or {}
        info.add_metric([i.get("version", ""), i.get("camera_id", ""),
                         i.get("checkpoint_id", "")], 1)
        yield info
        yield _gauge("lpr_agent_start_time_seconds", "when the agent started (Unix time)",
                     s.started_at)
        pipeline = _get(s.pipeline)
        yield from self._readings(pipeline)
        yield from self._pipeline(pipeline, _get(s.max_fps))
        yield from self._spool(_get(s.spool))
        yield from self._uplink(_get(s.uplink))
        yield from self._health(_get(s.health) or [])

    def _readings(self, p: Any) -> Iterator[Metric]:
        t = self.tally
        made = CounterMetricFamily("lpr_agent_readings_made", "readings made by this process "
                                   "(detections: vehicles read; health: status messages)",
                                   labels=["kind"])
        spooled = CounterMetricFamily("lpr_agent_readings_spooled", "readings durably put into "
                                      "the spool by this process", labels=["kind"])
        failed = CounterMetricFamily("lpr_agent_readings_spool_failures", "readings the spool "
                                     "refused (they are lost; see the spool's health)",
                                     labels=["kind"])
        delivered = CounterMetricFamily("lpr_agent_readings_delivered", "readings the server "
                                        "acknowledged (removed from the spool)", labels=["kind"])
        for kind in KINDS:
            if kind == "detection" and p is not None:
                ok, bad = p.events_emitted, p.sink_errors
            else:
                ok, bad = t.get("spooled", kind), t.get("spool_failed", kind)
            made.add_metric([kind], ok + bad)
            spooled.add_metric([kind], ok)
            failed.add_metric([kind], bad)
            delivered.add_metric([kind], t.get("delivered", kind))
        yield from (made, spooled, failed, delivered)

    def _pipeline(self, p: Any, max_fps: float | None) -> Iterator[Metric]:
        on = p is not None
        yield _gauge("lpr_agent_detector_fps", "frames processed per second (recent)",
                     p.fps if on else None)
        yield _gauge("lpr_agent_detector_max_fps", "target frame rate ([source] max_fps)",
                     max_fps)
        yield _gauge("lpr_agent_source_fps", "frames per second the camera delivers",
                     p.source_fps if on else None)
        yield _gauge("lpr_agent_source_up", "1 while the frame source is running",
                     (1 if p.source_state == "running" else 0) if on else 0)
        yield _gauge("lpr_agent_source_last_frame_age_seconds", "seconds since the last frame",
                     p.last_frame_age_s if on else None)
        yield _counter("lpr_agent_frames_processed_total", "frames the detector processed",
                       p.frames if on else None)
        yield _counter("lpr_agent_frames_dropped_total", "frames replaced by a newer one "
                       "before the detector took them", p.frames_dropped if on else None)
        yield _counter("lpr_agent_frame_errors_total", "frames the detector failed on",
                       p.frame_errors if on else None)
        yield _counter("lpr_agent_source_reconnects_total", "times the frame source was "
                       "reopened", p.reconnects if on else None)

    def _spool(self, s: Any) -> Iterator[Metric]:
        on = s is not None
        items = GaugeMetricFamily("lpr_agent_spool_items", "readings waiting in the spool "
                                  "(ready, in flight or backing off)", labels=["kind"])
        drops = CounterMetricFamily("lpr_agent_spool_dropped", "what the full spool shed, by "
                                    "reason, since the spool file was created",
                                    labels=["reason"])
        if on:
            for kind in KINDS:
                items.add_metric([kind], s.depth.get(kind, 0))
            for reason, n in s.drops.items():
                drops.add_metric([reason], n)
        yield from (items, drops)
        yield _gauge("lpr_agent_spool_bytes", "payload bytes waiting in the spool",
                     s.bytes if on else None)
        yield _gauge("lpr_agent_spool_file_bytes", "size of the spool database file",
                     s.file_bytes if on and s.file_bytes else None)
        yield _gauge("lpr_agent_spool_oldest_age_seconds", "age of the oldest waiting reading "
                     "(0 when empty)", (s.oldest_age_s or 0.0) if on else None)
        yield _gauge("lpr_agent_spool_in_flight", "readings sent and awaiting an ack",
                     s.in_flight if on else None)
        yield _gauge("lpr_agent_spool_backing_off", "readings waiting out a retry backoff",
                     s.backing_off if on else None)
        yield _gauge("lpr_agent_spool_dead_letters", "readings the server rejected for good, "
                     "kept for an operator", s.dead_letters if on else None)

    def _uplink(self, u: Any) -> Iterator[Metric]:
        on = u is not None
        channel = GaugeMetricFamily("lpr_agent_uplink_channel", "1 for the channel in use "
                                    "(socketio, rest, none)", labels=["channel"])
        for name in CHANNELS:
            channel.add_metric([name], 1 if on and u.channel == name else 0)
        yield channel
        yield _gauge("lpr_agent_uplink_connected", "1 while Socket.IO is connected and "
                     "registered", (1 if u.connected else 0) if on else 0)
        yield _gauge("lpr_agent_uplink_last_ack_timestamp_seconds", "when the server last "
                     "acknowledged (Unix time)", u.last_ack_at if on else None)
        yield _counter("lpr_agent_messages_sent_total", "messages written to a link "
                       "(resends included)", u.sent if on else None)
        yield _counter("lpr_agent_messages_retried_total", "messages returned to the spool to "
                       "be sent again (link failure or server error; not lost)",
                       u.retried if on else None)
        yield _counter("lpr_agent_messages_dead_lettered_total", "messages the server rejected "
                       "for good (moved to the dead letters)", u.rejected if on else None)
        yield _counter("lpr_agent_uplink_fallbacks_total", "switches from Socket.IO to REST",
                       u.fallback_switches if on else None)
        yield _counter("lpr_agent_uplink_possible_duplicates_total", "messages resent after an "
                       "unknown outcome", u.possible_duplicates if on else None)

    def _health(self, last: list[dict[str, Any]]) -> Iterator[Metric]:
        family = GaugeMetricFamily("lpr_agent_health_status", "1 for each component's current "
                                   "health state", labels=["component", "status"])
        for report in last:
            for state in HEALTH_STATES:
                family.add_metric([str(report.get("component")), state],
                                  1 if report.get("status") == state else 0)
        yield family


class AgentMetrics:
    """One registry: the stage collector plus the histograms the agent observes."""

    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.tally = Tally()
        self.registry.register(StageCollector(sources, self.tally))
        self.detection_latency = Histogram(
            "lpr_agent_detection_latency_seconds",
            "detector time of the frame each reading came from",
            buckets=DETECTION_BUCKETS, registry=self.registry)
        self.delivery_latency = Histogram(
            "lpr_agent_delivery_latency_seconds",
            "time from spool put to server acknowledgement, per delivered reading",
            labelnames=["kind"], buckets=DELIVERY_BUCKETS, registry=self.registry)

    def spooled(self, kind: str, n: int = 1) -> None:
        self.tally.add("spooled", kind, n)

    def spool_failed(self, kind: str, n: int = 1) -> None:
        self.tally.add("spool_failed", kind, n)

    def observe_detection(self, seconds: float) -> None:
        self.detection_latency.observe(max(0.0, seconds))

    def delivered(self, item: Any, now: float | None = None) -> None:
        """Uplink hook: one SpoolItem acknowledged by the server."""
        kind = str(getattr(item.kind, "value", item.kind))
        self.tally.add("delivered", kind)
        now = time.time() if now is None else now
        self.delivery_latency.labels(kind=kind).observe(max(0.0, now - item.created_at))
