"""The reporter: real sampler, real spool; messages valid for a server; recent windows."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from lpr_agent.config import CameraIdentity
from lpr_agent.health import COMPONENTS, HealthConfig, HealthReporter
from lpr_agent.protocol import HealthStatus, parse_inbound
from lpr_agent.spool import Spool
from lpr_agent.uplink import UplinkStats
from tests.health.builders import GOOD_PIPELINE, MAX_FPS, connected_uplink


def test_reporter_emits_valid_protocol_messages(tmp_path: Path, good_spool: Spool) -> None:
    put: list[list[dict[str, Any]]] = []

    def broken_stats() -> UplinkStats:
        raise RuntimeError("stage crashed")

    reporter = HealthReporter(
        HealthConfig(interval_s=1),
        CameraIdentity(camera_id="cam_h", checkpoint_id="cp_h"),
        disk_path=tmp_path,
        pipeline_stats=lambda: GOOD_PIPELINE,
        spool_stats=good_spool.stats,
        uplink_stats=broken_stats,  # must not stop the other reports
        max_fps=lambda: MAX_FPS,
        put=put.append,
    )

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(reporter.run(stop))
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert len(put) == 2  # at once, then after interval_s
    batch = put[-1]
    assert [p["component"] for p in batch] == list(COMPONENTS)
    ids = {p["event_id"] for round_ in put for p in round_}
    assert len(ids) == 10  # every message has its own event_id
    for payload in batch:
        msg = parse_inbound(HealthStatus, payload)  # what a server validates
        assert msg.type == "health_check" and msg.camera_id == "cam_h"
        assert {"cpu_usage", "memory_usage", "disk_usage"} <= set(msg.details)
    by = {p["component"]: p for p in batch}
    assert by["uplink"]["status"] == "error" and by["uplink"]["message"] == "uplink not running"
    assert by["camera"]["status"] == "healthy"
    assert by["detector"]["details"]["max_fps"] == MAX_FPS
    assert by["spool"]["details"]["spool_depth"] == 3
    assert by["system"]["details"]["process_rss_mb"] > 5


def test_detector_judged_over_the_last_interval(tmp_path: Path, good_spool: Spool) -> None:
    pipeline = replace(GOOD_PIPELINE)
    reporter = HealthReporter(HealthConfig(clock_unsynced="healthy"), CameraIdentity(),
                              disk_path=tmp_path, pipeline_stats=lambda: pipeline,
                              spool_stats=good_spool.stats, uplink_stats=connected_uplink,
                              max_fps=lambda: MAX_FPS)
    t = 1000.0
    reporter.history.recent(t, pipeline)  # an earlier round
    # 30 s later: 90 more frames processed, 285 dropped -> 3 of 5 fps
    pipeline = replace(pipeline, frames=pipeline.frames + 90,
                       frames_dropped=pipeline.frames_dropped + 285)
    recent = reporter.history.recent(t + 30, pipeline)
    assert (recent.elapsed_s, recent.frames, recent.frames_dropped) == (30, 90, 285)
    # a pipeline restarted by SIGHUP starts counting at 0: no interval, no nonsense
    restarted = replace(pipeline, frames=10, frames_dropped=0)
    assert reporter.history.recent(t + 60, restarted).elapsed_s is None


def test_status_changes_are_logged_once(tmp_path: Path, good_spool: Spool, caplog: Any) -> None:
    pipeline = replace(GOOD_PIPELINE)
    reporter = HealthReporter(HealthConfig(clock_unsynced="healthy"), CameraIdentity(),
                              disk_path=tmp_path, pipeline_stats=lambda: pipeline,
                              spool_stats=good_spool.stats, uplink_stats=connected_uplink)
    with caplog.at_level(logging.INFO, logger="lpr_agent.health"):
        reporter.report()
        pipeline.last_frame_age_s = 100.0
        for _ in range(3):
            reporter.report()
        pipeline.last_frame_age_s = 0.1
        reporter.report()
    lines = [r.getMessage() for r in caplog.records if "camera" in r.getMessage()]
    assert lines == ["camera is now error (was healthy)", "camera is now healthy (was error)"]
