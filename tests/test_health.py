"""Health reporter: real psutil metrics, thresholds, one status per component."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lpr_agent.config import CameraIdentity
from lpr_agent.health import COMPONENTS, HealthConfig, HealthReporter, SystemSampler, evaluate
from lpr_agent.protocol import HealthStatus, parse_inbound

GOOD_PIPELINE = {"fps": 5.0, "last_frame_age_s": 0.2, "source_state": "ok",
                 "detector_latency_ms": 80.0}
GOOD_SPOOL = {"items": 3, "depth": {"detection": 2, "health": 1}, "oldest_age_s": 2.0,
              "dead_letters": 0, "drops": {"full": 0}}
GOOD_UPLINK = {"channel": "socketio", "connected": True, "last_ack_age_s": 1.0}


def _system(**over: Any) -> dict[str, Any]:
    base = {"cpu_usage": 10.0, "memory_usage": 20.0, "disk_usage": 30.0,
            "clock_sync": "synchronized"}
    return {**base, **over}


def test_system_sample_has_real_metrics(tmp_path: Path) -> None:
    sample = SystemSampler(tmp_path / "not-yet" / "state").sample()
    for key in ("cpu_usage", "memory_usage", "disk_usage"):
        assert isinstance(sample[key], float) and 0 <= sample[key] <= 100, key
    assert sample["memory_usage"] > 0 and sample["disk_usage"] > 0
    assert sample["process_rss_mb"] > 5  # a Python process with pydantic loaded
    assert sample["clock_sync"] in ("synchronized", "unsynchronized", "unknown")
    assert len(sample["load_avg"]) == 3


def test_all_healthy() -> None:
    out = evaluate(HealthConfig(), _system(), GOOD_PIPELINE, GOOD_SPOOL, GOOD_UPLINK)
    assert set(out) == set(COMPONENTS)
    for component, (state, message, details) in out.items():
        assert state == "healthy", (component, message)
        # deployed dashboards read these three from whatever component they show
        assert {"cpu_usage", "memory_usage", "disk_usage"} <= set(details), component
    assert out["camera"][1] == "Camera working normally"
    assert out["camera"][2]["fps"] == 5.0
    assert out["uplink"][2]["channel"] == "socketio"
    assert out["uplink"][2]["last_ack_age_s"] == 1.0
    assert out["spool"][2]["spool_depth"] == 3


def test_thresholds_warning_and_error() -> None:
    config = HealthConfig.model_validate({"cpu_percent": {"warning": 50}})
    out = evaluate(config, _system(cpu_usage=60.0, disk_usage=96.0), GOOD_PIPELINE,
                   GOOD_SPOOL, GOOD_UPLINK)
    state, message, _ = out["system"]
    assert state == "error" and "CPU 60.0%" in message and "disk 96.0%" in message

    stale = {**GOOD_PIPELINE, "last_frame_age_s": 30.0, "source_state": "reconnecting",
             "source_error": "cannot open /dev/video0"}
    out = evaluate(HealthConfig(), _system(), stale, GOOD_SPOOL, GOOD_UPLINK)
    assert out["camera"][0] == "warning"
    assert "no frame for 30s (cannot open /dev/video0)" in out["camera"][1]
    stale["last_frame_age_s"] = 61.0
    assert evaluate(HealthConfig(), _system(), stale, GOOD_SPOOL, GOOD_UPLINK)["camera"][0] \
        == "error"


def test_missing_camera_and_dead_server_are_reported() -> None:
    never = {"fps": 0.0, "last_frame_age_s": None, "source_state": "error",
             "source_error": "No such device"}
    old_spool = {"items": 500, "oldest_age_s": 4000.0, "dead_letters": 2,
                 "drops": {"detections_dropped": 7, "images_dropped": 0}}
    silent = {"channel": "none", "connected": False, "last_ack_at": time.time() - 2000,
              "last_error": "connection refused"}
    out = evaluate(HealthConfig(), _system(), never, old_spool, silent)
    assert out["camera"][0] == "error" and "No such device" in out["camera"][1]
    assert out["spool"][0] == "error" and "2 readings dead-lettered" in out["spool"][1]
    assert "7 readings dropped" in out["spool"][1] and out["spool"][2]["spool_drops"] == 7
    assert out["uplink"][0] == "error" and "no ack for 2000s" in out["uplink"][1]
    assert out["uplink"][2]["last_error"] == "connection refused"
    shedding = {"items": 10, "drops": {"images_dropped": 4, "health_coalesced": 9,
                                      "detections_dropped": 0}}
    out = evaluate(HealthConfig(), _system(), GOOD_PIPELINE, shedding, GOOD_UPLINK)
    assert out["spool"][0] == "warning"
    assert out["spool"][1] == "spool full, shed 4 images_dropped, 9 health_coalesced"
    # an idle link with nothing waiting is not a problem
    idle = evaluate(HealthConfig(), _system(), GOOD_PIPELINE, {"items": 0}, silent)
    assert idle["uplink"][0] == "healthy"


def test_stage_not_running_is_an_error() -> None:
    out = evaluate(HealthConfig(), _system(), None, None, None)
    for component in ("camera", "detector", "spool", "uplink"):
        assert out[component][0] == "error", component


def test_clock_unsynced_state_is_configurable() -> None:
    out = evaluate(HealthConfig(), _system(clock_sync="unsynchronized"), GOOD_PIPELINE,
                   GOOD_SPOOL, GOOD_UPLINK)
    assert out["system"][0] == "warning" and "clock" in out["system"][1]
    config = HealthConfig(clock_unsynced="healthy")
    out = evaluate(config, _system(clock_sync="unsynchronized"), GOOD_PIPELINE, GOOD_SPOOL,
                   GOOD_UPLINK)
    assert out["system"][0] == "healthy"


def test_reporter_emits_valid_protocol_messages(tmp_path: Path) -> None:
    put: list[list[dict[str, Any]]] = []

    def broken_stats() -> Any:
        raise RuntimeError("stage crashed")

    reporter = HealthReporter(
        HealthConfig(interval_s=1),
        CameraIdentity(camera_id="cam_h", checkpoint_id="cp_h"),
        disk_path=tmp_path,
        pipeline_stats=lambda: GOOD_PIPELINE,
        spool_stats=lambda: GOOD_SPOOL,
        uplink_stats=broken_stats,  # must not stop the other reports
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
    assert by["system"]["details"]["process_rss_mb"] > 5


def test_status_changes_are_logged_once(tmp_path: Path, caplog: Any) -> None:
    import logging

    pipeline = dict(GOOD_PIPELINE)
    reporter = HealthReporter(HealthConfig(clock_unsynced="healthy"), CameraIdentity(),
                              disk_path=tmp_path, pipeline_stats=lambda: pipeline,
                              spool_stats=lambda: GOOD_SPOOL, uplink_stats=lambda: GOOD_UPLINK)
    with caplog.at_level(logging.INFO, logger="lpr_agent.health"):
        reporter.report()
        pipeline["last_frame_age_s"] = 100.0
        for _ in range(3):
            reporter.report()
        pipeline["last_frame_age_s"] = 0.1
        reporter.report()
    lines = [r.getMessage() for r in caplog.records if "camera" in r.getMessage()]
    assert lines == ["camera is now error (was healthy)", "camera is now healthy (was error)"]
