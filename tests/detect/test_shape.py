"""Plate-shape evidence: all-digit and vanity plates are kept, badges and signs are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.reader import PlateReader
from lpr_agent.detect.synthetic import plate_scene, render_plate


def _badge(image: np.ndarray, text: str, x: int, y: int, height: int) -> None:
    """Chrome lettering on the car body: light strokes, no plate around them."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = cv2.getFontScaleFromHeight(font, height, 3)
    cv2.putText(image, text, (x, y), font, scale, (60, 60, 60), 6, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), font, scale, (225, 225, 225), 3, cv2.LINE_AA)


@pytest.mark.parametrize("region", ["auto", "us"])
def test_badges_are_not_plates_but_all_digit_and_vanity_plates_are(
        reader: PlateReader, region: str) -> None:
    frame = plate_scene(["482917", "GOBLUE", "7ABC123"], "us", plate_height=64, seed=4)
    image = frame.image
    for k, badge in enumerate(["GS300", "E150", "HB20"]):
        car = frame.truth[k].car_box
        _badge(image, badge, int(car[0]) + 20, int(car[1]) + 60, 30)
    ours = PlateReader(DetectorConfig(region=region), backend=reader.backend)
    ours.loaded = True
    texts = sorted(p.text for p in ours.read(image).plates)
    assert texts == ["482917", "7ABC123", "GOBLUE"]


def test_the_old_letter_and_digit_rule_drops_them(reader: PlateReader) -> None:
    frame = plate_scene(["482917", "GOBLUE", "7ABC123"], "us", plate_height=64, seed=4)
    old = PlateReader(DetectorConfig(region="us", require_letter_and_digit=True),
                      backend=reader.backend)
    old.loaded = True
    assert [p.text for p in old.read(frame.image).plates] == ["7ABC123"]


def test_text_on_a_wall_is_not_a_plate(reader: PlateReader) -> None:
    # Dark lettering on a large light panel (a shop sign): no plate edges near it.
    image = plate_scene(["KD482TR"], "eu", plate_height=56, seed=2).image
    cv2.rectangle(image, (60, 40), (700, 200), (235, 235, 235), -1)
    cv2.putText(image, "HOTEL", (120, 150), cv2.FONT_HERSHEY_DUPLEX,
                cv2.getFontScaleFromHeight(cv2.FONT_HERSHEY_DUPLEX, 60, 4), (30, 30, 30), 4)
    assert render_plate("KD482TR", 56).shape[0] == 56
    texts = [p.text for p in reader.read(image).plates]
    assert texts == ["KD482TR"]
