"""Shared helpers of the spool tests: real SQLite files in tmp dirs, an injected clock."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lpr_agent.spool import Kind, Spool, SpoolConfig

# Long tests grow with LPR_SOAK_SCALE (default 1), as everywhere in the suite.
SCALE = max(1, int(os.environ.get("LPR_SOAK_SCALE", "1")))


class Clock:
    """A clock the test moves by hand (the spool takes ``clock=`` for this)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def detection(i: int = 0, *, image_bytes: int = 0, plates: int = 1) -> dict[str, Any]:
    """A DetectionResult.wire()-shaped payload; with images when image_bytes > 0."""
    payload: dict[str, Any] = {
        "type": "detection_result",
        "event_id": str(uuid.uuid4()),
        "camera_id": "camera_001",
        "checkpoint_id": "checkpoint_001",
        "timestamp": "2026-11-25T10:00:00.000+00:00",
        "vehicles_count": 1,
        "plates_count": plates,
        "ocr_results": [f"ABC{i:04d}"],
        "vehicle_detections": [{"bbox": [1, 2, 3, 4], "confidence": 0.9, "class": "car"}],
        "plate_detections": [{"bbox": [1, 2, 3, 4], "confidence": 0.8, "text": f"ABC{i:04d}"}],
        "n": i,  # the test's own index ("seq" is the spool's)
    }
    if image_bytes:
        img = base64.b64encode(os.urandom(image_bytes)).decode()
        payload["annotated_image"] = img
        payload["cropped_plates"] = [img[: len(img) // 4]]
    return payload


def health(i: int = 0, component: str = "camera", status: str = "healthy") -> dict[str, Any]:
    return {
        "type": "health_check",
        "event_id": str(uuid.uuid4()),
        "camera_id": "camera_001",
        "checkpoint_id": "checkpoint_001",
        "timestamp": "2026-11-25T10:00:00.000+00:00",
        "component": component,
        "status": status,
        "details": {"n": i},
        "n": i,
    }


def registration(i: int = 0) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "camera_id": "camera_001",
            "checkpoint_id": "checkpoint_001", "n": i}


PAYLOADS: dict[Kind, Callable[[int], dict[str, Any]]] = {
    Kind.DETECTION: detection,
    Kind.HEALTH: health,
    Kind.REGISTRATION: registration,
}


def config(path: Path, **overrides: Any) -> SpoolConfig:
    """A spool config for tests: no disk threshold unless asked (the disk is shared)."""
    values: dict[str, Any] = {"path": path, "min_free_disk_bytes": 0}
    values.update(overrides)
    return SpoolConfig(**values)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spool_factory(tmp_path: Path) -> Iterator[Callable[..., Spool]]:
    opened: list[Spool] = []

    def make(name: str = "spool.db", **kwargs: Any) -> Spool:
        open_kwargs = {k: kwargs.pop(k) for k in ("clock", "rng", "recover", "create")
                       if k in kwargs}
        spool = Spool.open(config(tmp_path / name, **kwargs), **open_kwargs)
        opened.append(spool)
        return spool

    yield make
    for spool in opened:
        spool.close()
