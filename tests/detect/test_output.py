"""Output: protocol-valid results, image size caps, derived vehicle boxes."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.output import (
    DERIVED_VEHICLE_CLASS,
    build_frame_result,
    build_result,
    encode_jpeg,
)
from lpr_agent.detect.reader import PlateRead
from lpr_agent.detect.tracker import PlateTracker, Sighting
from lpr_agent.protocol import DetectionResult, parse_inbound


def noisy_frame(w: int = 1920, h: int = 1080) -> np.ndarray:
    # Noise is the worst case for JPEG size.
    return np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_jpeg_caps_hold_for_incompressible_images() -> None:
    data = encode_jpeg(noisy_frame(), max_side=960, max_bytes=100_000, quality=90)
    assert len(data) <= 100_000
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert max(img.shape[:2]) <= 960


def test_event_result_validates_and_respects_caps() -> None:
    config = DetectorConfig(annotated_max_bytes=80_000, crop_max_bytes=5_000, crop_max_side=200)
    frame = noisy_frame()
    box = (800.0, 700.0, 1000.0, 750.0)
    read = PlateRead(text="AB123CD", raw_text="AB123CD", confidence=0.93, det_score=0.9,
                     text_box=box, plate_box=box, quad=np.zeros((4, 2), np.float32))
    tracker = PlateTracker()
    tracker.update([Sighting(read, 0.0, frame, 120.0)], 0.0)
    (event,) = tracker.flush()
    result = build_result(event, config, "cam-1", "gate-2")
    wire = result.wire()
    parsed = parse_inbound(DetectionResult, wire)
    assert parsed.ocr_results == ["AB123CD"]
    assert parsed.plates_count == 1 and parsed.vehicles_count == 1
    assert parsed.vehicle_detections[0].vehicle_class == DERIVED_VEHICLE_CLASS
    assert wire["vehicle_detections"][0]["class"] == DERIVED_VEHICLE_CLASS
    assert parsed.processing_time_ms == 120.0
    annotated = base64.b64decode(parsed.annotated_image or "")
    assert len(annotated) <= 80_000
    crop = base64.b64decode(parsed.cropped_plates[0])
    assert len(crop) <= 5_000
    img = cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR)
    assert max(img.shape[:2]) <= 200
    assert len(str(wire)) < 1_000_000


def test_still_image_result_lists_every_plate() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    plates = [((10.0, 10.0, 110.0, 40.0), "AB123CD", 0.9),
              ((300.0, 300.0, 400.0, 330.0), "XY987ZT", 0.8)]
    result = build_frame_result(frame, plates, 55.0, DetectorConfig(), "c", "k")
    parsed = parse_inbound(DetectionResult, result.wire())
    assert parsed.ocr_results == ["AB123CD", "XY987ZT"]
    assert [p.text for p in parsed.plate_detections] == ["AB123CD", "XY987ZT"]
    for v in parsed.vehicle_detections:
        x1, y1, x2, y2 = v.bbox
        assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 480
