"""``GET /metrics`` of a real stub process: valid Prometheus exposition
(checked by Debian's ``promtool``), behind the token, values that follow
what the stub stores and who is connected."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.payloads import detection, event_id, health, registration
from tests.helpers.prereq import require_executable
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import StubProcess

TOKEN = "metrics-token"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubProcess]:
    db = tmp_path_factory.mktemp("metrics") / "stub.db"
    with StubProcess(db, token=TOKEN) as proc:
        yield proc


def scrape(stub: StubProcess) -> str:
    r = requests.get(
        stub.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return r.text


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_exposition_passes_promtool(stub: StubProcess, cam: str) -> None:
    promtool = require_executable("promtool")
    stub.post("/api/detection", json=detection(cam, event_id=event_id()))
    stub.post("/api/health", json=health(cam, event_id=event_id()))
    text = scrape(stub)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    # promtool also lints (names, units, HELP): any finding is printed and fails.
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    assert "lpr_stub_detections_stored_total" in text


def test_values_follow_what_is_stored(stub: StubProcess, cam: str) -> None:
    before = samples(scrape(stub))
    started = time.time()
    det = "lpr_stub_detections_stored_total"
    hl = "lpr_stub_health_stored_total"
    assert value(before, det, camera_id=cam, channel="rest") == 0
    for _ in range(3):
        stub.post("/api/detection", json=detection(cam, event_id=event_id()))
    repeated = detection(cam, event_id=event_id())
    assert stub.post("/api/detection", json=repeated).json()["duplicate"] is False
    assert stub.post("/api/detection", json=repeated).json()["duplicate"] is True
    stub.post("/api/health", json=health(cam, event_id=event_id()))
    with RecordingClient().connect(stub.url, auth={"token": TOKEN}) as camera:
        camera.call("camera_register", registration(cam))
        camera.call("lpr_data", detection(cam, event_id=event_id()))
        during = samples(scrape(stub))
    finished = time.time()
    assert value(during, det, camera_id=cam, channel="rest") == 4  # the repeat is stored once
    assert value(during, det, camera_id=cam, channel="socketio") == 1
    assert value(during, hl, camera_id=cam, channel="rest") == 1
    assert (
        value(during, "lpr_stub_cameras_connected")
        == value(before, "lpr_stub_cameras_connected") + 1
    )
    assert value(during, "lpr_stub_socketio_connections") >= 1
    dup = "lpr_stub_duplicates_total"
    assert value(during, dup) == value(before, dup) + 1
    seen = value(during, "lpr_stub_camera_last_seen_timestamp_seconds", camera_id=cam)
    assert started - 0.001 <= seen <= finished  # received_at has millisecond resolution
    # the connection is gone: the gauge follows at the next scrape
    deadline = time.monotonic() + 5
    while value(samples(scrape(stub)), "lpr_stub_cameras_connected") != value(
        before, "lpr_stub_cameras_connected"
    ):
        assert time.monotonic() < deadline, "cameras_connected did not drop after disconnect"
        time.sleep(0.05)


def test_missing_readings_follow_the_cameras_seq(stub: StubProcess, cam: str) -> None:
    name = "lpr_stub_camera_missing_readings"
    for seq in (1, 2, 5):  # 3 and 4 never arrive
        stub.post("/api/detection", json=detection(cam, event_id=event_id(), seq=seq))
    stub.post("/api/health", json=health(cam, event_id=event_id(), seq=1))
    found = samples(scrape(stub))
    assert value(found, name, camera_id=cam, kind="detection") == 2
    assert value(found, name, camera_id=cam, kind="health") == 0
    assert (name, (("camera_id", cam), ("kind", "health"))) in found  # present, and 0
    for seq in (3, 4):  # the late ones come in: nothing missing any more
        stub.post("/api/detection", json=detection(cam, event_id=event_id(), seq=seq))
    assert value(samples(scrape(stub)), name, camera_id=cam, kind="detection") == 0


def test_dashboard_clients_are_counted(stub: StubProcess) -> None:
    base = value(samples(scrape(stub)), "lpr_stub_dashboard_clients")
    with RecordingClient().connect(stub.url, auth={"token": TOKEN, "dashboard": True}) as dash:
        dash.emit("join_dashboard")
        deadline = time.monotonic() + 5
        while value(samples(scrape(stub)), "lpr_stub_dashboard_clients") != base + 1:
            assert time.monotonic() < deadline, "the dashboard client was not counted"
            time.sleep(0.05)


def test_counts_survive_a_restart(tmp_path, cam: str) -> None:
    with StubProcess(tmp_path / "restart.db", token=TOKEN) as stub:
        for _ in range(2):
            stub.post("/api/detection", json=detection(cam, event_id=event_id()))
        stub.restart()
        found = samples(scrape(stub))
        assert value(found, "lpr_stub_detections_stored_total", camera_id=cam, channel="rest") == 2


def test_openmetrics_when_asked(stub: StubProcess) -> None:
    accept = "application/openmetrics-text; version=1.0.0"
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": accept}
    r = requests.get(stub.url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(r.text)}
    assert {"lpr_stub_detections_stored", "lpr_stub_dashboard_clients"} <= names


@pytest.mark.parametrize(
    "headers,query",
    [({}, ""), ({"Authorization": "Bearer wrong"}, ""), ({}, f"?token={TOKEN}")],
)
def test_metrics_need_the_bearer_token(stub: StubProcess, headers: dict, query: str) -> None:
    r = requests.get(stub.url + "/metrics" + query, headers=headers, timeout=10)
    assert r.status_code == 401
    assert "lpr_stub" not in r.text
