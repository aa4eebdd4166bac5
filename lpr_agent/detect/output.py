"""Turn a track event into the protocol's ``DetectionResult``.

There is no vehicle detector whose weights ship in a registry package under
a permissive licence, so the vehicle box is *derived from the plate* (a
fixed car-sized box around it) and labelled as such in ``class``; it is not
a detection and dashboards must not count it as one.
"""

from __future__ import annotations

import base64
import uuid

import cv2
import numpy as np

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.reader import Box
from lpr_agent.detect.tracker import TrackEvent
from lpr_agent.protocol import DetectionResult, PlateDetection, VehicleDetection, now_timestamp

DERIVED_VEHICLE_CLASS = "vehicle (derived from plate)"


def encode_jpeg(image: np.ndarray, max_side: int, max_bytes: int, quality: int) -> bytes:
    """JPEG within ``max_side`` pixels and ``max_bytes``: lower quality first, then size."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    q = quality
    while True:
        img = image if scale >= 1.0 else cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        data = buf.tobytes()
        if len(data) <= max_bytes:
            return data
        if q > 35:
            q -= 15
        else:
            scale *= 0.75
            if max(h, w) * scale < 16:
                return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def derived_vehicle_box(plate: Box, width: int, height: int) -> Box:
    """A car-sized box around a plate: ~3.5 plate widths wide, plate near the bottom."""
    x1, _y1, x2, y2 = plate
    pw = x2 - x1
    cx = (x1 + x2) / 2
    vw = pw * 3.5
    vh = vw * 0.75
    return (max(0.0, cx - vw / 2), max(0.0, y2 + pw * 0.4 - vh),
            min(float(width), cx + vw / 2), min(float(height), y2 + pw * 0.4))


def crop_plate(frame: np.ndarray, box: Box, margin: float = 0.08) -> np.ndarray:
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    xa, ya = max(0, int(x1 - mx)), max(0, int(y1 - my))
    xb, yb = min(w, round(x2 + mx)), min(h, round(y2 + my))
    if xb <= xa or yb <= ya:
        return np.zeros((8, 8, 3), np.uint8)
    return frame[ya:yb, xa:xb]


def annotate(frame: np.ndarray, plate: Box, vehicle: Box | None, text: str) -> np.ndarray:
    out = frame.copy()
    h = frame.shape[0]
    thick = max(2, h // 360)
    if vehicle is not None:
        cv2.rectangle(out, (int(vehicle[0]), int(vehicle[1])), (int(vehicle[2]), int(vehicle[3])),
                      (255, 160, 0), thick)
    x1, y1, x2, y2 = (int(v) for v in plate)
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 220, 0), thick)
    scale = max(0.6, h / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    ty = y1 - 8 if y1 - th - 12 > 0 else y2 + th + 8
    cv2.rectangle(out, (x1, ty - th - 6), (x1 + tw + 8, ty + base), (0, 220, 0), -1)
    cv2.putText(out, text, (x1 + 4, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                cv2.LINE_AA)
    return out


def build_result(
    event: TrackEvent, config: DetectorConfig, camera_id: str, checkpoint_id: str
) -> DetectionResult:
    best = event.best
    read = best.read
    plate_box = read.plate_box
    frame = best.frame
    vehicle_box: Box | None = None
    annotated: str | None = None
    crops: list[str] = []
    if frame is not None:
        fh, fw = frame.shape[:2]
        vehicle_box = derived_vehicle_box(plate_box, fw, fh)
        crops.append(b64(encode_jpeg(crop_plate(frame, plate_box), config.crop_max_side,
                                     config.crop_max_bytes, config.jpeg_quality)))
        if config.annotate:
            annotated = b64(encode_jpeg(annotate(frame, plate_box, vehicle_box, event.text),
                                        config.annotated_max_side, config.annotated_max_bytes,
                                        config.jpeg_quality))
    vehicles = []
    if vehicle_box is not None:
        vehicles.append(VehicleDetection(bbox=[round(v, 1) for v in vehicle_box],
                                         confidence=round(event.confidence, 4),
                                         vehicle_class=DERIVED_VEHICLE_CLASS))
    return DetectionResult(
        camera_id=camera_id,
        checkpoint_id=checkpoint_id,
        timestamp=now_timestamp(),
        event_id=str(uuid.uuid4()),
        vehicles_count=len(vehicles),
        plates_count=1,
        ocr_results=[event.text],
        vehicle_detections=vehicles,
        plate_detections=[PlateDetection(bbox=[round(v, 1) for v in plate_box],
                                         confidence=round(event.confidence, 4),
                                         text=event.text)],
        processing_time_ms=round(best.processing_ms, 1),
        annotated_image=annotated,
        cropped_plates=crops,
    )


def annotate_many(frame: np.ndarray, plates: list[tuple[Box, str]]) -> np.ndarray:
    out = frame
    for box, text in plates:
        out = annotate(out, box, None, text)
    return out if plates else frame.copy()


def build_frame_result(
    frame: np.ndarray,
    plates: list[tuple[Box, str, float]],
    processing_ms: float,
    config: DetectorConfig,
    camera_id: str,
    checkpoint_id: str,
    with_images: bool = True,
) -> DetectionResult:
    """One result for one still image: every plate on it, no tracking."""
    fh, fw = frame.shape[:2]
    vehicles = [VehicleDetection(bbox=[round(v, 1) for v in derived_vehicle_box(box, fw, fh)],
                                 confidence=round(conf, 4), vehicle_class=DERIVED_VEHICLE_CLASS)
                for box, _, conf in plates]
    annotated = None
    crops: list[str] = []
    if with_images:
        crops = [b64(encode_jpeg(crop_plate(frame, box), config.crop_max_side,
                                 config.crop_max_bytes, config.jpeg_quality))
                 for box, _, _ in plates]
        if config.annotate:
            annotated = b64(encode_jpeg(annotate_many(frame, [(b, t) for b, t, _ in plates]),
                                        config.annotated_max_side, config.annotated_max_bytes,
                                        config.jpeg_quality))
    return DetectionResult(
        camera_id=camera_id, checkpoint_id=checkpoint_id, timestamp=now_timestamp(),
        event_id=str(uuid.uuid4()), vehicles_count=len(vehicles), plates_count=len(plates),
        ocr_results=[t for _, t, _ in plates], vehicle_detections=vehicles,
        plate_detections=[PlateDetection(bbox=[round(v, 1) for v in box],
                                         confidence=round(conf, 4), text=text)
                          for box, text, conf in plates],
        processing_time_ms=round(processing_ms, 1), annotated_image=annotated,
        cropped_plates=crops,
    )
