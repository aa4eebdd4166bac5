"""The health reporter: samples, judges and spools one HealthStatus per component.

The reports go through the spool (``Kind.HEALTH``) like every other message;
the spool hands out health newest-first. Between rounds the reporter keeps
the previous pipeline snapshot, so that the rules judge the frames processed
and dropped in the last interval rather than lifetime counters. (The spool
keeps its own recent drop window: ``SpoolStats.drops_recent``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lpr_agent.health.config import HealthConfig
from lpr_agent.health.rules import COMPONENTS, Recent, evaluate
from lpr_agent.health.system import SystemSampler
from lpr_agent.protocol import HealthStatus, now_timestamp

if TYPE_CHECKING:
    from lpr_agent.detect.pipeline import PipelineStats
    from lpr_agent.identity import CameraIdentity
    from lpr_agent.spool import SpoolStats
    from lpr_agent.uplink import UplinkStats

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class History:
    """The previous pipeline snapshot, to turn lifetime counters into the last interval's."""

    def __init__(self) -> None:
        self._frames: tuple[float, int, int] | None = None  # (monotonic, frames, dropped)

    def recent(self, now: float, pipeline: PipelineStats | None) -> Recent:
        if pipeline is None:
            return Recent()
        prev = self._frames
        self._frames = (now, pipeline.frames, pipeline.frames_dropped)
        # A restarted pipeline (SIGHUP) starts its counters at 0: no interval then.
        if prev is None or pipeline.frames < prev[1] or now <= prev[0]:
            return Recent()
        return Recent(elapsed_s=now - prev[0], frames=pipeline.frames - prev[1],
                      frames_dropped=max(0, pipeline.frames_dropped - prev[2]))


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
        max_fps: Callable[[], float | None] | None = None,
        put: Callable[[list[dict[str, Any]]], Any] | None = None,
        sampler: SystemSampler | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.sampler = sampler or SystemSampler(disk_path)
        self.pipeline_stats = pipeline_stats
        self.spool_stats = spool_stats
        self.uplink_stats = uplink_stats
        self.max_fps = max_fps
        self.put = put
        self.history = History()
        self.last: list[dict[str, Any]] = []
        self.last_at: float | None = None
        self._states: dict[str, str] = {}
        if config.cpu_percent is not None:
            log.warning("[health] cpu_percent is no longer used: CPU use is reported, and the "
                        "detector is judged by its frame rate (fps_shortfall_percent)")

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
        pipeline = self._call(self.pipeline_stats)
        spool = self._call(self.spool_stats)
        recent = self.history.recent(time.monotonic(), pipeline)
        verdicts = evaluate(
            self.config,
            self.sampler.sample(),
            pipeline,
            spool,
            self._call(self.uplink_stats),
            max_fps=self._call(self.max_fps),
            recent=recent,
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
