"""Issue 10 (stub part): the camera's ``seq`` — stored, validated, creation order,
gaps per camera and kind in /api/cameras; arrival order is ``arrival_seq``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers.payloads import detection, event_id, health
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import StubProcess


def _camera(stub: StubProcess, cam: str) -> dict:
    [entry] = [c for c in stub.get("/api/cameras").json()["cameras"] if c["camera_id"] == cam]
    return entry


def _gaps(stub: StubProcess, cam: str) -> tuple:
    c = _camera(stub, cam)
    return (c["detection_last_seq"], c["detection_missing_seq"],
            c["health_last_seq"], c["health_missing_seq"])  # fmt: skip


def test_records_listed_in_the_cameras_creation_order(stub: StubProcess, cam: str) -> None:
    with RecordingClient().connect(stub.url) as dash:
        dash.call("join_dashboard")
        # arrival order 3, 1, 2 (a reading resent after a failure arrives late)
        for seq in (3, 1):
            stub.post("/api/detection", json=detection(cam, seq=seq, ocr_results=[f"S{seq}"]))
        with RecordingClient().connect(stub.url) as c:
            assert c.call("lpr_data", detection(cam, seq=2, ocr_results=["S2"]))["success"]
        news = dash.wait_for("new_detection", lambda d: d["ocr_results"] == ["S2"])
        assert news["seq"] == 2 and isinstance(news["arrival_seq"], int)
    by_camera = stub.records(camera_id=cam)
    assert [r["seq"] for r in by_camera] == [1, 2, 3]
    assert [r["ocr_results"] for r in by_camera] == [["S1"], ["S2"], ["S3"]]
    arrival = [r for r in stub.records() if r["camera_id"] == cam]
    assert [r["seq"] for r in arrival] == [3, 1, 2]
    assert [r["arrival_seq"] for r in arrival] == sorted(r["arrival_seq"] for r in arrival)


def test_messages_without_seq_sort_first_by_arrival(stub: StubProcess, cam: str) -> None:
    stub.post("/api/detection", json=detection(cam, seq=1, ocr_results=["NEW"]))
    stub.post("/api/detection", json=detection(cam, ocr_results=["OLD1"]))
    stub.post("/api/detection", json=detection(cam, ocr_results=["OLD2"]))
    got = [r["ocr_results"][0] for r in stub.records(camera_id=cam)]
    assert got == ["OLD1", "OLD2", "NEW"]


def test_gaps_per_camera_and_kind(stub: StubProcess, cam: str) -> None:
    eid = event_id()
    for seq in (1, 2):
        stub.post("/api/detection", json=detection(cam, seq=seq))
    stub.post("/api/detection", json=detection(cam, seq=5, event_id=eid))
    assert _gaps(stub, cam) == (5, 2, None, 0)  # 3 and 4 never arrived (yet)
    # a resend of the same reading is no new reading
    again = stub.post("/api/detection", json=detection(cam, seq=5, event_id=eid)).json()
    assert again["duplicate"] is True
    assert _gaps(stub, cam) == (5, 2, None, 0)
    stub.post("/api/detection", json=detection(cam, seq=4))
    stub.post("/api/health", json=health(cam, seq=1))
    stub.post("/api/health", json=health(cam, seq=3))
    assert _gaps(stub, cam) == (5, 1, 3, 1)
    stub.post("/api/detection", json=detection(cam, seq=3))
    assert _gaps(stub, cam) == (5, 0, 3, 1)
    assert _camera(stub, cam)["detection_count"] == 5


@pytest.mark.parametrize("bad", [0, -1, 2**53 + 1, "5", 5.5, True, [1]])
def test_bad_seq_is_rejected_and_not_stored(stub: StubProcess, cam: str, bad) -> None:
    r = stub.post("/api/detection", json=detection(cam, seq=bad))
    assert r.status_code == 400 and "seq" in r.json()["message"]
    assert stub.post("/api/health", json=health(cam, seq=bad)).status_code == 400
    with RecordingClient().connect(stub.url) as c:
        ack = c.call("lpr_data", detection(cam, seq=bad))
        assert ack["success"] is False and "seq" in ack["message"]
    assert stub.records(camera_id=cam) == [] and stub.health_records(camera_id=cam) == []
    assert stub.post("/api/detection", json=detection(cam, seq=2**53)).status_code == 200


def test_legacy_stores_seq_and_counts_repeats_once(legacy_stub: StubProcess, cam: str) -> None:
    eid = event_id()
    for _ in range(2):  # the deployed server stores every send
        legacy_stub.post("/api/detection", json=detection(cam, seq=2, event_id=eid))
    legacy_stub.post("/api/detection", json=detection(cam, seq="junk"))
    records = legacy_stub.records(camera_id=cam)
    assert sorted(str(r["seq"]) for r in records) == ["2", "2", "junk"]
    assert [r["event_id"] for r in records if r["seq"] == 2] == [eid, eid]
    assert _gaps(legacy_stub, cam)[:2] == (2, 1)  # seq 1 missing, 2 counted once


def test_gap_counts_survive_a_restart(tmp_path, cam: str) -> None:
    with StubProcess(tmp_path / "g.db") as s:
        for seq in (1, 4):
            s.post("/api/detection", json=detection(cam, seq=seq))
        before = _gaps(s, cam)
        s.restart(kill=True)
        assert _gaps(s, cam) == before == (4, 2, None, 0)


V1_SCHEMA = """
CREATE TABLE "records" ("seq" INTEGER PRIMARY KEY, "detection_id" TEXT, "event_id" TEXT,
  "camera_id" TEXT, "checkpoint_id" TEXT, "timestamp" TEXT, "received_at" TEXT, "channel" TEXT,
  "vehicles_count" INTEGER, "plates_count" INTEGER, "ocr_results" TEXT, "payload" TEXT,
  "has_annotated" INTEGER, "crops" INTEGER);
CREATE UNIQUE INDEX "idx_records_detection_id" ON "records" ("detection_id");
CREATE TABLE "images" ("id" INTEGER PRIMARY KEY, "data" BLOB);
CREATE TABLE "health" ("seq" INTEGER PRIMARY KEY, "health_id" TEXT, "event_id" TEXT,
  "camera_id" TEXT, "checkpoint_id" TEXT, "timestamp" TEXT, "received_at" TEXT, "channel" TEXT,
  "component" TEXT, "status" TEXT, "message" TEXT, "payload" TEXT);
CREATE TABLE "cameras" ("camera_id" TEXT PRIMARY KEY, "checkpoint_id" TEXT,
  "registered_at" TEXT, "registered_via" TEXT);
"""


def test_a_file_of_the_first_stub_is_upgraded(tmp_path: Path) -> None:
    """Schema of the stub before issue 10/11 (``seq`` = arrival), as sqlite-utils made it."""
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript(V1_SCHEMA)
    eid = event_id()
    row = ("cam-v1", "chk", "2024-12-19T10:00:00+00:00", "2024-12-19T10:00:01.000+00:00",
           "rest", 1, 1, '["KA01AB1"]')  # fmt: skip
    for n, event in enumerate((eid, eid, None)):  # legacy mode had stored a repeat
        payload = json.dumps({"type": "detection_result", "event_id": event})
        conn.execute(
            "INSERT INTO records (detection_id, event_id, camera_id, checkpoint_id, timestamp, "
            "received_at, channel, vehicles_count, plates_count, ocr_results, payload, "
            "has_annotated, crops) VALUES (?,?,?,?,?,?,?,?,?,?,?,0,0)",
            (f"d{n}", event, *row, payload),
        )
    conn.execute(
        "INSERT INTO health (health_id, camera_id, checkpoint_id, timestamp, received_at, "
        "channel, component, status, message, payload) VALUES "
        "('h0', 'cam-v1', 'chk', 'x', '2024-12-19T10:00:02.000+00:00', 'rest', 'camera', "
        "'warning', 'hot', '{}')"
    )
    conn.execute("INSERT INTO cameras VALUES ('cam-reg', 'chk2', '2024-12-18T00:00:00Z', 'rest')")
    conn.commit()
    conn.close()
    with StubProcess(db) as s:
        records = s.records()
        assert [r["detection_id"] for r in records] == ["d0", "d1", "d2"]
        assert [r["arrival_seq"] for r in records] == [1, 2, 3]
        assert all(r["seq"] is None for r in records)
        assert [r["event_id"] for r in records] == [eid, eid, None]
        assert len(s.records(plate="KA01")) == 3
        cameras = {c["camera_id"]: c for c in s.get("/api/cameras").json()["cameras"]}
        assert cameras["cam-v1"]["detection_count"] == 3
        assert cameras["cam-v1"]["health_status"] == "warning"
        assert cameras["cam-reg"]["registered_at"] == "2024-12-18T00:00:00Z"
        # de-duplication now comes from the unique index
        again = s.post("/api/detection", json=detection("cam-v1", event_id=eid)).json()
        assert again["duplicate"] is True and again["detection_id"] == "d0"
