"""Small, distant plates: the second look at full resolution, and what it costs."""

from __future__ import annotations

import cv2
import numpy as np

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.reader import PlateReader
from lpr_agent.detect.synthetic import plate_scene

PLATES = ["8778932", "792174", "CUZ0967"]  # all-digit (7 and 6 long), ABC1234


def _camera(image: np.ndarray, blur: float) -> np.ndarray:
    """A soft lens and JPEG, as a 720p camera delivers a distant plate."""
    if blur:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


class CountingBackend:
    """Wraps a backend and counts detection calls (the cost of second looks)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = "counting"
        self.detections = 0

    def load(self) -> None:
        pass

    def find_regions(self, frame: np.ndarray) -> list:
        self.detections += 1
        return self.inner.find_regions(frame)

    def read_regions(self, frame: np.ndarray, regions: list) -> list:
        return self.inner.read_regions(frame, regions)

    def describe(self) -> dict:
        return {}


def _reader(shared: PlateReader, **config: object) -> tuple[PlateReader, CountingBackend]:
    backend = CountingBackend(shared.backend)
    reader = PlateReader(DetectorConfig(region="us", **config), backend=backend)
    reader.loaded = True
    return reader, backend


def test_plates_40_px_tall_in_a_720p_frame_are_read(reader: PlateReader) -> None:
    frame = _camera(plate_scene(PLATES, "us", plate_height=40, seed=1).image, blur=1.2)
    assert frame.shape[:2] == (720, 1280)
    look, _ = _reader(reader)
    assert sorted(p.text for p in look.read(frame).plates) == sorted(PLATES)


def test_second_look_reads_what_the_first_pass_cannot(reader: PlateReader) -> None:
    # Smaller still (28 px): at the detector's scale caption, characters and
    # border blur into one box, whose read fails the plate-shape check.
    small = ["9542205", "791589", "NFZRP"]  # all-digit (7 and 6 long), vanity
    frame = _camera(plate_scene(small, "us", plate_height=28, seed=0).image, blur=0.0)
    look, counted = _reader(reader)
    assert sorted(p.text for p in look.read(frame).plates) == sorted(small)
    assert counted.detections > 1  # the second look ran
    first_pass, _ = _reader(reader, second_look_below_px=0)
    first = [p.text for p in first_pass.read(frame).plates]
    assert set(first) < set(small), first  # ... and is what found the rest


def test_no_second_look_when_every_line_was_read(reader: PlateReader) -> None:
    frame = plate_scene(["KD482TR", "BXR5M27"], "eu", plate_height=64, seed=3).image
    look, counted = _reader(reader)
    look.config = look.config.model_copy(update={"region": "auto"})
    texts = [p.text for p in look.read(frame).plates]
    assert sorted(texts) == ["BXR5M27", "KD482TR"]
    assert counted.detections == 1  # big, readable plates: no extra cost
