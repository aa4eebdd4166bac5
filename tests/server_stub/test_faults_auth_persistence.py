"""Fault injection, token auth and persistence across restarts and crashes."""

from __future__ import annotations

import threading
import time

import pytest
import requests
import socketio

from tests.helpers.payloads import detection, event_id, health, registration
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import StubProcess

# --- fault injection --------------------------------------------------------------


def test_admin_api_get_merge_reset(stub: StubProcess) -> None:
    base = stub.faults()
    assert base["fail_next"] == 0 and base["stall"] is False
    now = stub.faults(fail_next=2, ack_delay_ms=5)
    assert (now["fail_next"], now["ack_delay_ms"], now["fail_status"]) == (2, 5, 500)
    assert stub.faults(fail_status=503)["fail_next"] == 2  # merged, not replaced
    bad = requests.post(stub.url + "/admin/faults", json={"no_such": 1}, timeout=5)
    assert bad.status_code == 400
    bad = requests.post(stub.url + "/admin/faults", json={"fail_next": -1}, timeout=5)
    assert bad.status_code == 400
    assert stub.reset_faults()["fail_next"] == 0


def test_fail_next_rest_and_socketio(stub: StubProcess, cam: str) -> None:
    stub.faults(fail_next=2, fail_status=503)
    assert stub.post("/api/detection", json=detection(cam)).status_code == 503
    assert stub.post("/api/health", json=health(cam)).status_code == 503
    assert stub.post("/api/detection", json=detection(cam)).status_code == 200
    stub.faults(fail_next=1)
    with RecordingClient().connect(stub.url) as c:
        ack = c.call("lpr_data", detection(cam))
        assert ack["success"] is False and "injected" in ack["message"]
        assert c.wait_for("error")["message"] == ack["message"]
        assert c.call("lpr_data", detection(cam))["success"] is True
    assert len(stub.records(camera_id=cam)) == 2
    assert stub.faults()["injected_failures"] >= 3


def test_ack_delay(stub: StubProcess, cam: str) -> None:
    stub.faults(ack_delay_ms=400)
    with RecordingClient().connect(stub.url) as c:
        t0 = time.monotonic()
        c.call("lpr_data", detection(cam))
        assert time.monotonic() - t0 >= 0.4
        t0 = time.monotonic()
        stub.post("/api/detection", json=detection(cam))
        assert time.monotonic() - t0 >= 0.4


def test_withhold_acks_stores_without_answering(stub: StubProcess, cam: str) -> None:
    stub.faults(withhold_acks=True)
    with RecordingClient().connect(stub.url) as c:
        with pytest.raises(socketio.exceptions.TimeoutError):
            c.call("lpr_data", detection(cam), timeout=1)
        assert c.named("lpr_response") == []
        assert len(stub.records(camera_id=cam)) == 1
        stub.faults(withhold_acks=False)
        assert c.call("lpr_data", detection(cam))["success"] is True


def test_stall_holds_requests_until_cleared(stub: StubProcess, cam: str) -> None:
    stub.faults(stall=True)
    with RecordingClient().connect(stub.url) as c:
        with pytest.raises(socketio.exceptions.TimeoutError):
            c.call("ping", {"message": "x"}, timeout=0.5)
        with pytest.raises(requests.Timeout):
            requests.get(stub.url + "/api/test", timeout=0.5)
        assert stub.faults()["stall"] is True  # admin still answers
        stub.faults(stall=False)
        c.wait_for("pong")  # the held event is answered once the stall clears
        assert c.call("ping", {"message": "y"})["message"] == "pong"


def test_drop_connections_and_block_socketio(stub: StubProcess, cam: str) -> None:
    reconnected = threading.Event()
    c = RecordingClient(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.2)
    c.connect(stub.url)
    try:
        c.client.on("connect", lambda *a: reconnected.set())
        stub.faults(drop_connections=True)
        c.wait_for("disconnect")
        assert stub.faults()["drop_connections"] is False  # one-shot
        assert reconnected.wait(5), "client did not reconnect after a dropped connection"
        assert c.call("lpr_data", detection(cam))["success"] is True

        stub.faults(block_socketio=True)
        deadline = time.monotonic() + 5
        while len(c.named("disconnect")) < 2:  # the existing connection is cut too
            assert time.monotonic() < deadline, c.events
            time.sleep(0.02)
        with pytest.raises(socketio.exceptions.ConnectionError):
            RecordingClient().connect(stub.url, wait_timeout=3)
        assert stub.post("/api/detection", json=detection(cam)).status_code == 200  # REST works
    finally:
        stub.reset_faults()
        c.disconnect()
    with RecordingClient().connect(stub.url) as again:
        assert again.call("ping", {"message": "back"})["success"] is True


def test_delete_records_in_fault_mode(tmp_path) -> None:
    with StubProcess(tmp_path / "d.db", "--faults") as s:
        s.post("/api/detection", json=detection("c"))
        assert requests.delete(s.url + "/api/records", timeout=5).status_code == 200
        assert s.records() == []


# --- auth -------------------------------------------------------------------------


def test_token_auth(tmp_path, cam: str) -> None:
    with StubProcess(tmp_path / "auth.db", token="s3cret") as s:
        body = detection(cam)
        assert requests.post(s.url + "/api/detection", json=body, timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        r = requests.post(s.url + "/api/detection", json=body, headers=wrong, timeout=5)
        assert r.status_code == 401 and r.json()["success"] is False
        assert requests.get(s.url + "/api/records", timeout=5).status_code == 401
        assert s.post("/api/detection", json=body).status_code == 200

        with pytest.raises(socketio.exceptions.ConnectionError):
            RecordingClient().connect(s.url, wait_timeout=3)
        with pytest.raises(socketio.exceptions.ConnectionError):
            RecordingClient().connect(s.url, auth={"token": "nope"}, wait_timeout=3)
        with RecordingClient().connect(s.url, auth={"token": "s3cret"}) as c:
            assert c.call("lpr_data", detection(cam))["success"] is True
        assert len(s.records(camera_id=cam)) == 2


def test_token_from_environment(tmp_path) -> None:
    s = StubProcess(tmp_path / "env.db", env={"LPR_STUB_TOKEN": "envtok"})
    s.token = "envtok"  # so that the readiness probe authenticates
    s.args = []
    with s:
        assert requests.get(s.url + "/api/test", timeout=5).status_code == 401
        assert s.get("/api/test").status_code == 200


# --- persistence -------------------------------------------------------------------


def test_everything_survives_a_restart(tmp_path, cam: str) -> None:
    with StubProcess(tmp_path / "p.db") as s:
        s.post("/api/cameras/register", json=registration(cam, "chk-P"))
        eid = event_id()
        with RecordingClient().connect(s.url) as c:
            first = c.call(
                "lpr_data", detection(cam, "chk-P", event_id=eid, cropped_plates=["aGVsbG8="])
            )
            c.call("health_status", health(cam, "chk-P", status="warning"))
        before = s.records()
        s.restart()
        after = s.records()
        assert after == before
        assert s.get(after[0]["cropped_plate_urls"][0]).content == b"hello"
        assert len(s.health_records()) == 1
        [camera] = s.get("/api/cameras").json()["cameras"]
        assert (camera["camera_id"], camera["checkpoint_id"]) == (cam, "chk-P")
        assert camera["health_status"] == "warning" and camera["detection_count"] == 1
        # de-duplication also survives the restart
        again = s.post("/api/detection", json=detection(cam, "chk-P", event_id=eid)).json()
        assert again["duplicate"] is True and again["detection_id"] == first["detection_id"]
        # arrival numbers keep increasing
        s.post("/api/detection", json=detection(cam, "chk-P"))
        seqs = [r["arrival_seq"] for r in s.records()]
        assert seqs == sorted(seqs) and len(set(seqs)) == 2


def test_acked_records_survive_sigkill(tmp_path, cam: str) -> None:
    with StubProcess(tmp_path / "k.db") as s:
        acked = []
        with RecordingClient().connect(s.url) as c:
            for n in range(200):
                acked.append(
                    c.call("lpr_data", detection(cam, ocr_results=[f"K{n}"]))["detection_id"]
                )
        acked.append(s.post("/api/detection", json=detection(cam)).json()["detection_id"])
        s.restart(kill=True)  # SIGKILL, no clean shutdown
        assert [r["detection_id"] for r in s.records()] == acked


def test_freeze_and_thaw(tmp_path) -> None:
    with StubProcess(tmp_path / "f.db") as s:
        s.freeze()
        with pytest.raises(requests.Timeout):
            requests.get(s.url + "/api/test", timeout=0.5)
        s.thaw()
        assert s.get("/api/test").status_code == 200
