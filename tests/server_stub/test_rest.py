"""REST endpoints of the stub (default mode) against a real process."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.helpers.payloads import (
    TINY_JPEG,
    TINY_JPEG_B64,
    detection,
    event_id,
    health,
    registration,
)
from tests.helpers.stub_process import StubProcess


def _offset_aware(stamp: str) -> bool:
    return datetime.fromisoformat(stamp).tzinfo is not None


def test_api_test(stub: StubProcess) -> None:
    body = stub.get("/api/test").json()
    assert body["success"] is True
    assert body["message"] == "Server is running"
    assert _offset_aware(body["timestamp"])


def test_register_detection_health_and_listings(stub: StubProcess, cam: str) -> None:
    r = stub.post("/api/cameras/register", json=registration(cam, "chk-A"))
    assert r.status_code == 200
    assert r.json() == {
        "success": True,
        "message": f"Camera {cam} registered successfully",
        "camera_id": cam,
        "checkpoint_id": "chk-A",
        "timestamp": r.json()["timestamp"],
    }

    eid = event_id()
    r = stub.post("/api/detection", json=detection(cam, "chk-A", event_id=eid, extra_field="kept"))
    assert r.status_code == 200
    reply = r.json()
    assert reply["success"] is True and reply["duplicate"] is False
    detection_id = reply["detection_id"]

    r = stub.post("/api/health", json=health(cam, "chk-A", status="warning", event_id=eid))
    assert r.status_code == 200
    health_id = r.json()["health_id"]
    assert health_id and r.json()["success"] is True

    [record] = stub.records(camera_id=cam)
    assert record["detection_id"] == detection_id
    assert record["event_id"] == eid
    assert record["checkpoint_id"] == "chk-A"
    assert record["ocr_results"] == ["ABC1234"]
    assert record["vehicles_count"] == 1 and record["plates_count"] == 1
    assert record["extra_field"] == "kept"  # unknown fields are kept
    assert record["channel"] == "rest"
    assert isinstance(record["arrival_seq"], int) and record["received_at"]
    assert record["seq"] is None  # the client sent none

    [hrec] = stub.health_records(camera_id=cam)
    assert hrec["health_id"] == health_id and hrec["status"] == "warning"
    assert hrec["event_id"] == eid  # health and detection ids live in separate spaces

    cameras = stub.get("/api/cameras").json()
    assert cameras["success"] is True
    mine = [c for c in cameras["cameras"] if c["camera_id"] == cam]
    assert len(mine) == 1
    assert mine[0]["checkpoint_id"] == "chk-A"
    assert mine[0]["status"] == "online"
    assert mine[0]["detection_count"] == 1
    assert mine[0]["health_status"] == "warning"
    assert cameras["total_cameras"] == len(cameras["cameras"])

    stats = stub.get("/api/statistics").json()
    assert stats["success"] is True
    data = stats["data"]
    for key in (
        "total_detections",
        "today_detections",
        "total_health_checks",
        "today_health_checks",
        "unique_cameras",
        "active_cameras",
        "connected_clients",
        "last_update",
        "server_status",
    ):
        assert key in data
    assert data["total_detections"] >= 1 and data["today_detections"] >= 1
    assert data["total_health_checks"] >= 1 and data["unique_cameras"] >= 1


def test_records_newest_n_oldest_first_and_filters(stub: StubProcess, cam: str) -> None:
    ids = []
    for n in range(5):
        r = stub.post("/api/detection", json=detection(cam, ocr_results=[f"P{n}"]))
        ids.append(r.json()["detection_id"])
    stub.post("/api/detection", json=detection(cam, "other-checkpoint"))
    body = stub.get(
        "/api/records", params={"limit": 3, "camera_id": cam, "checkpoint_id": "checkpoint_001"}
    ).json()
    assert body["total_count"] == 5
    assert body["returned_count"] == 3
    assert [r["detection_id"] for r in body["records"]] == ids[2:]
    seqs = [r["arrival_seq"] for r in body["records"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert stub.get("/api/records", params={"limit": "x"}).status_code == 400
    assert stub.get("/api/records", params={"limit": -1}).status_code == 400


def test_images_served_by_url_not_inlined(stub: StubProcess, cam: str) -> None:
    crop2 = base64.b64encode(b"\xff\xd8second\xff\xd9").decode()
    r = stub.post(
        "/api/detection",
        json=detection(
            cam,
            annotated_image="data:image/jpeg;base64," + TINY_JPEG_B64,
            cropped_plates=[TINY_JPEG_B64, crop2],
        ),
    )
    detection_id = r.json()["detection_id"]
    [record] = stub.records(camera_id=cam)
    assert "annotated_image" not in record and "cropped_plates" not in record
    assert record["annotated_image_url"] == f"/api/records/{detection_id}/image/annotated"
    assert record["cropped_plate_urls"] == [
        f"/api/records/{detection_id}/crops/0",
        f"/api/records/{detection_id}/crops/1",
    ]
    img = stub.get(record["annotated_image_url"])
    assert img.status_code == 200 and img.headers["Content-Type"] == "image/jpeg"
    assert img.content == TINY_JPEG
    assert stub.get(record["cropped_plate_urls"][1]).content == b"\xff\xd8second\xff\xd9"
    assert stub.get(f"/api/records/{detection_id}/crops/2").status_code == 404

    [inlined] = stub.records(camera_id=cam, images=1)
    assert base64.b64decode(inlined["annotated_image"]) == TINY_JPEG
    assert [base64.b64decode(c) for c in inlined["cropped_plates"]] == [
        TINY_JPEG,
        b"\xff\xd8second\xff\xd9",
    ]


def test_idempotent_event_id_over_rest(stub: StubProcess, cam: str) -> None:
    eid = event_id()
    first = stub.post("/api/detection", json=detection(cam, event_id=eid)).json()
    again = stub.post("/api/detection", json=detection(cam, event_id=eid)).json()
    assert again["duplicate"] is True
    assert again["detection_id"] == first["detection_id"]
    assert len(stub.records(camera_id=cam)) == 1

    hid = event_id()
    h1 = stub.post("/api/health", json=health(cam, event_id=hid)).json()
    h2 = stub.post("/api/health", json=health(cam, event_id=hid)).json()
    assert (h2["health_id"], h2["duplicate"]) == (h1["health_id"], True)
    assert len(stub.health_records(camera_id=cam)) == 1


def test_missing_fields_and_bad_values_are_400(stub: StubProcess, cam: str) -> None:
    cases = [
        (
            "/api/detection",
            {k: v for k, v in detection(cam).items() if k != "timestamp"},
            "Missing required field: timestamp",
        ),
        (
            "/api/detection",
            {k: v for k, v in detection(cam).items() if k != "type"},
            "Missing required field: type",
        ),
        ("/api/detection", detection(cam, timestamp="2024-12-19T10:00:00"), "offset"),
        ("/api/detection", detection(cam, timestamp="yesterday"), "ISO 8601"),
        ("/api/detection", detection(cam, vehicles_count=-1), "vehicles_count"),
        ("/api/detection", detection(cam, vehicles_count="many"), "vehicles_count"),
        (
            "/api/detection",
            detection(cam, plate_detections=[{"bbox": [3, 1, 2, 4], "confidence": 0.5}]),
            "bbox",
        ),
        ("/api/detection", detection(cam, annotated_image="not base64!"), "base64"),
        (
            # the stub decodes good images before validation: a bad one after a
            # good one must still be named
            "/api/detection",
            detection(cam, cropped_plates=[TINY_JPEG_B64, "not base64!"]),
            "Invalid field cropped_plates.1: image is not valid base64",
        ),
        ("/api/detection", detection(cam, event_id="not-a-uuid"), "event_id"),
        ("/api/health", health(cam, status="fine"), "status"),
        (
            "/api/health",
            {k: v for k, v in health(cam).items() if k != "component"},
            "Missing required field: component",
        ),
        ("/api/cameras/register", {"camera_id": cam}, "Missing required field: checkpoint_id"),
        ("/api/detection", [1, 2, 3], "JSON object"),
    ]
    for path, body, fragment in cases:
        r = stub.post(path, json=body)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["success"] is False
        assert fragment in r.json()["message"], (fragment, r.json())
    assert stub.records(camera_id=cam) == []


def test_non_json_body_is_400_with_message(stub: StubProcess) -> None:
    for body in (b"{not json", b"\xff\xfe\x00", b""):
        r = stub.post("/api/detection", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert "not valid JSON" in r.json()["message"]


def test_body_limit_413_and_still_serving(stub: StubProcess, cam: str) -> None:
    big = detection(cam, annotated_image="A" * (10 * 1024 * 1024 + 16))
    r = stub.post("/api/detection", json=big)
    assert r.status_code == 413
    assert r.json()["success"] is False
    # just under the limit is accepted
    ok = detection(cam, annotated_image=base64.b64encode(b"x" * (7 * 1024 * 1024)).decode())
    assert stub.post("/api/detection", json=ok).status_code == 200
    assert stub.get("/api/test").status_code == 200


def test_unknown_api_path_and_admin_absent_without_faults(tmp_path) -> None:
    with StubProcess(tmp_path / "plain.db") as plain:
        r = plain.get("/api/nope")
        assert r.status_code == 404 and r.json()["success"] is False
        assert requests.get(plain.url + "/admin/faults", timeout=5).status_code == 404
        assert requests.post(plain.url + "/admin/faults", json={}, timeout=5).status_code == 404
        assert requests.delete(plain.url + "/api/records", timeout=5).status_code == 405
        assert plain.stop() == 0  # SIGTERM -> clean exit 0


def test_console_script_and_port_in_use(tmp_path, stub: StubProcess) -> None:
    script = Path(sys.executable).with_name("lpr-server-stub")
    if not script.exists():
        pytest.skip(f"{script} not installed (pip install -e .)")
    # the port of the running shared stub is taken: a clean error, exit code 1
    r = subprocess.run(
        [str(script), "--port", str(stub.port), "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1
    assert "cannot start" in r.stderr
    assert stub.get("/api/test").status_code == 200
