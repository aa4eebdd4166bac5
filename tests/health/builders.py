"""Stage snapshots as the stages return them, for the health tests."""

from __future__ import annotations

import time
import uuid
from typing import Any

from lpr_agent.detect.pipeline import PipelineStats
from lpr_agent.uplink import UplinkStats

# What DetectionPipeline.stats() returns for a camera delivering 12.5 fps,
# processed at its max_fps of 5.
GOOD_PIPELINE = PipelineStats(
    source_url="rtsp://10.0.0.7:554/stream1",
    source_state="running",
    source_error=None,
    source_fps=12.5,
    fps=5.0,
    frames=1800,
    frames_dropped=2700,
    last_frame_age_s=0.2,
    reconnects=0,
    model_loaded=True,
    detector_mean_ms=180.0,
    stage_ms={"detect": 155.0, "recognise": 20.0, "filter": 5.0},
    plates_read=120,
    events_emitted=30,
    events_suppressed=12,
    active_tracks=1,
    model={"detector": "PP-OCRv6_det_small.onnx", "provider": "CPUExecutionProvider"},
)
MAX_FPS = 5.0


def connected_uplink(ack_age_s: float = 1.0) -> UplinkStats:
    return UplinkStats(channel="socketio", connected=True, ack_style="outcome", sent=33,
                       acked=32, in_flight=1, sio_connects=1,
                       last_ack_at=time.time() - ack_age_s, ack_latency_p50_ms=42.0)


def silent_uplink() -> UplinkStats:
    """A server that has not acknowledged anything for 2000 s and refuses connections."""
    return UplinkStats(channel="none", connected=False, sent=40, acked=30, retried=10,
                       sio_connect_failures=25, last_ack_at=time.time() - 2000,
                       last_error="connection refused", last_error_at=time.time() - 5)


class Clock:
    """The spool's wall clock, moved by hand to age its readings."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def detection(image: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {"event_id": str(uuid.uuid4()), "ocr_results": ["AB123CD"]}
    if image:
        payload["annotated_image"] = "x" * 2000  # stands in for a base64 JPEG
    return payload


def health(component: str) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "component": component, "status": "healthy"}


def system(**over: Any) -> dict[str, Any]:
    base = {"cpu_usage": 10.0, "memory_usage": 20.0, "disk_usage": 30.0,
            "clock_sync": "synchronized"}
    return {**base, **over}
