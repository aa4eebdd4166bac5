"""Protocol messages as a client sends them (shared/protocol.md examples)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

# A real (1x1 px) JPEG, so that decoded images can be compared byte for byte.
TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJ"
    "DRENDg8QEBEQCgwSExIQEw8QEBD/yQALCAABAAEBAREA/8wABgAQEAX/2gAIAQEAAD8A0s8g/9k="
)
TINY_JPEG_B64 = base64.b64encode(TINY_JPEG).decode()
TS = "2024-12-19T10:00:00Z"


def detection(camera_id: str, checkpoint_id: str = "checkpoint_001", **extra: Any) -> dict:
    msg: dict[str, Any] = {
        "type": "detection_result",
        "camera_id": camera_id,
        "checkpoint_id": checkpoint_id,
        "timestamp": TS,
        "vehicles_count": 1,
        "plates_count": 1,
        "ocr_results": ["ABC1234"],
        "vehicle_detections": [{"bbox": [100, 100, 200, 200], "confidence": 0.95, "class": "car"}],
        "plate_detections": [{"bbox": [150, 150, 180, 170], "confidence": 0.92, "text": "ABC1234"}],
        "processing_time_ms": 150,
    }
    msg.update(extra)
    return msg


def health(camera_id: str, checkpoint_id: str = "checkpoint_001", **extra: Any) -> dict:
    msg: dict[str, Any] = {
        "type": "health_check",
        "camera_id": camera_id,
        "checkpoint_id": checkpoint_id,
        "timestamp": TS,
        "component": "camera",
        "status": "healthy",
        "message": "Camera working normally",
        "details": {"cpu_usage": 45.2, "memory_usage": 67.8, "disk_usage": 23.1},
    }
    msg.update(extra)
    return msg


def registration(camera_id: str, checkpoint_id: str = "checkpoint_001") -> dict:
    return {"camera_id": camera_id, "checkpoint_id": checkpoint_id, "timestamp": TS}


def event_id() -> str:
    return str(uuid.uuid4())
