"""Health rules: stage snapshots in, ``(status, message, details)`` per component out.

Pure functions (no I/O, no clock except the ``now`` they are given), so every
rule is tested with plain values. The principle: judge each component by the
job it has to do, not by how hard the machine works to do it. A camera that
runs plate detection flat out is *supposed* to use its CPU, so CPU is only
reported; the detector is judged by whether it keeps up with its frame rate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lpr_agent.health.config import HealthConfig, State, Threshold

if TYPE_CHECKING:
    # Types only: importing the stages would load OpenCV/onnxruntime (detect),
    # Socket.IO (uplink) and sqlite-utils (spool) into every config load.
    from lpr_agent.detect.pipeline import PipelineStats
    from lpr_agent.spool import SpoolStats
    from lpr_agent.uplink import UplinkStats

COMPONENTS = ("camera", "detector", "spool", "uplink", "system")
_RANK = {"healthy": 0, "warning": 1, "error": 2}
Report = tuple[State, str, dict[str, Any]]  # (status, message, details)
LOST = "detections_dropped"  # the one drop reason that loses a reading


@dataclass(frozen=True)
class Recent:
    """What changed over the last report interval (``elapsed_s``); the reporter
    computes it from its previous snapshot. None when there is none yet."""

    elapsed_s: float | None = None
    frames: int | None = None
    frames_dropped: int | None = None


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

    def check(self, threshold: Threshold | None, value: float | None, reason: str) -> None:
        if threshold is not None:
            self.add(threshold.state(value), reason)

    def message(self, ok: str) -> str:
        return "; ".join(self.reasons) if self.reasons else ok


def _present(details: dict[str, Any]) -> dict[str, Any]:
    """Details without the values the stage does not know (yet)."""
    return {k: x for k, x in details.items() if x is not None}


def evaluate_system(config: HealthConfig, system: Mapping[str, Any]) -> Report:
    v = _Verdict()
    v.check(config.memory_percent, system.get("memory_usage"),
            f"memory {system.get('memory_usage')}%")
    v.check(config.disk_percent, system.get("disk_usage"), f"disk {system.get('disk_usage')}%")
    v.check(config.temperature_c, system.get("temperature_c"),
            f"temperature {system.get('temperature_c')}°C")
    for what in system.get("throttled") or []:
        v.add("warning", f"board reports {what}")
    for trip in system.get("thermal_trips") or []:
        # Passive/hot: the kernel slows the CPU down; critical: it is about to power off.
        v.add("error" if trip["trip"] == "critical" else "warning",
              f"{trip['zone']} at {trip['temperature_c']:g}°C, over its {trip['trip']} "
              f"trip point ({trip['trip_c']:g}°C)")
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


def frame_rate(
    pipeline: PipelineStats, max_fps: float | None, recent: Recent
) -> tuple[float, float | None, float | None]:
    """(achieved fps, target fps, shortfall percent) — target/shortfall None when unknown.

    The target is what the detector could have processed: ``max_fps``, or
    fewer if the camera delivered fewer frames. Over the last report interval
    when the reporter has one (frames processed + frames dropped = frames
    delivered), else from the pipeline's recent rates.
    """
    if recent.elapsed_s and recent.frames is not None and recent.frames_dropped is not None:
        delivered = recent.frames + recent.frames_dropped
        possible = delivered if max_fps is None else min(delivered, max_fps * recent.elapsed_s)
        achieved, target = recent.frames / recent.elapsed_s, possible / recent.elapsed_s
    else:
        achieved = pipeline.fps
        rates = [r for r in (max_fps, pipeline.source_fps) if r]
        target = min(rates) if rates else 0.0
    if target <= 0:
        return round(achieved, 2), None, None  # nothing to process: the camera's problem
    shortfall = max(0.0, (1.0 - achieved / target) * 100.0)
    return round(achieved, 2), round(target, 2), round(shortfall, 1)


def evaluate_detector(
    config: HealthConfig,
    base: Mapping[str, Any],
    pipeline: PipelineStats | None,
    max_fps: float | None = None,
    recent: Recent | None = None,
) -> Report:
    v = _Verdict()
    details = dict(base)
    if pipeline is None:
        v.add("error", "detection pipeline not running")
        return v.state, v.message(""), _present(details)
    recent = recent or Recent()
    latency = pipeline.detector_mean_ms
    achieved, target, shortfall = frame_rate(pipeline, max_fps, recent)
    details.update(
        fps=achieved,
        target_fps=target,
        fps_shortfall_percent=shortfall,
        max_fps=max_fps,
        frames_dropped=pipeline.frames_dropped,
        frames_dropped_recent=recent.frames_dropped,
        frame_errors=pipeline.frame_errors,
        detector_latency_ms=latency,
        model_loaded=pipeline.model_loaded,
        plates_read=pipeline.plates_read,
        detections=pipeline.events_emitted,
        sink_errors=pipeline.sink_errors,
    )
    if pipeline.model_loaded and pipeline.frames and target is not None:
        dropped = ("" if recent.frames_dropped is None or not recent.elapsed_s else
                   f", {recent.frames_dropped} frames dropped in {recent.elapsed_s:.0f}s")
        v.check(config.fps_shortfall_percent, shortfall,
                f"falling behind: {achieved:g} fps of a {target:g} fps target "
                f"({shortfall:.0f}% short{dropped})")
    if pipeline.frames:
        v.check(config.detector_latency_ms, latency, f"detector latency {latency} ms")
    if not pipeline.model_loaded:
        v.add("error", "detector model not loaded")
    if pipeline.sink_errors:
        v.add("error", f"{pipeline.sink_errors} readings could not be spooled")
    return v.state, v.message("Detector keeping up"), _present(details)


def evaluate_spool(
    config: HealthConfig, base: Mapping[str, Any], spool: SpoolStats | None, now: float
) -> Report:
    v = _Verdict()
    details = dict(base)
    if spool is None:
        v.add("error", "spool not open")
        return v.state, v.message(""), _present(details)
    recent_drops = {k: n for k, n in spool.drops_recent.items() if n}
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
        spool_drops_recent=recent_drops,
        spool_salvages=[asdict(s) for s in spool.salvages] or None,
    )
    v.check(config.spool_depth, depth, f"{depth} readings waiting")
    v.check(config.spool_oldest_age_s, oldest, f"oldest reading waiting {oldest or 0:.0f}s")
    v.check(config.dead_letters, dead, f"{dead} readings dead-lettered")
    # Losing readings is an error; shedding images or old health snapshots to
    # make room is the designed degradation: a warning. Both only within the
    # spool's drop window ([spool] drop_window_s): a drop last month must not
    # make the spool look broken for ever (the lifetime totals stay in details).
    window = f"in the last {spool.drops_window_s / 60:g} min"
    lost = recent_drops.get(LOST, 0)
    shed = {k: n for k, n in recent_drops.items() if k != LOST}
    if lost:
        last = spool.last_drop_at.get(LOST)
        when = f", last {max(0.0, now - last):.0f}s ago" if last else ""
        v.add("error", f"{lost} readings dropped (spool full) {window}{when}")
    if shed:
        v.add("warning", "spool full, shed " + ", ".join(f"{n} {k}" for k, n in shed.items())
              + f" {window}")
    # An error until an operator runs `lpr-agent spool ack-salvage`, even when
    # every row was recovered: the disk under the spool corrupted a file, and
    # someone has to look at that camera.
    for s in spool.salvages:
        v.add("error",
              f"spool file was corrupt {max(0.0, now - s.at) / 60:.0f} min ago: "
              f"{s.recovered} rows recovered, about {s.lost} lost ({s.error}); "
              "acknowledge with `lpr-agent spool ack-salvage`")
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
        return v.state, v.message(""), _present(details)
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
    *,
    now: float | None = None,
    max_fps: float | None = None,
    recent: Recent | None = None,
) -> dict[str, Report]:
    """Component -> (status, message, details). Pure: all inputs are snapshots.

    ``pipeline``/``spool``/``uplink`` are the stages' ``stats()`` results, or
    None when the stage is not running (which is itself reported as an error).
    ``now`` is the wall clock the uplink's ack times compare to (default: now).
    """
    now = time.time() if now is None else now
    base = {k: system.get(k) for k in ("cpu_usage", "memory_usage", "disk_usage")}
    return {
        "system": evaluate_system(config, system),
        "camera": evaluate_camera(config, base, pipeline),
        "detector": evaluate_detector(config, base, pipeline, max_fps, recent),
        "spool": evaluate_spool(config, base, spool, now),
        "uplink": evaluate_uplink(config, base, uplink, spool.items if spool else 0, now),
    }
