"""The default reader on real photos and synthetic frames with known truth."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.models import DEFAULT_MODELS, model_path, sha256_of
from lpr_agent.detect.reader import PlateReader, iou
from lpr_agent.detect.synthetic import SyntheticSource, parse_synthetic_url

# Photos whose plates are clearly legible (the rest of the set is for the
# benchmark, not for asserting).
PHOTOS = {
    "eu1.jpg": "M5XSX",
    "eu10.jpg": "WA56660",
    "test_009.jpg": "1T43213",
    "test_062.jpg": "1B80338",
    "test_019.jpg": "RK865AC",
}


def _label(folder: Path, image: str) -> tuple[tuple[float, ...], str]:
    line = (folder / image).with_suffix(".txt").read_text().split("\t")
    x, y, w, h = (float(v) for v in line[1:5])
    return (x, y, x + w, y + h), line[5].strip()


@pytest.mark.parametrize("image", sorted(PHOTOS))
def test_reads_real_photo(reader: PlateReader, eu_data: Path, image: str) -> None:
    box, label = _label(eu_data, image)
    assert label == PHOTOS[image]
    result = reader.read(cv2.imread(str(eu_data / image)))
    texts = [p.text for p in result.plates]
    assert PHOTOS[image] in texts, texts
    plate = next(p for p in result.plates if p.text == PHOTOS[image])
    assert iou(plate.plate_box, box) >= 0.3
    assert 0.5 <= plate.confidence <= 1.0
    assert set(result.timings_ms) == {"detect", "recognise", "filter"}


def test_signs_and_words_are_not_plates(reader: PlateReader, eu_data: Path) -> None:
    # eu10 has a motorway sign (NORTH, CUMBERLAND AVE, EXIT 79B, 14 MILE)
    result = reader.read(cv2.imread(str(eu_data / "eu10.jpg")))
    texts = {p.text for p in result.plates}
    assert not texts & {"NORTH", "EXIT", "CUMBERLANDAVE"}


def test_reads_synthetic_plates(reader: PlateReader) -> None:
    source = SyntheticSource(parse_synthetic_url("synthetic:?once=1&count=5&seed=11&fps=3&speed=2"))
    source.open()
    total = correct = false = 0
    while (frame := source.read()) is not None:
        result = reader.read(frame.image)
        texts = [p.text for p in result.plates]
        for truth in frame.truth:
            x1, _, x2, _ = truth.car_box
            if x1 <= 0 or x2 >= frame.image.shape[1]:
                continue  # plate may be cut by the frame border
            total += 1
            correct += truth.text in texts
        false += len(set(texts) - {t.text for t in frame.truth})
    assert total >= 15
    assert correct / total >= 0.95
    assert false == 0


def test_roi_and_minimum_size(reader: PlateReader, eu_data: Path) -> None:
    image = cv2.imread(str(eu_data / "eu1.jpg"))
    box, text = _label(eu_data, "eu1.jpg")
    h, w = image.shape[:2]
    outside = DetectorConfig(roi=[0.0, 0.0, 0.3, 0.3])
    limited = PlateReader(outside, backend=reader.backend)
    limited.loaded = True
    assert text not in [p.text for p in limited.read(image).plates]
    inside = DetectorConfig(roi=[box[0] / w - 0.05, box[1] / h - 0.05,
                                 box[2] / w + 0.05, box[3] / h + 0.05])
    roi_reader = PlateReader(inside, backend=reader.backend)
    roi_reader.loaded = True
    assert [p.text for p in roi_reader.read(image).plates] == [text]
    tall = PlateReader(DetectorConfig(min_plate_height=200), backend=reader.backend)
    tall.loaded = True
    assert tall.read(image).plates == []


def test_models_ship_in_the_pinned_package() -> None:
    for key, info in DEFAULT_MODELS.items():
        path = model_path(key)
        assert path.name == info.filename
        assert info.licence == "Apache-2.0"
        assert len(sha256_of(path)) == 64


def test_monochrome_frames_are_read(reader: PlateReader, eu_data: Path) -> None:
    gray = cv2.imread(str(eu_data / "eu1.jpg"), cv2.IMREAD_GRAYSCALE)
    assert "M5XSX" in [p.text for p in reader.read(gray).plates]
