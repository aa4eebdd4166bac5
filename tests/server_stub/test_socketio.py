"""Socket.IO events of the stub (default mode) with the real python-socketio client."""

from __future__ import annotations

import base64
from datetime import datetime

from tests.helpers.payloads import detection, event_id, health, registration
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import StubProcess


def test_no_ordinary_connect_event(stub: StubProcess) -> None:
    with RecordingClient().connect(stub.url) as c:
        c.call("ping", {"type": "test", "message": "x"})
        # exactly the namespace connect (no data), no extra `connect` event
        assert c.named("connect") == [None]


def test_replies_are_events_and_acks(stub: StubProcess, cam: str) -> None:
    with RecordingClient().connect(stub.url) as c:
        ack = c.call("camera_register", registration(cam, "chk-S"))
        assert ack["success"] is True and ack["camera_id"] == cam
        assert ack["message"] == f"Camera {cam} registered successfully"
        assert c.wait_for("camera_register") == ack

        eid = event_id()
        ack = c.call("lpr_data", detection(cam, "chk-S", event_id=eid))
        assert ack["success"] is True and ack["duplicate"] is False
        assert (ack["camera_id"], ack["checkpoint_id"]) == (cam, "chk-S")
        assert datetime.fromisoformat(ack["timestamp"]).tzinfo is not None
        assert c.wait_for("lpr_response") == ack

        hack = c.call("health_status", health(cam, "chk-S"))
        assert hack["success"] is True and hack["health_id"]
        assert c.wait_for("health_response") == hack

        pong = c.call("ping", {"type": "test", "message": "Hello from AI Camera"})
        assert pong["message"] == "pong"
        assert pong["original_message"] == "Hello from AI Camera"
        assert c.wait_for("pong") == pong

        [record] = stub.records(camera_id=cam)
        assert record["detection_id"] == ack["detection_id"]
        assert record["event_id"] == eid and record["channel"] == "socketio"
        [camera] = [x for x in stub.get("/api/cameras").json()["cameras"] if x["camera_id"] == cam]
        assert camera["connected"] is True and camera["status"] == "online"


def test_errors_are_error_events_and_error_acks(stub: StubProcess, cam: str) -> None:
    with RecordingClient().connect(stub.url) as c:
        bad = detection(cam)
        del bad["checkpoint_id"]
        ack = c.call("lpr_data", bad)
        assert ack == {"success": False, "message": "Missing required field: checkpoint_id"}
        assert c.wait_for("error") == {"message": "Missing required field: checkpoint_id"}

        ack = c.call("health_status", health(cam, status="sunny"))
        assert ack["success"] is False and "status" in ack["message"]
        ack = c.call("camera_register", {"checkpoint_id": "x"})
        assert ack["message"] == "Missing required field: camera_id"
        ack = c.call("lpr_data", "just a string")
        assert ack["success"] is False
        ack = c.call("lpr_data")  # no payload at all
        assert ack["success"] is False
        assert len(c.named("error")) == 5
        assert stub.records(camera_id=cam) == []


def test_plain_emit_client_gets_reply_events(stub: StubProcess, cam: str) -> None:
    """A client written for deployed servers: emit + reply-event handlers, no acks."""
    with RecordingClient().connect(stub.url) as c:
        c.emit("camera_register", registration(cam))
        c.wait_for("camera_register")
        for n in range(3):
            c.emit("lpr_data", detection(cam, ocr_results=[f"E{n}"]))
        c.emit("health_status", health(cam))
        c.emit("ping", {"type": "test", "message": "hi"})
        c.wait_for("pong")
        c.wait_for("health_response")
        for _ in range(50):
            if len(c.named("lpr_response")) == 3:
                break
            c.wait_for("lpr_response", timeout=2)
        assert len(c.named("lpr_response")) == 3
        assert [r["ocr_results"] for r in stub.records(camera_id=cam)] == [["E0"], ["E1"], ["E2"]]


def test_idempotency_across_channels(stub: StubProcess, cam: str) -> None:
    eid = event_id()
    with RecordingClient().connect(stub.url) as c:
        first = c.call("lpr_data", detection(cam, event_id=eid))
        second = c.call("lpr_data", detection(cam, event_id=eid))
        assert second["duplicate"] is True
        assert second["detection_id"] == first["detection_id"]
        # the reply event carries the duplicate flag too
        c.wait_for("lpr_response", lambda d: d.get("duplicate") is True)
    rest = stub.post("/api/detection", json=detection(cam, event_id=eid)).json()
    assert rest["detection_id"] == first["detection_id"] and rest["duplicate"] is True
    assert len(stub.records(camera_id=cam)) == 1

    hid = event_id()
    h_rest = stub.post("/api/health", json=health(cam, event_id=hid)).json()
    with RecordingClient().connect(stub.url) as c:
        h_sio = c.call("health_status", health(cam, event_id=hid))
        assert (h_sio["health_id"], h_sio["duplicate"]) == (h_rest["health_id"], True)
        assert c.wait_for("health_response")["duplicate"] is True
    assert len(stub.health_records(camera_id=cam)) == 1


def test_rooms_and_broadcasts(stub: StubProcess, cam: str) -> None:
    with (
        RecordingClient().connect(stub.url) as dash,
        RecordingClient().connect(stub.url) as monitor,
        RecordingClient().connect(stub.url) as bystander,
        RecordingClient().connect(stub.url) as camera,
    ):
        assert dash.call("join_dashboard")["message"] == "Joined dashboard room"
        dash.wait_for("status", lambda d: d["message"] == "Joined dashboard room")
        monitor.call("join_health_room")
        monitor.wait_for("status", lambda d: "health" in d["message"])

        camera.call("camera_register", registration(cam, "chk-B"))
        status = dash.wait_for("camera_status", lambda d: d["camera_id"] == cam)
        assert status["status"] == "online" and status["checkpoint_id"] == "chk-B"

        ack = camera.call("lpr_data", detection(cam, "chk-B", ocr_results=["XYZ987"]))
        new = dash.wait_for("new_detection", lambda d: d["camera_id"] == cam)
        assert new["detection_id"] == ack["detection_id"]
        assert new["ocr_results"] == ["XYZ987"]
        for key in ("checkpoint_id", "vehicles_count", "plates_count", "timestamp"):
            assert key in new

        hack = camera.call(
            "health_status", health(cam, "chk-B", status="error", message="no frames")
        )
        upd = monitor.wait_for("health_update", lambda d: d["camera_id"] == cam)
        assert upd["health_id"] == hack["health_id"]
        assert (upd["status"], upd["component"], upd["message"]) == ("error", "camera", "no frames")

        # REST traffic is broadcast too in default mode
        rest = stub.post("/api/detection", json=detection(cam, "chk-B", ocr_results=["REST1"]))
        dash.wait_for("new_detection", lambda d: d["detection_id"] == rest.json()["detection_id"])
        hrest = stub.post("/api/health", json=health(cam, "chk-B")).json()
        monitor.wait_for("health_update", lambda d: d["health_id"] == hrest["health_id"])

        camera.disconnect()
        off = dash.wait_for(
            "camera_status", lambda d: d["camera_id"] == cam and d["status"] == "offline"
        )
        assert off["checkpoint_id"] == "chk-B"

        # rooms are separate and nobody else gets broadcasts
        assert monitor.named("new_detection") == []
        assert dash.named("health_update") == []
        assert bystander.named("new_detection") == bystander.named("health_update") == []
        assert bystander.named("camera_status") == []


def test_duplicates_are_not_rebroadcast(stub: StubProcess, cam: str) -> None:
    eid = event_id()
    with RecordingClient().connect(stub.url) as dash, RecordingClient().connect(stub.url) as c:
        dash.call("join_dashboard")
        c.call("lpr_data", detection(cam, event_id=eid))
        c.call("lpr_data", detection(cam, event_id=eid))
        marker = c.call("lpr_data", detection(cam))
        dash.wait_for("new_detection", lambda d: d["detection_id"] == marker["detection_id"])
        assert len([d for d in dash.named("new_detection") if d["camera_id"] == cam]) == 2


def test_large_images_over_socketio_and_limit(stub: StubProcess, cam: str) -> None:
    big = base64.b64encode(b"\xff\xd8" + b"j" * (5 * 1024 * 1024)).decode()
    with RecordingClient().connect(stub.url) as c:
        ack = c.call("lpr_data", detection(cam, annotated_image=big), timeout=30)
        assert ack["success"] is True
    [record] = stub.records(camera_id=cam)
    assert len(stub.get(record["annotated_image_url"]).content) == 5 * 1024 * 1024 + 2
    # beyond the 10 MB limit engine.io drops that connection; the stub goes on
    c = RecordingClient().connect(stub.url)
    c.emit("lpr_data", detection(cam, annotated_image="A" * (11 * 1024 * 1024)))
    c.wait_for("disconnect", timeout=10)
    c.disconnect()
    assert len(stub.records(camera_id=cam)) == 1
    with RecordingClient().connect(stub.url) as again:
        assert again.call("ping", {"message": "still here"})["success"] is True
