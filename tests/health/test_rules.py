"""Health rules: each component judged by its job, on the stages' real snapshot types."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from lpr_agent.config import load_config
from lpr_agent.health import COMPONENTS, HealthConfig, Recent, evaluate
from lpr_agent.spool import Kind, Spool
from tests.health.builders import (
    GOOD_PIPELINE,
    MAX_FPS,
    Clock,
    connected_uplink,
    detection,
    health,
    silent_uplink,
    system,
)
from tests.health.conftest import OpenSpool

# One 30 s report interval of a camera delivering 12.5 fps, processed at 5 fps.
KEEPING_UP = Recent(elapsed_s=30.0, frames=150, frames_dropped=225)


def test_all_healthy(good_spool: Spool) -> None:
    out = evaluate(HealthConfig(), system(), GOOD_PIPELINE, good_spool.stats(),
                   connected_uplink(), max_fps=MAX_FPS, recent=KEEPING_UP)
    assert set(out) == set(COMPONENTS)
    for component, (state, message, details) in out.items():
        assert state == "healthy", (component, message)
        # deployed dashboards read these three from whatever component they show
        assert {"cpu_usage", "memory_usage", "disk_usage"} <= set(details), component
    assert out["camera"][1] == "Camera working normally"
    assert out["camera"][2]["fps"] == 5.0
    assert out["detector"][1] == "Detector keeping up"
    assert out["detector"][2]["target_fps"] == 5.0
    assert out["detector"][2]["fps_shortfall_percent"] == 0.0
    assert out["uplink"][2]["channel"] == "socketio"
    assert out["uplink"][2]["last_ack_age_s"] == pytest.approx(1.0, abs=0.5)
    assert out["spool"][2]["spool_depth"] == 3
    assert out["spool"][2]["spool_by_kind"] == {"detection": 2, "health": 1, "registration": 0}
    assert out["spool"][2]["spool_oldest_age_s"] == pytest.approx(2.0)


def test_camera_at_full_cpu_meeting_its_fps_is_healthy(good_spool: Spool) -> None:
    # The field report: a 2-core camera detecting flat out was "error (CPU 100.0%)".
    busy = system(cpu_usage=100.0, load_avg=[3.9, 3.7, 3.5])
    out = evaluate(HealthConfig(), busy, GOOD_PIPELINE, good_spool.stats(),
                   connected_uplink(), max_fps=MAX_FPS, recent=KEEPING_UP)
    assert out["system"][:2] == ("healthy", "System resources normal")
    assert out["system"][2]["cpu_usage"] == 100.0  # still reported, as a number
    assert out["detector"][:2] == ("healthy", "Detector keeping up")


def test_detector_falling_behind_is_a_warning_with_the_reason(good_spool: Spool) -> None:
    # 90 frames in 30 s = 3 fps where 5 were possible; the rest were dropped.
    behind = Recent(elapsed_s=30.0, frames=90, frames_dropped=285)
    slow = replace(GOOD_PIPELINE, fps=3.0, detector_mean_ms=330.0)
    state, message, details = evaluate(
        HealthConfig(), system(cpu_usage=100.0), slow, good_spool.stats(), connected_uplink(),
        max_fps=MAX_FPS, recent=behind)["detector"]
    assert state == "warning"
    assert message == ("falling behind: 3 fps of a 5 fps target "
                       "(40% short, 285 frames dropped in 30s)")
    assert details["fps_shortfall_percent"] == 40.0 and details["frames_dropped_recent"] == 285
    # far behind (1 fps of 5) is an error
    far = Recent(elapsed_s=30.0, frames=30, frames_dropped=345)
    assert evaluate(HealthConfig(), system(), slow, good_spool.stats(), connected_uplink(),
                    max_fps=MAX_FPS, recent=far)["detector"][0] == "error"


def test_target_is_what_the_camera_delivers_when_slower_than_max_fps(good_spool: Spool) -> None:
    # A 2 fps camera fully processed is keeping up, although 2 < max_fps 5.
    slow_camera = Recent(elapsed_s=30.0, frames=60, frames_dropped=0)
    out = evaluate(HealthConfig(), system(), replace(GOOD_PIPELINE, fps=2.0, source_fps=2.0),
                   good_spool.stats(), connected_uplink(), max_fps=MAX_FPS, recent=slow_camera)
    assert out["detector"][0] == "healthy" and out["detector"][2]["target_fps"] == 2.0
    # ... but processing 1 of its 2 fps (the other frame of each pair dropped) is behind
    half = Recent(elapsed_s=30.0, frames=30, frames_dropped=30)
    out = evaluate(HealthConfig(), system(), GOOD_PIPELINE, good_spool.stats(),
                   connected_uplink(), max_fps=MAX_FPS, recent=half)
    assert out["detector"][0] == "warning" and "1 fps of a 2 fps target" in out["detector"][1]


def test_first_report_judges_the_pipelines_recent_rates(good_spool: Spool) -> None:
    # No earlier snapshot: fps against min(max_fps, source_fps).
    out = evaluate(HealthConfig(), system(), replace(GOOD_PIPELINE, fps=2.5),
                   good_spool.stats(), connected_uplink(), max_fps=MAX_FPS)
    assert out["detector"][0] == "warning" and "50% short" in out["detector"][1]
    assert "frames dropped" not in out["detector"][1]  # no interval to count them in
    # a camera that delivers nothing is the camera's problem, not the detector's
    dark = Recent(elapsed_s=30.0, frames=0, frames_dropped=0)
    stale = replace(GOOD_PIPELINE, last_frame_age_s=30.0)
    out = evaluate(HealthConfig(), system(), stale, good_spool.stats(), connected_uplink(),
                   max_fps=MAX_FPS, recent=dark)
    assert out["detector"][0] == "healthy" and out["camera"][0] == "warning"


def test_system_thresholds_and_cpu_not_judged(good_spool: Spool) -> None:
    config = HealthConfig.model_validate({"memory_percent": {"warning": 50}})
    out = evaluate(config, system(cpu_usage=99.0, memory_usage=60.0, disk_usage=96.0),
                   GOOD_PIPELINE, good_spool.stats(), connected_uplink())
    state, message, _ = out["system"]
    assert state == "error" and message == "memory 60.0%; disk 96.0%"
    # a fixed temperature limit only where the operator sets one
    hot = system(temperature_c=80.0)
    assert evaluate(HealthConfig(), hot, GOOD_PIPELINE, good_spool.stats(),
                    connected_uplink())["system"][0] == "healthy"
    limited = HealthConfig.model_validate({"temperature_c": {"warning": 75, "error": 85}})
    assert evaluate(limited, hot, GOOD_PIPELINE, good_spool.stats(),
                    connected_uplink())["system"][:2] == ("warning", "temperature 80.0°C")


def test_board_throttling_and_thermal_trips(good_spool: Spool) -> None:
    pi = system(throttled=["under-voltage", "throttled"])
    state, message, _ = evaluate(HealthConfig(), pi, GOOD_PIPELINE, good_spool.stats(),
                                 connected_uplink())["system"]
    assert state == "warning"
    assert message == "board reports under-voltage; board reports throttled"
    trip = {"zone": "cpu-thermal", "trip": "passive", "temperature_c": 81.5, "trip_c": 80.0}
    state, message, _ = evaluate(HealthConfig(), system(thermal_trips=[trip]), GOOD_PIPELINE,
                                 good_spool.stats(), connected_uplink())["system"]
    assert (state, message) == (
        "warning", "cpu-thermal at 81.5°C, over its passive trip point (80°C)")
    critical = {**trip, "trip": "critical", "temperature_c": 96.0, "trip_c": 95.0}
    assert evaluate(HealthConfig(), system(thermal_trips=[critical]), GOOD_PIPELINE,
                    good_spool.stats(), connected_uplink())["system"][0] == "error"


def test_old_config_with_cpu_thresholds_still_loads(tmp_path) -> None:
    old = tmp_path / "agent.toml"
    old.write_text("[health.cpu_percent]\nwarning = 50\nerror = 90\n")
    assert load_config(old, environ={}).health.cpu_percent == {"warning": 50, "error": 90}


def test_camera_staleness(good_spool: Spool) -> None:
    stale = replace(GOOD_PIPELINE, last_frame_age_s=30.0, source_state="reconnecting",
                    source_error="cannot open /dev/video0", reconnects=3)
    out = evaluate(HealthConfig(), system(), stale, good_spool.stats(), connected_uplink())
    assert out["camera"][0] == "warning"
    assert "no frame for 30s (cannot open /dev/video0)" in out["camera"][1]
    assert out["camera"][2]["source_error"] == "cannot open /dev/video0"
    stale = replace(stale, last_frame_age_s=61.0)
    assert evaluate(HealthConfig(), system(), stale, good_spool.stats(),
                    connected_uplink())["camera"][0] == "error"


def test_camera_without_a_first_frame(good_spool: Spool) -> None:
    opening = replace(GOOD_PIPELINE, source_state="opening", fps=0.0, frames=0,
                      last_frame_age_s=None)
    out = evaluate(HealthConfig(), system(), opening, good_spool.stats(), connected_uplink(),
                   max_fps=MAX_FPS)
    assert out["camera"][:2] == ("warning", "no frame received yet")  # still starting
    assert "last_frame_age_s" not in out["camera"][2]
    assert out["detector"][0] == "healthy"  # nothing processed yet: nothing to judge
    failed = replace(opening, source_state="reconnecting", source_error="No such device")
    out = evaluate(HealthConfig(), system(), failed, good_spool.stats(), connected_uplink())
    assert out["camera"][:2] == (
        "error", "no frame received yet (source reconnecting: No such device)")


def test_missing_camera_and_dead_server_are_reported(open_spool: OpenSpool) -> None:
    never = replace(GOOD_PIPELINE, fps=0.0, frames=0, last_frame_age_s=None,
                    source_state="reconnecting", source_error="No such device", reconnects=12)
    # 509 readings: a put over the 502-item cap drops the 7 oldest at once; the
    # server rejects 2 for good; then 4000 s without delivery.
    clock = Clock()
    old = open_spool(clock, max_items=502, degrade_to=1.0)
    ids = old.put_many([(Kind.DETECTION, detection()) for _ in range(509)])
    old.dead_letter(ids[-2:], "invalid plate")
    clock.now += 4000
    old_spool = old.stats()
    assert (old_spool.items, old_spool.dead_letters) == (500, 2)  # the setup worked

    out = evaluate(HealthConfig(), system(), never, old_spool, silent_uplink())
    assert out["camera"][0] == "error" and "No such device" in out["camera"][1]
    assert out["spool"][0] == "error" and "2 readings dead-lettered" in out["spool"][1]
    assert "oldest reading waiting 4000" in out["spool"][1]
    assert "7 readings dropped (spool full) in the last 60 min, last 4000s ago" \
        not in out["spool"][1]  # 4000 s ago is outside the hour: history, not news
    assert out["spool"][2]["spool_drops"] == 7 and out["spool"][2]["spool_drops_recent"] == {}

    assert out["spool"][2]["spool_drops"] == 7
    assert out["uplink"][0] == "error" and "no ack for 2000s" in out["uplink"][1]
    assert out["uplink"][2]["last_error"] == "connection refused"
    assert out["uplink"][2]["link_state"] == "disconnected"


def test_lost_readings_are_an_error_while_recent(open_spool: OpenSpool) -> None:
    clock = Clock()
    spool = open_spool(clock, max_items=502, degrade_to=1.0)
    spool.put_many([(Kind.DETECTION, detection()) for _ in range(509)])
    clock.now += 120
    out = evaluate(HealthConfig(), system(), GOOD_PIPELINE, spool.stats(), connected_uplink(),
                   now=clock.now)
    assert out["spool"][0] == "error"
    assert "7 readings dropped (spool full) in the last 60 min, last 120s ago" in out["spool"][1]
    clock.now += 3600  # an hour later: no longer news, still counted
    out = evaluate(HealthConfig(), system(), GOOD_PIPELINE, spool.stats(), connected_uplink(),
                   now=clock.now)
    assert "dropped" not in out["spool"][1] and out["spool"][2]["spool_drops"] == 7


def test_spool_drops_count_only_while_recent(open_spool: OpenSpool) -> None:
    # Over both caps: images of the oldest detections go first, old health
    # snapshots are coalesced, no reading is lost.
    clock = Clock()
    shedding = open_spool(clock, max_items=13, degrade_to=1.0, max_bytes=18_500,
                          health_keep_per_component=1)
    shedding.put_many([(Kind.HEALTH, health("camera")) for _ in range(10)])
    shedding.put_many([(Kind.DETECTION, detection(image=True)) for _ in range(12)])
    shedding.maintain()
    out = evaluate(HealthConfig(), system(), GOOD_PIPELINE, shedding.stats(),
                   connected_uplink(), now=clock.now)
    assert out["spool"][0] == "warning"
    assert out["spool"][1] == ("spool full, shed 4 images_dropped, 9 health_coalesced "
                               "in the last 60 min")
    assert out["spool"][2]["spool_drops_by_reason"] == {
        "images_dropped": 4, "health_coalesced": 9, "detections_dropped": 0}
    # The same lifetime counters an hour later: no longer judged (only the
    # readings still waiting are, by their age), the history still in the details.
    clock.now += 3601
    out = evaluate(HealthConfig(), system(), GOOD_PIPELINE, shedding.stats(),
                   connected_uplink(), now=clock.now)
    assert out["spool"][:2] == ("error", "oldest reading waiting 3601s")
    assert out["spool"][2]["spool_drops"] == 13
    # an idle link with nothing waiting is not a problem
    idle = evaluate(HealthConfig(), system(), GOOD_PIPELINE, open_spool().stats(),
                    silent_uplink())
    assert idle["uplink"][0] == "healthy"


def test_stage_not_running_is_an_error() -> None:
    out = evaluate(HealthConfig(), system(), None, None, None)
    for component in ("camera", "detector", "spool", "uplink"):
        assert out[component][0] == "error", component


def test_detector_problems(good_spool: Spool) -> None:
    broken = replace(GOOD_PIPELINE, model_loaded=False, sink_errors=3, detector_mean_ms=3000.0)
    state, message, details = evaluate(HealthConfig(), system(), broken, good_spool.stats(),
                                       connected_uplink(), max_fps=MAX_FPS,
                                       recent=KEEPING_UP)["detector"]
    assert state == "error"
    assert message == ("detector latency 3000.0 ms; detector model not loaded; "
                       "3 readings could not be spooled")
    assert details["detections"] == 30 and details["detector_latency_ms"] == 3000.0


def test_clock_unsynced_state_is_configurable(good_spool: Spool) -> None:
    out = evaluate(HealthConfig(), system(clock_sync="unsynchronized"), GOOD_PIPELINE,
                   good_spool.stats(), connected_uplink())
    assert out["system"][0] == "warning" and "clock" in out["system"][1]
    config = HealthConfig(clock_unsynced="healthy")
    out = evaluate(config, system(clock_sync="unsynchronized"), GOOD_PIPELINE,
                   good_spool.stats(), connected_uplink())
    assert out["system"][0] == "healthy"


def test_salvaged_spool_is_reported_until_acknowledged(good_spool: Spool) -> None:
    from lpr_agent.spool.records import SalvageRecord

    now = time.time()
    salvage = SalvageRecord(at=now - 600, moved_to="/var/lib/lpr-agent/spool.db.corrupt-x",
                            recovered=120, lost=3, error="database disk image is malformed")
    stats = replace(good_spool.stats(), salvages=[salvage])
    state, message, details = evaluate(HealthConfig(), system(), GOOD_PIPELINE, stats,
                                       connected_uplink(), now=now)["spool"]
    assert state == "error"
    assert message == ("spool file was corrupt 10 min ago: 120 rows recovered, about 3 lost "
                       "(database disk image is malformed); acknowledge with "
                       "`lpr-agent spool ack-salvage`")
    assert details["spool_salvages"][0]["recovered"] == 120
    # Every row recovered is still an error until acknowledged: the disk corrupted a file.
    intact = replace(stats, salvages=[replace(salvage, lost=0)])
    assert evaluate(HealthConfig(), system(), GOOD_PIPELINE, intact, connected_uplink(),
                    now=now)["spool"][0] == "error"
    acknowledged = replace(stats, salvages=[])
    assert evaluate(HealthConfig(), system(), GOOD_PIPELINE, acknowledged, connected_uplink(),
                    now=now)["spool"][0] == "healthy"
