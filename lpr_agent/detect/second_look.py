"""A second look at small text at higher resolution.

Text detection runs on the whole frame shrunk to ``det_max_side`` (800 px:
a 1280×720 frame at 0.625×), where the characters of a plate 40 px tall are
about 12 px high: the detector still finds the line, often as a weak or
broken box, but the recogniser gets too few pixels and the rules reject the
read. Running the detector on tiles of the full frame would cost about one
more full detection per tile on *every* frame; instead, only the small text
lines that the first pass found but could not read as a plate get a second
look: a window around each is cut from the full-resolution frame, enlarged
so its text is ~:data:`TARGET_TEXT_PX` high, and detected and read again. A
frame with no such line pays nothing; a window costs a few ms.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np

from lpr_agent.detect.backends import PlateBackend, RegionBox, TextRead

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

TARGET_TEXT_PX = 36  # the detector and recogniser read characters of this height well
MAX_ZOOM = 3.0
PAD_X = 2.0  # window around a seed, in text heights: the rest of the plate's line
PAD_Y = 1.5


@dataclass(frozen=True)
class SecondLook:
    below_px: float = 40.0  # text lines lower than this (full-frame px) may get a second look
    max_windows: int = 3  # per frame: bounds the cost on a frame full of small text

    def seeds(self, regions: list[RegionBox], taken: list[Box],
              frame_shape: tuple[int, ...]) -> list[RegionBox]:
        """Small lines not already part of an accepted plate: found lines first, then
        weak ones, each most confident first."""
        out: list[RegionBox] = []
        # Lines the first pass found but could not read first, then weak ones.
        for region in sorted(regions, key=lambda r: (not r.weak, r.score), reverse=True):
            h = region.height
            if not 4 <= h < self.below_px or region.width < 1.1 * h:
                continue
            if any(_overlap(region.bbox, box) > 0.3 for box in taken):
                continue
            if any(_overlap(region.bbox, _window(s, frame_shape)) > 0.5 for s in out):
                continue  # already inside another seed's window
            out.append(region)
            if len(out) >= self.max_windows:
                break
        return out

    def look(self, backend: PlateBackend, frame: np.ndarray, seed: RegionBox) -> Looked:
        """Text lines (in frame coordinates) and their reads in the window around ``seed``."""
        x1, y1, x2, y2 = (int(v) for v in _window(seed, frame.shape))
        crop = frame[y1:y2, x1:x2]
        if crop.size == 0:
            return Looked([], [], 0.0, 0.0)
        zoom = min(MAX_ZOOM, max(1.0, TARGET_TEXT_PX / max(seed.height, 1.0)))
        t0 = time.perf_counter()
        big = cv2.resize(crop, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
        found = backend.find_regions(big)
        t1 = time.perf_counter()
        reads = backend.read_regions(big, found) if found else []
        t2 = time.perf_counter()
        offset = np.array([x1, y1], np.float32)
        regions = [RegionBox(quad=r.quad / zoom + offset, score=r.score) for r in found]
        return Looked(regions, reads, t1 - t0, t2 - t1)


@dataclass
class Looked:
    regions: list[RegionBox]  # frame coordinates
    reads: list[TextRead]
    detect_s: float
    recognise_s: float


def _window(seed: RegionBox, frame_shape: tuple[int, ...]) -> Box:
    fh, fw = frame_shape[:2]
    h = seed.height
    x1, y1, x2, y2 = seed.bbox
    return (max(0.0, x1 - PAD_X * h), max(0.0, y1 - PAD_Y * h),
            min(float(fw), x2 + PAD_X * h), min(float(fh), y2 + PAD_Y * h))


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the area of ``a``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0
