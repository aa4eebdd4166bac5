"""Health reporter: real psutil metrics, thresholds, one status per component."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lpr_agent.config import CameraIdentity
from lpr_agent.detect.pipeline import PipelineStats
from lpr_agent.health import COMPONENTS, HealthConfig, HealthReporter, SystemSampler, evaluate
from lpr_agent.protocol import HealthStatus, parse_inbound
from lpr_agent.spool import Kind, Spool, SpoolConfig
from lpr_agent.uplink import UplinkStats

# What DetectionPipeline.stats() returns for a camera delivering 5 fps.
GOOD_PIPELINE = PipelineStats(
    source_url="rtsp://10.0.0.7:554/stream1",
    source_state="running",
    source_error=None,
    source_fps=12.5,
    fps=5.0,
    frames=1800,
    frames_dropped=40,
    last_frame_age_s=0.2,
    reconnects=0,
    model_loaded=True,
    detector_mean_ms=80.0,
    stage_ms={"detect": 55.0, "recognise": 20.0, "filter": 5.0},
    plates_read=120,
    events_emitted=30,
    events_suppressed=12,
    active_tracks=1,
    model={"detector": "yolo-plates.onnx", "provider": "CPUExecutionProvider"},
)


def _connected_uplink(ack_age_s: float = 1.0) -> UplinkStats:
    return UplinkStats(channel="socketio", connected=True, ack_style="outcome", sent=33,
                       acked=32, in_flight=1, sio_connects=1,
                       last_ack_at=time.time() - ack_age_s, ack_latency_p50_ms=42.0)


def _silent_uplink() -> UplinkStats:
    """A server that has not acknowledged anything for 2000 s and refuses connections."""
    return UplinkStats(channel="none", connected=False, sent=40, acked=30, retried=10,
                       sio_connect_failures=25, last_ack_at=time.time() - 2000,
                       last_error="connection refused", last_error_at=time.time() - 5)


class _Clock:
    """The spool's wall clock, moved by hand to age its readings."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _detection(image: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {"event_id": str(uuid.uuid4()), "ocr_results": ["AB123CD"]}
    if image:
        payload["annotated_image"] = "x" * 2000  # stands in for a base64 JPEG
    return payload


def _health(component: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "component": component, "status": "healthy"}


OpenSpool = Callable[..., Spool]


@pytest.fixture
def open_spool(tmp_path: Path) -> Iterator[OpenSpool]:
    opened: list[Spool] = []

    def open_(clock: Callable[[], float] = time.time, **config: Any) -> Spool:
        # No automatic maintenance or disk check: the tests decide when the spool degrades.
        config = {"maintenance_interval_s": 3600, "min_free_disk_bytes": 0, **config}
        spool = Spool.open(SpoolConfig(path=tmp_path / f"spool{len(opened)}.db", **config),
                           clock=clock)
        opened.append(spool)
        return spool

    yield open_
    for spool in opened:
        spool.close()


@pytest.fixture
def good_spool(open_spool: OpenSpool) -> Spool:
    """Two detections and one health snapshot, the oldest waiting for 2 s."""
    clock = _Clock()
    spool = open_spool(clock)
    spool.put_many([(Kind.DETECTION, _detection()), (Kind.DETECTION, _detection()),
                    (Kind.HEALTH, _health("camera"))])
    clock.now += 2.0
    return spool


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


def test_all_healthy(good_spool: Spool) -> None:
    out = evaluate(HealthConfig(), _system(), GOOD_PIPELINE, good_spool.stats(),
                   _connected_uplink())
    assert set(out) == set(COMPONENTS)
    for component, (state, message, details) in out.items():
        assert state == "healthy", (component, message)
        # deployed dashboards read these three from whatever component they show
        assert {"cpu_usage", "memory_usage", "disk_usage"} <= set(details), component
    assert out["camera"][1] == "Camera working normally"
    assert out["camera"][2]["fps"] == 5.0
    assert out["uplink"][2]["channel"] == "socketio"
    assert out["uplink"][2]["last_ack_age_s"] == pytest.approx(1.0, abs=0.5)
    assert out["spool"][2]["spool_depth"] == 3
    assert out["spool"][2]["spool_by_kind"] == {"detection": 2, "health": 1, "registration": 0}
    assert out["spool"][2]["spool_oldest_age_s"] == pytest.approx(2.0)


def test_thresholds_warning_and_error(good_spool: Spool) -> None:
    config = HealthConfig.model_validate({"cpu_percent": {"warning": 50}})
    out = evaluate(config, _system(cpu_usage=60.0, disk_usage=96.0), GOOD_PIPELINE,
                   good_spool.stats(), _connected_uplink())
    state, message, _ = out["system"]
    assert state == "error" and "CPU 60.0%" in message and "disk 96.0%" in message

    stale = replace(GOOD_PIPELINE, last_frame_age_s=30.0, source_state="reconnecting",
                    source_error="cannot open /dev/video0", reconnects=3)
    out = evaluate(HealthConfig(), _system(), stale, good_spool.stats(), _connected_uplink())
    assert out["camera"][0] == "warning"
    assert "no frame for 30s (cannot open /dev/video0)" in out["camera"][1]
    assert out["camera"][2]["source_error"] == "cannot open /dev/video0"
    stale = replace(stale, last_frame_age_s=61.0)
    assert evaluate(HealthConfig(), _system(), stale, good_spool.stats(),
                    _connected_uplink())["camera"][0] == "error"


def test_camera_without_a_first_frame(good_spool: Spool) -> None:
    opening = replace(GOOD_PIPELINE, source_state="opening", fps=0.0, frames=0,
                      last_frame_age_s=None)
    out = evaluate(HealthConfig(), _system(), opening, good_spool.stats(), _connected_uplink())
    assert out["camera"][:2] == ("warning", "no frame received yet")  # still starting
    assert "last_frame_age_s" not in out["camera"][2]
    failed = replace(opening, source_state="reconnecting", source_error="No such device")
    out = evaluate(HealthConfig(), _system(), failed, good_spool.stats(), _connected_uplink())
    assert out["camera"][:2] == (
        "error", "no frame received yet (source reconnecting: No such device)")


def test_missing_camera_and_dead_server_are_reported(open_spool: OpenSpool) -> None:
    never = replace(GOOD_PIPELINE, fps=0.0, frames=0, last_frame_age_s=None,
                    source_state="reconnecting", source_error="No such device", reconnects=12)
    # 509 readings: a put over the 502-item cap drops the 7 oldest at once; the
    # server rejects 2 for good; then 4000 s without delivery.
    clock = _Clock()
    old = open_spool(clock, max_items=502, degrade_to=1.0)
    ids = old.put_many([(Kind.DETECTION, _detection()) for _ in range(509)])
    old.dead_letter(ids[-2:], "invalid plate")
    clock.now += 4000
    old_spool = old.stats()
    assert (old_spool.items, old_spool.dead_letters) == (500, 2)  # the setup worked

    out = evaluate(HealthConfig(), _system(), never, old_spool, _silent_uplink())
    assert out["camera"][0] == "error" and "No such device" in out["camera"][1]
    assert out["spool"][0] == "error" and "2 readings dead-lettered" in out["spool"][1]
    assert "oldest reading waiting 4000" in out["spool"][1]
    assert "7 readings dropped" in out["spool"][1] and out["spool"][2]["spool_drops"] == 7
    assert out["uplink"][0] == "error" and "no ack for 2000s" in out["uplink"][1]
    assert out["uplink"][2]["last_error"] == "connection refused"
    assert out["uplink"][2]["link_state"] == "disconnected"

    # Over both caps: images of the oldest detections go first, old health
    # snapshots are coalesced, no reading is lost.
    shedding = open_spool(max_items=13, degrade_to=1.0, max_bytes=18_500,
                          health_keep_per_component=1)
    shedding.put_many([(Kind.HEALTH, _health("camera")) for _ in range(10)])
    shedding.put_many([(Kind.DETECTION, _detection(image=True)) for _ in range(12)])
    shedding.maintain()
    out = evaluate(HealthConfig(), _system(), GOOD_PIPELINE, shedding.stats(),
                   _connected_uplink())
    assert out["spool"][0] == "warning"
    assert out["spool"][1] == "spool full, shed 4 images_dropped, 9 health_coalesced"
    assert out["spool"][2]["spool_drops_by_reason"] == {
        "images_dropped": 4, "health_coalesced": 9, "detections_dropped": 0}
    # an idle link with nothing waiting is not a problem
    idle = evaluate(HealthConfig(), _system(), GOOD_PIPELINE, open_spool().stats(),
                    _silent_uplink())
    assert idle["uplink"][0] == "healthy"


def test_stage_not_running_is_an_error() -> None:
    out = evaluate(HealthConfig(), _system(), None, None, None)
    for component in ("camera", "detector", "spool", "uplink"):
        assert out[component][0] == "error", component


def test_detector_problems(good_spool: Spool) -> None:
    broken = replace(GOOD_PIPELINE, model_loaded=False, sink_errors=3, detector_mean_ms=1500.0)
    state, message, details = evaluate(HealthConfig(), _system(), broken, good_spool.stats(),
                                       _connected_uplink())["detector"]
    assert state == "error"
    assert message == ("detector latency 1500.0 ms; detector model not loaded; "
                       "3 readings could not be spooled")
    assert details["detections"] == 30 and details["detector_latency_ms"] == 1500.0


def test_clock_unsynced_state_is_configurable(good_spool: Spool) -> None:
    out = evaluate(HealthConfig(), _system(clock_sync="unsynchronized"), GOOD_PIPELINE,
                   good_spool.stats(), _connected_uplink())
    assert out["system"][0] == "warning" and "clock" in out["system"][1]
    config = HealthConfig(clock_unsynced="healthy")
    out = evaluate(config, _system(clock_sync="unsynchronized"), GOOD_PIPELINE,
                   good_spool.stats(), _connected_uplink())
    assert out["system"][0] == "healthy"


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
    assert by["spool"]["details"]["spool_depth"] == 3
    assert by["system"]["details"]["process_rss_mb"] > 5


def test_status_changes_are_logged_once(tmp_path: Path, good_spool: Spool, caplog: Any) -> None:
    import logging

    pipeline = replace(GOOD_PIPELINE)
    reporter = HealthReporter(HealthConfig(clock_unsynced="healthy"), CameraIdentity(),
                              disk_path=tmp_path, pipeline_stats=lambda: pipeline,
                              spool_stats=good_spool.stats, uplink_stats=_connected_uplink)
    with caplog.at_level(logging.INFO, logger="lpr_agent.health"):
        reporter.report()
        pipeline.last_frame_age_s = 100.0
        for _ in range(3):
            reporter.report()
        pipeline.last_frame_age_s = 0.1
        reporter.report()
    lines = [r.getMessage() for r in caplog.records if "camera" in r.getMessage()]
    assert lines == ["camera is now error (was healthy)", "camera is now healthy (was error)"]
