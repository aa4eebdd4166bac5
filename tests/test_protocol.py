"""Validation of the wire models (lpr_agent/protocol.py) as users expect it."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from lpr_agent.protocol import (
    MAX_ID_LEN,
    CameraRegistration,
    DetectionReply,
    DetectionResult,
    ErrorReply,
    HealthStatus,
    NewDetection,
    Ping,
    PlateDetection,
    VehicleDetection,
    format_timestamp,
    now_timestamp,
    parse_inbound,
)

JPEG_B64 = base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9").decode()


def det(**extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "detection_result",
        "camera_id": "camera_001",
        "checkpoint_id": "checkpoint_001",
        "timestamp": "2024-12-19T10:00:00Z",
    }
    msg.update(extra)
    return msg


def hc(**extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "health_check",
        "camera_id": "camera_001",
        "checkpoint_id": "checkpoint_001",
        "timestamp": "2024-12-19T10:00:00+00:00",
        "component": "camera",
        "status": "healthy",
    }
    msg.update(extra)
    return msg


def rejects(model: type, data: Any, *fragments: str) -> str:
    with pytest.raises(ValueError) as info:
        parse_inbound(model, data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- the protocol.md example and defaults -----------------------------------------


def test_protocol_example_detection_round_trips() -> None:
    data = det(
        vehicles_count=1,
        plates_count=1,
        ocr_results=["ABC1234"],
        vehicle_detections=[{"bbox": [100, 100, 200, 200], "confidence": 0.95, "class": "car"}],
        plate_detections=[{"bbox": [150, 150, 180, 170], "confidence": 0.92, "text": "ABC1234"}],
        processing_time_ms=150,
        annotated_image=JPEG_B64,
        cropped_plates=[JPEG_B64],
    )
    msg = parse_inbound(DetectionResult, data)
    assert msg.vehicle_detections[0].vehicle_class == "car"
    wire = msg.wire()
    assert wire["vehicle_detections"][0]["class"] == "car"  # alias on the wire
    assert "vehicle_class" not in wire["vehicle_detections"][0]
    assert wire["ocr_results"] == ["ABC1234"]
    assert "event_id" not in wire  # unset optional extension is not sent
    assert parse_inbound(DetectionResult, wire).wire() == wire


def test_defaults_for_optional_fields() -> None:
    msg = parse_inbound(DetectionResult, det())
    assert (msg.vehicles_count, msg.plates_count, msg.ocr_results) == (0, 0, [])
    assert msg.vehicle_detections == [] and msg.cropped_plates == []
    assert msg.processing_time_ms == 0 and msg.annotated_image is None
    health = parse_inbound(HealthStatus, hc())
    assert health.details == {} and health.message == ""


# --- required fields ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["type", "camera_id", "checkpoint_id", "timestamp"])
def test_detection_missing_required_field(field: str) -> None:
    data = det()
    del data[field]
    assert rejects(DetectionResult, data) == f"Missing required field: {field}"
    assert rejects(DetectionResult, {**det(), field: ""}) == f"Missing required field: {field}"


@pytest.mark.parametrize("field", ["component", "status", "timestamp"])
def test_health_missing_required_field(field: str) -> None:
    data = hc()
    del data[field]
    assert rejects(HealthStatus, data) == f"Missing required field: {field}"


def test_registration_needs_ids_but_not_timestamp() -> None:
    assert parse_inbound(CameraRegistration, {"camera_id": "c", "checkpoint_id": "k"})
    assert (
        rejects(CameraRegistration, {"camera_id": "c"}) == "Missing required field: checkpoint_id"
    )


@pytest.mark.parametrize("body", [[], "text", 3, None, [det()]])
def test_top_level_must_be_an_object(body: Any) -> None:
    rejects(DetectionResult, body, "JSON object")


# --- timestamps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-12-19T10:00:00Z",
        "2024-12-19T10:00:00+00:00",
        "2024-12-19T12:00:00.123+02:00",
        "2024-12-19T10:00:00.000000-05:30",
    ],
)
def test_timestamps_with_offset_accepted(stamp: str) -> None:
    assert parse_inbound(DetectionResult, det(timestamp=stamp)).timestamp == stamp


def test_naive_timestamp_rejected_with_clear_message() -> None:
    msg = rejects(DetectionResult, det(timestamp="2024-12-19T10:00:00"), "timestamp", "offset")
    assert "2024-12-19T10:00:00Z" in msg  # tells how to fix it


@pytest.mark.parametrize("stamp", ["yesterday", "2024-13-45T10:00:00Z", "10:00", 1734602400])
def test_garbage_timestamp_rejected(stamp: Any) -> None:
    rejects(HealthStatus, hc(timestamp=stamp), "timestamp")


def test_format_and_now_timestamp() -> None:
    moment = datetime(2024, 12, 19, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2024-12-19T10:00:00.000+00:00"
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2024, 12, 19, 10, 0))
    now = datetime.fromisoformat(now_timestamp())
    assert now.tzinfo is not None and abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    parse_inbound(DetectionResult, det(timestamp=now_timestamp()))


# --- bbox, confidence, counts -------------------------------------------------------------


@pytest.mark.parametrize(
    "bbox, fragment",
    [
        ([1, 2, 3], "exactly 4"),
        ([1, 2, 3, 4, 5], "exactly 4"),
        ([-1, 0, 5, 5], "non-negative"),
        ([5, 0, 4, 5], "x1 <= x2"),
        ([0, 5, 4, 4], "y1 <= y2"),
        (["a", 0, 1, 1], "bbox"),
        ("0,0,1,1", "bbox"),
        ([0, 0, float("nan"), 1], "bbox"),
        ([0, 0, float("inf"), 1], "bbox"),
    ],
)
def test_bad_bbox(bbox: Any, fragment: str) -> None:
    data = det(plate_detections=[{"bbox": bbox, "confidence": 0.5}])
    msg = rejects(DetectionResult, data, fragment)
    assert "plate_detections.0.bbox" in msg  # names where the problem is


def test_good_bbox_edge_cases() -> None:
    for bbox in ([0, 0, 0, 0], [10.5, 3, 10.5, 7.25], [0, 0, 4096, 2160]):
        assert VehicleDetection.model_validate({"bbox": bbox, "confidence": 1}).bbox == bbox


@pytest.mark.parametrize("conf", [-0.01, 1.01, float("nan"), "high", None])
def test_confidence_outside_unit_interval(conf: Any) -> None:
    rejects(
        DetectionResult,
        det(vehicle_detections=[{"bbox": [0, 0, 1, 1], "confidence": conf}]),
        "vehicle_detections.0.confidence",
    )


def test_confidence_bounds_inclusive() -> None:
    for conf in (0, 0.0, 1, 1.0):
        PlateDetection.model_validate({"bbox": [0, 0, 1, 1], "confidence": conf})


@pytest.mark.parametrize("field", ["vehicles_count", "plates_count"])
@pytest.mark.parametrize("value", [-1, 10**30, "many", 1.5])
def test_bad_counts(field: str, value: Any) -> None:
    rejects(DetectionResult, det(**{field: value}), field)


def test_processing_time_finite_non_negative() -> None:
    for value in (-1, float("inf"), float("nan")):
        rejects(DetectionResult, det(processing_time_ms=value), "processing_time_ms")


# --- health status, ids -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["healthy", "warning", "error"])
def test_health_status_values(status: str) -> None:
    assert parse_inbound(HealthStatus, hc(status=status)).status == status


@pytest.mark.parametrize("status", ["ok", "HEALTHY", "critical", 1])
def test_health_status_invalid(status: Any) -> None:
    rejects(HealthStatus, hc(status=status), "status")


@pytest.mark.parametrize("field", ["camera_id", "checkpoint_id"])
def test_ids_bounded_and_strings(field: str) -> None:
    assert parse_inbound(DetectionResult, det(**{field: "x" * MAX_ID_LEN}))
    rejects(DetectionResult, det(**{field: "x" * (MAX_ID_LEN + 1)}), field)
    rejects(DetectionResult, det(**{field: 17}), field)
    rejects(DetectionResult, det(**{field: ["a"]}), field)


def test_health_component_bounded() -> None:
    rejects(HealthStatus, hc(component="c" * (MAX_ID_LEN + 1)), "component")


# --- images and event ids ---------------------------------------------------------------


def test_base64_images() -> None:
    ok = parse_inbound(
        DetectionResult,
        det(annotated_image="data:image/jpeg;base64," + JPEG_B64, cropped_plates=[JPEG_B64, ""]),
    )
    assert len(ok.cropped_plates) == 2
    rejects(DetectionResult, det(annotated_image="not base64 at all!"), "annotated_image", "base64")
    rejects(DetectionResult, det(cropped_plates=[JPEG_B64, "%%%"]), "cropped_plates.1", "base64")
    rejects(DetectionResult, det(cropped_plates=JPEG_B64), "cropped_plates")


def test_event_id_optional_uuid() -> None:
    eid = str(uuid.uuid4())
    assert parse_inbound(DetectionResult, det(event_id=eid)).wire()["event_id"] == eid
    assert parse_inbound(HealthStatus, hc(event_id=eid)).event_id == eid
    assert parse_inbound(DetectionResult, det()).event_id is None
    rejects(DetectionResult, det(event_id="1234"), "event_id", "UUID")
    rejects(HealthStatus, hc(event_id=5), "event_id")


# --- extra fields kept ------------------------------------------------------------------


def test_unknown_extra_fields_are_kept() -> None:
    data = det(
        site_note="gate 3",
        plate_detections=[{"bbox": [0, 0, 2, 2], "confidence": 0.5, "text": "AB", "country": "DE"}],
    )
    wire = parse_inbound(DetectionResult, data).wire()
    assert wire["site_note"] == "gate 3"
    assert wire["plate_detections"][0]["country"] == "DE"
    assert parse_inbound(HealthStatus, hc(firmware="1.2")).wire()["firmware"] == "1.2"


def test_replies_and_broadcasts_tolerate_deployed_server_shapes() -> None:
    # naive local reply timestamps and extra fields from a deployed server
    reply = DetectionReply.model_validate(
        {
            "success": True,
            "message": "ok",
            "detection_id": "d",
            "timestamp": "2024-12-19T10:00:00.123456",
            "server": "x",
        }
    )
    assert reply.duplicate is None and reply.wire()["server"] == "x"
    assert ErrorReply.model_validate({"message": "'clients'"}).success is False
    NewDetection.model_validate(
        {
            "detection_id": "d",
            "camera_id": "c",
            "checkpoint_id": "k",
            "timestamp": "t",
            "ocr_results": ["A"],
        }
    )
    assert Ping().type == "test"
