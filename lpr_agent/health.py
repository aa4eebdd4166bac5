"""Health reporter: one ``health_status`` per component every ``interval_s``.

Components: ``camera``, ``detector``, ``spool``, ``uplink``, ``system``. Each
gets ``healthy`` / ``warning`` / ``error`` from configurable thresholds and a
``details`` dict. Every component's details carry the protocol's
``cpu_usage``, ``memory_usage`` and ``disk_usage`` (percent), because deployed
dashboards read those keys from whatever component they display.

The reports go through the spool (``Kind.HEALTH``) like every other message;
the spool hands out health newest-first.

The stages' statistics arrive as their own typed snapshots (``PipelineStats``,
``SpoolStats``, ``UplinkStats``), or None for a stage that is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lpr_agent.protocol import HealthStatus, now_timestamp

if TYPE_CHECKING:
    # Types only: importing the stages would load OpenCV/onnxruntime (detect),
    # Socket.IO (uplink) and sqlite-utils (spool) into every config load.
    from lpr_agent.config import CameraIdentity
    from lpr_agent.detect.pipeline import PipelineStats
    from lpr_agent.spool import SpoolStats
    from lpr_agent.uplink import UplinkStats

log = logging.getLogger(__name__)

State = Literal["healthy", "warning", "error"]
COMPONENTS = ("camera", "detector", "spool", "uplink", "system")
_RANK = {"healthy": 0, "warning": 1, "error": 2}
Report = tuple[State, str, dict[str, Any]]  # (status, message, details)
_T = TypeVar("_T")


class Threshold(BaseModel):
    """A metric is ``warning`` at or above ``warning`` and ``error`` at or above ``error``."""

    model_config = ConfigDict(extra="forbid")

    warning: float = Field(description="value from which the component reports warning")
    error: float = Field(description="value from which the component reports error")

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.error < self.warning:
            raise ValueError(f"error ({self.error}) must be >= warning ({self.warning})")
        return self

    def state(self, value: float | None) -> State:
        if value is None:
            return "healthy"
        if value >= self.error:
            return "error"
        if value >= self.warning:
            return "warning"
        return "healthy"


def _t(warning: float, error: float, what: str) -> Any:
    return Field(default_factory=lambda: Threshold(warning=warning, error=error), description=what)


class HealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="send health_status messages at all")
    interval_s: float = Field(
        default=30.0, ge=1.0, description="seconds between two rounds of health reports"
    )
    clock_unsynced: State = Field(
        default="warning",
        description="status of the system component while the clock is not NTP-synchronised "
        "(timestamps of readings may be wrong)",
    )
    cpu_percent: Threshold = _t(85, 95, "system CPU usage, percent")
    memory_percent: Threshold = _t(85, 95, "system memory usage, percent")
    disk_percent: Threshold = _t(85, 95, "usage of the file system holding the spool, percent")
    temperature_c: Threshold = _t(
        75, 85, "hottest temperature sensor, °C (where the board has one)"
    )
    frame_age_s: Threshold = _t(10, 60, "seconds since the camera delivered a frame")
    detector_latency_ms: Threshold = _t(1000, 5000, "detector time per frame, milliseconds")
    spool_depth: Threshold = _t(10_000, 100_000, "readings waiting in the spool")
    spool_oldest_age_s: Threshold = _t(600, 3600, "age of the oldest undelivered reading, s")
    dead_letters: Threshold = _t(1, 1000, "readings the server rejected for good")
    ack_age_s: Threshold = _t(
        300, 1800, "seconds since the server last acknowledged, while readings are waiting"
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_thresholds(cls, data: Any) -> Any:
        # `[health.cpu_percent] warning = 50` (or LPR_AGENT_HEALTH__CPU_PERCENT__WARNING)
        # changes one bound and keeps the default of the other.
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            value = merged.get(name)
            if field.annotation is Threshold and isinstance(value, dict):
                default = field.get_default(call_default_factory=True)
                merged[name] = {**default.model_dump(), **value}
        return merged


# --- system metrics ------------------------------------------------------------------

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised


def clock_synchronized() -> bool | None:
    """True/False from the kernel's NTP state; None when it cannot be read.

    adjtimex with modes=0 only reads; a hardened unit (ProtectClock) may still
    forbid it, so fall back to systemd-timesyncd's flag file.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # >= sizeof(struct timex); modes=0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        state = -1
    if state >= 0:
        return state != _TIME_ERROR
    if Path("/run/systemd/timesync/synchronized").exists():
        return True
    return None


def max_temperature() -> float | None:
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is None:
        return None
    try:
        readings = sensors()
    except (OSError, RuntimeError):
        return None
    temps = [t.current for entries in readings.values() for t in entries if t.current]
    return round(max(temps), 1) if temps else None


class SystemSampler:
    """Host and process metrics from psutil; cheap enough to call every few seconds."""

    def __init__(self, disk_path: Path) -> None:
        self.disk_path = disk_path
        self.process = psutil.Process()
        self.started = time.monotonic()
        # cpu_percent(None) measures since the previous call; the first call is
        # meaningless, so prime both counters now.
        psutil.cpu_percent(None)
        self.process.cpu_percent(None)

    def sample(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        details: dict[str, Any] = {
            "cpu_usage": round(psutil.cpu_percent(None), 1),
            "memory_usage": round(vm.percent, 1),
            "disk_usage": None,
            "memory_available_mb": round(vm.available / 2**20, 1),
            "process_rss_mb": round(self.process.memory_info().rss / 2**20, 1),
            "process_cpu": round(self.process.cpu_percent(None), 1),
            "process_threads": self.process.num_threads(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "system_uptime_s": round(time.time() - psutil.boot_time(), 1),
        }
        path = self.disk_path
        while not path.exists() and path != path.parent:
            path = path.parent  # the state dir may not exist yet: measure its file system
        try:
            du = psutil.disk_usage(str(path))
            details["disk_usage"] = round(du.percent, 1)
            details["disk_free_mb"] = round(du.free / 2**20, 1)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            details["load_avg"] = [round(x, 2) for x in os.getloadavg()]
        temp = max_temperature()
        if temp is not None:
            details["temperature_c"] = temp
        synced = clock_synchronized()
        details["clock_sync"] = {True: "synchronized", False: "unsynchronized", None: "unknown"}[
            synced
        ]
        return details


# --- evaluation ----------------------------------------------------------------------


def _worst(*states: State) -> State:
    return max(states, key=lambda s: _RANK[s], default="healthy")


class _Verdict:
    """Collects (state, reason) pairs; the message names every non-healthy reason."""

    def __init__(self) -> None:
        self.state: State = "healthy"
        self.reasons: list[str] = []

    def add(self, state: State, reason: str) -> None:
        if state != "healthy":
            self.reasons.append(reason)
        self.state = _worst(self.state, state)

    def check(self, threshold: Threshold, value: float | None, reason: str) -> None:
        self.add(threshold.state(value), reason)

    def message(self, ok: str) -> str:
        return "; ".join(self.reasons) if self.reasons else ok


def _present(details: dict[str, Any]) -> dict[str, Any]:
    """Details without the values the stage does not know (yet)."""
    return {k: x for k, x in details.items() if x is not None}


def evaluate_system(config: HealthConfig, system: Mapping[str, Any]) -> Report:
    v = _Verdict()
    v.check(config.cpu_percent, system.get("cpu_usage"), f"CPU {system.get('cpu_usage')}%")
    v.check(config.memory_percent, system.get("memory_usage"),
            f"memory {system.get('memory_usage')}%")
    v.check(config.disk_percent, system.get("disk_usage"), f"disk {system.get('disk_usage')}%")
    v.check(config.temperature_c, system.get("temperature_c"),
            f"temperature {system.get('temperature_c')}°C")
    if system.get("clock_sync") == "unsynchronized":
        v.add(config.clock_unsynced, "clock not synchronised")
    return v.state, v.message("System resources normal"), dict(system)


def evaluate_camera(
    config: HealthConfig, base: Mapping[str, Any], pipeline: PipelineStats | None
) -> Report:
    v = _Verdict()
    details = dict(base)
    if pipeline is None:
        v.add("error", "detection pipeline not running")
    else:
        frame_age = pipeline.last_frame_age_s
        source_error = pipeline.source_error
        details.update(
            fps=pipeline.fps,
            last_frame_age_s=frame_age,
            source_state=pipeline.source_state,
            frames=pipeline.frames,
            frames_dropped=pipeline.frames_dropped,
            source_fps=pipeline.source_fps,
            reconnects=pipeline.reconnects,
            source_url=pipeline.source_url,
        )
        if source_error:
            details["source_error"] = source_error
        if frame_age is None:
            # Just started (still opening) is a warning; a source that failed is an error.
            starting = pipeline.source_state in ("idle", "opening", "running")
            v.add("warning" if starting and not source_error else "error",
                  "no frame received yet"
                  + (f" (source {pipeline.source_state}: {source_error})" if source_error
                     else ""))
        else:
            v.check(config.frame_age_s, frame_age, f"no frame for {frame_age:.0f}s"
                    + (f" ({source_error})" if source_error else ""))
    return v.state, v.message("Camera working normally"), _present(details)


def evaluate_detector(
    config: HealthConfig, base: Mapping[str, Any], pipeline: PipelineStats | None
) -> Report:
    v = _Verdict()
    details = dict(base)
    if pipeline is None:
        v.add("error", "detection pipeline not running")
    else:
        latency = pipeline.detector_mean_ms
        details.update(
            detector_latency_ms=latency,
            model_loaded=pipeline.model_loaded,
            plates_read=pipeline.plates_read,
            detections=pipeline.events_emitted,
            sink_errors=pipeline.sink_errors,
        )
        v.check(config.detector_latency_ms, latency, f"detector latency {latency} ms")
        if not pipeline.model_loaded:
            v.add("error", "detector model not loaded")
        if pipeline.sink_errors:
            v.add("error", f"{pipeline.sink_errors} readings could not be spooled")
    return v.state, v.message("Detector working normally"), _present(details)


def evaluate_spool(
    config: HealthConfig, base: Mapping[str, Any], spool: SpoolStats | None
) -> Report:
    v = _Verdict()
    details = dict(base)
    if spool is None:
        v.add("error", "spool not open")
    else:
        depth, oldest, dead = spool.items, spool.oldest_age_s, spool.dead_letters
        details.update(
            spool_depth=depth,
            spool_oldest_age_s=oldest,
            spool_drops=sum(spool.drops.values()),
            spool_by_kind=spool.depth,
            spool_in_flight=spool.in_flight,
            spool_backing_off=spool.backing_off,
            spool_dead_letters=dead,
            # An empty file size (0) means "not measured": leave the detail out.
            spool_size_mb=round(spool.file_bytes / 2**20, 2) if spool.file_bytes else None,
            spool_drops_by_reason=dict(spool.drops),
        )
        v.check(config.spool_depth, depth, f"{depth} readings waiting")
        v.check(config.spool_oldest_age_s, oldest, f"oldest reading waiting {oldest or 0:.0f}s")
        v.check(config.dead_letters, dead, f"{dead} readings dead-lettered")
        # Losing readings is an error; shedding images or old health
        # snapshots to make room is the designed degradation: a warning.
        lost = spool.drops.get("detections_dropped", 0)
        shed = {k: n for k, n in spool.drops.items() if n and k != "detections_dropped"}
        if lost:
            v.add("error", f"{lost} readings dropped (spool full)")
        if shed:
            v.add("warning", "spool full, shed " + ", ".join(f"{n} {k}" for k, n in shed.items()))
    return v.state, v.message("Spool working normally"), _present(details)


def evaluate_uplink(
    config: HealthConfig,
    base: Mapping[str, Any],
    uplink: UplinkStats | None,
    backlog: int,
    now: float,
) -> Report:
    """``backlog``: readings waiting in the spool (0 when it is not open)."""
    v = _Verdict()
    details = dict(base)
    if uplink is None:
        v.add("error", "uplink not running")
    else:
        ack_age = (None if uplink.last_ack_at is None
                   else round(max(0.0, now - uplink.last_ack_at), 1))
        if uplink.connected:
            state = "connected"
        else:
            # REST has no connection to lose: only a Socket.IO link is "disconnected".
            state = "rest" if uplink.channel == "rest" else "disconnected"
        latency = uplink.ack_latency_p50_ms
        details.update(
            channel=uplink.channel,
            link_state=state,
            last_ack_age_s=ack_age,
            sent=uplink.sent,
            acked=uplink.acked,
            retried=uplink.retried,
            rejected=uplink.rejected,
            last_error=uplink.last_error,
            ack_latency_ms=None if latency is None else round(latency, 3),
        )
        if backlog:
            # Silence from the server only matters while something is waiting.
            if ack_age is None:
                v.add("warning", "nothing acknowledged yet")
            else:
                v.check(config.ack_age_s, ack_age, f"no ack for {ack_age:.0f}s")
            if state == "disconnected":
                v.add("warning", f"link {state}")
    return v.state, v.message("Uplink working normally"), _present(details)


def evaluate(
    config: HealthConfig,
    system: Mapping[str, Any],
    pipeline: PipelineStats | None,
    spool: SpoolStats | None,
    uplink: UplinkStats | None,
) -> dict[str, Report]:
    """Component -> (status, message, details). Pure: all inputs are snapshots.

    ``pipeline``/``spool``/``uplink`` are the stages' ``stats()`` results, or
    None when the stage is not running (which is itself reported as an error).
    """
    base = {k: system.get(k) for k in ("cpu_usage", "memory_usage", "disk_usage")}
    return {
        "system": evaluate_system(config, system),
        "camera": evaluate_camera(config, base, pipeline),
        "detector": evaluate_detector(config, base, pipeline),
        "spool": evaluate_spool(config, base, spool),
        "uplink": evaluate_uplink(config, base, uplink, spool.items if spool else 0, time.time()),
    }


class HealthReporter:
    """Samples, evaluates and spools one HealthStatus per component."""

    def __init__(
        self,
        config: HealthConfig,
        identity: CameraIdentity,
        *,
        disk_path: Path,
        pipeline_stats: Callable[[], PipelineStats | None] | None = None,
        spool_stats: Callable[[], SpoolStats | None] | None = None,
        uplink_stats: Callable[[], UplinkStats | None] | None = None,
        put: Callable[[list[dict[str, Any]]], Any] | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.sampler = SystemSampler(disk_path)
        self.pipeline_stats = pipeline_stats
        self.spool_stats = spool_stats
        self.uplink_stats = uplink_stats
        self.put = put
        self.last: list[dict[str, Any]] = []
        self.last_at: float | None = None
        self._states: dict[str, str] = {}

    @staticmethod
    def _call(fn: Callable[[], _T | None] | None) -> _T | None:
        if fn is None:
            return None
        try:
            return fn()
        except Exception as exc:  # a stage's stats failing must not stop the others' reports
            log.warning("stats unavailable", extra={"error": exc})
            return None

    def collect(self) -> list[HealthStatus]:
        verdicts = evaluate(
            self.config,
            self.sampler.sample(),
            self._call(self.pipeline_stats),
            self._call(self.spool_stats),
            self._call(self.uplink_stats),
        )
        timestamp = now_timestamp()
        return [
            HealthStatus(
                camera_id=self.identity.camera_id,
                checkpoint_id=self.identity.checkpoint_id,
                timestamp=timestamp,
                event_id=str(uuid.uuid4()),
                component=component,
                status=verdicts[component][0],
                message=verdicts[component][1][:1024],
                details=verdicts[component][2],
            )
            for component in COMPONENTS
        ]

    def report(self) -> list[dict[str, Any]]:
        """Collect one round and hand it to ``put`` (the spool). Returns the payloads."""
        payloads = [status.wire() for status in self.collect()]
        if self.put is not None:
            self.put(payloads)
        self.last, self.last_at = payloads, time.time()
        for p in payloads:
            # One log line per change of a component's status, not one per round:
            # the journal shows when something broke and when it recovered.
            before = self._states.get(p["component"], "healthy")
            if p["status"] != before:
                level = logging.INFO if p["status"] == "healthy" else logging.WARNING
                log.log(level, "%s is now %s (was %s)", p["component"], p["status"], before,
                        extra={"reason": p["message"]})
            self._states[p["component"]] = p["status"]
        return payloads

    async def run(self, stop: asyncio.Event) -> None:
        """Report every ``interval_s`` until ``stop`` is set (first round at once)."""
        if not self.config.enabled:
            await stop.wait()
            return
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.report)
            except Exception:
                log.exception("health report failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.interval_s)
