"""--legacy mode: the deployed reference server's behaviour (protocol.md), and a
client written for deployed servers working unchanged against both modes."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import requests
import socketio

from tests.helpers.payloads import detection, event_id, health, registration
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import StubProcess


def _naive(stamp: str) -> bool:
    return datetime.fromisoformat(stamp).tzinfo is None


def test_acks_carry_no_data_outcome_arrives_first_as_event(
    legacy_stub: StubProcess, cam: str
) -> None:
    with RecordingClient().connect(legacy_stub.url) as c:
        assert c.call("camera_register", registration(cam)) is None
        assert len(c.named("camera_register")) == 1  # the event came before the ack
        assert c.call("lpr_data", detection(cam)) is None
        [reply] = c.named("lpr_response")
        assert reply["success"] is True and reply["camera_id"] == cam
        assert "duplicate" not in reply
        assert _naive(reply["timestamp"])
        assert c.call("health_status", health(cam)) is None
        assert c.named("health_response")[0]["health_id"]
        bad = detection(cam)
        del bad["camera_id"]
        assert c.call("lpr_data", bad) is None
        assert c.named("error") == [{"message": "Missing required field: camera_id"}]
        assert c.call("ping", {"type": "test", "message": "m"}) is None
        assert c.named("pong")[0]["original_message"] == "m"


def test_connect_event_with_data(legacy_stub: StubProcess) -> None:
    with RecordingClient().connect(legacy_stub.url) as c:
        c.call("ping", {"message": "x"})
        connects = c.named("connect")
        assert connects[0]["message"] == "Connected to LPR WebSocket Server"
        assert _naive(connects[0]["timestamp"])


def test_no_deduplication_event_id_stored(legacy_stub: StubProcess, cam: str) -> None:
    eid = event_id()
    with RecordingClient().connect(legacy_stub.url) as c:
        c.call("lpr_data", detection(cam, event_id=eid))
        c.call("lpr_data", detection(cam, event_id=eid))
        first, second = c.named("lpr_response")
        assert first["detection_id"] != second["detection_id"]
    legacy_stub.post("/api/detection", json=detection(cam, event_id=eid))
    records = legacy_stub.records(camera_id=cam)
    assert len(records) == 3 and {r["event_id"] for r in records} == {eid}


def test_non_json_body_is_500_saying_400(legacy_stub: StubProcess) -> None:
    r = legacy_stub.post(
        "/api/detection", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 500
    assert "400 Bad Request" in r.json()["message"]
    # missing fields are still a 400
    assert legacy_stub.post("/api/detection", json={"type": "detection_result"}).status_code == 400


def test_rest_not_broadcast(legacy_stub: StubProcess, cam: str) -> None:
    with (
        RecordingClient().connect(legacy_stub.url) as dash,
        RecordingClient().connect(legacy_stub.url) as c,
    ):
        dash.call("join_dashboard")
        dash.call("join_health_room")
        rest = legacy_stub.post("/api/detection", json=detection(cam)).json()
        legacy_stub.post("/api/health", json=health(cam))
        c.call("lpr_data", detection(cam, ocr_results=["SIO"]))
        sio_det = dash.wait_for("new_detection", lambda d: d["camera_id"] == cam)
        assert sio_det["ocr_results"] == ["SIO"]
        c.call("health_status", health(cam, status="warning"))
        upd = dash.wait_for("health_update", lambda d: d["camera_id"] == cam)
        assert upd["status"] == "warning"
        ids = [d["detection_id"] for d in dash.named("new_detection")]
        assert rest["detection_id"] not in ids
        assert len(dash.named("health_update")) == 1


def test_rest_registration_breaks_socketio_for_that_camera(
    legacy_stub: StubProcess, cam: str
) -> None:
    assert legacy_stub.post("/api/cameras/register", json=registration(cam)).status_code == 200
    with RecordingClient().connect(legacy_stub.url) as c:
        assert c.call("camera_register", registration(cam)) is None
        assert c.named("error") == [{"message": "'clients'"}]
        assert c.call("lpr_data", detection(cam)) is None
        assert c.named("error")[-1] == {"message": "'detections'"}
        assert c.named("lpr_response") == []
    assert len(legacy_stub.records(camera_id=cam)) == 1  # stored despite the error


def test_socketio_cameras_vanish_when_connection_drops(legacy_stub: StubProcess, cam: str) -> None:
    def listed() -> bool:
        cams = legacy_stub.get("/api/cameras").json()["cameras"]
        return any(c["camera_id"] == cam for c in cams)

    c = RecordingClient().connect(legacy_stub.url)
    c.call("camera_register", registration(cam))
    assert listed()
    c.disconnect()
    for _ in range(50):
        if not listed():
            break
        threading.Event().wait(0.05)
    assert not listed()


def test_statistics_500_after_a_malformed_timestamp(tmp_path) -> None:
    with StubProcess(tmp_path / "legacy.db", "--legacy") as s:
        assert s.get("/api/statistics").status_code == 200
        s.post("/api/detection", json=detection("c1", timestamp="not-a-time"))
        r = s.get("/api/statistics")
        assert r.status_code == 500 and r.json()["success"] is False


class DeployedStyleClient:
    """Written against deployed servers: plain ``emit``, reply-event handlers,
    a ``connect`` handler that accepts the legacy data, and ``requests.post``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.Client(reconnection=False)
        self.responses: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.got = threading.Semaphore(0)

        @self.sio.on("connect")
        def on_connect(data: Any = None) -> None:
            pass

        @self.sio.on("lpr_response")
        def on_response(data: dict[str, Any]) -> None:
            self.responses.append(data)
            self.got.release()

        @self.sio.on("health_response")
        def on_health(data: dict[str, Any]) -> None:
            self.responses.append(data)
            self.got.release()

        @self.sio.on("camera_register")
        def on_registered(data: dict[str, Any]) -> None:
            self.responses.append(data)
            self.got.release()

        @self.sio.on("error")
        def on_error(data: dict[str, Any]) -> None:
            self.errors.append(data)
            self.got.release()

    def run(self, camera_id: str) -> None:
        self.sio.connect(self.url, wait_timeout=10)
        try:
            self.sio.emit("camera_register", registration(camera_id))
            self.sio.emit("lpr_data", detection(camera_id))
            self.sio.emit("health_status", health(camera_id))
            for _ in range(3):
                assert self.got.acquire(timeout=5)
        finally:
            self.sio.disconnect()
        r = requests.post(self.url + "/api/detection", json=detection(camera_id), timeout=10)
        assert r.status_code == 200 and r.json()["success"] is True
        r = requests.post(self.url + "/api/health", json=health(camera_id), timeout=10)
        assert r.status_code == 200 and r.json()["health_id"]


def test_deployed_style_client_works_unchanged(any_stub: StubProcess, cam: str) -> None:
    client = DeployedStyleClient(any_stub.url)
    client.run(cam)
    assert client.errors == []
    assert [("detection_id" in r, "health_id" in r) for r in client.responses] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert len(any_stub.records(camera_id=cam)) == 2
    assert len(any_stub.health_records(camera_id=cam)) == 2
