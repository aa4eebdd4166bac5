"""Frame → plate reads: the backend's regions filtered, read and corrected.

There is no plate detector whose weights ship under a permissive licence in
a registry package, so plates are found as *text lines that read like a
plate*: PP-OCR text detection on the whole frame, recognition of each line,
then plate rules (length, letters + digits, formats, confidence). Plate
text split by a wide gap (``AB 1234``) comes out of the detector as two
boxes, so neighbouring boxes on one line are also read merged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from lpr_agent.detect.backends import PlateBackend, RegionBox, TextRead, create_backend
from lpr_agent.detect.config import DetectorConfig
from lpr_agent.detect.plates import PlateRules
from lpr_agent.detect.regions import AUTO, Region, builtin_regions, resolve_region
from lpr_agent.detect.second_look import SecondLook
from lpr_agent.detect.shape import ShapeRules

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

# Text lines are wider than tall; a plate line is between a short 4-character
# moto plate and a long one-line EU plate.
MIN_ASPECT = 1.1
MAX_ASPECT = 16.0
MAX_CANDIDATES = 32
# The plate box reported is the text line's box: on labelled plate sets the
# boxes hug the characters (median label/text-box size 1.0 wide, 0.86 high,
# on the EU set), and DB's unclipped boxes are a little taller than glyphs.
PLATE_MARGIN_X = 0.0
PLATE_MARGIN_Y = -0.06
EDGE_PX = 2.0
# OpenCV hue (0-180): 35 = yellow-green … 135 = violet-blue; yellow plates are ~20-30.
SIGN_HUES = (35, 135)
SIGN_MIN_SATURATION = 90


@dataclass
class PlateRead:
    text: str
    raw_text: str
    confidence: float
    det_score: float
    text_box: Box
    plate_box: Box
    quad: np.ndarray = field(repr=False)


@dataclass
class FrameReads:
    plates: list[PlateRead]
    timings_ms: dict[str, float]
    regions: int = 0

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def overlap_min(a: Box, b: Box) -> float:
    """Intersection over the smaller box (1.0 when one contains the other)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def rules_from_config(config: DetectorConfig) -> PlateRules:
    region = None if config.region == AUTO else resolve_region(config.region, config.regions)
    if config.plate_formats:
        # Operator formats: European-style correction (up to 2 swaps, context rule).
        base = region or Region(name="custom", max_swaps=2, context_correction=True)
        region = base.model_copy(update={"layouts": tuple(config.plate_formats)})
    if config.strict_formats and region is not None:
        region = region.model_copy(update={"exhaustive": True})
    regions = {**builtin_regions(), **{name: resolve_region(name, config.regions)
                                       for name in config.regions}}
    return PlateRules(
        region=region,
        regions=tuple(regions.values()),
        min_chars=config.min_chars,
        max_chars=config.max_chars,
        require_letter_and_digit=config.require_letter_and_digit,
    )


class PlateReader:
    def __init__(self, config: DetectorConfig, backend: PlateBackend | None = None) -> None:
        self.config = config
        self.rules = rules_from_config(config)
        self.shape = ShapeRules(enabled=config.plate_shape_filter)
        self.second_look = (SecondLook(below_px=config.second_look_below_px)
                            if config.second_look_below_px > 0 else None)
        self.backend = backend or create_backend(
            config.backend,
            threads=config.threads,
            det_max_side=config.det_max_side,
            det_model=config.det_model,
            rec_model=config.rec_model,
            return_memory=config.return_freed_memory,
            cut_classes=config.cut_recogniser,
        )
        self.loaded = False

    def load(self) -> None:
        self.backend.load()
        self.loaded = True

    def read(self, frame: np.ndarray) -> FrameReads:
        if not self.loaded:
            self.load()
        if frame.ndim == 2:  # a monochrome (IR/night) camera
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        t0 = time.perf_counter()
        regions = self.backend.find_regions(frame)
        t1 = time.perf_counter()
        candidates = self._candidates(frame, regions)
        t2 = time.perf_counter()
        reads = self.backend.read_regions(frame, candidates) if candidates else []
        t3 = time.perf_counter()
        plates = self._select(frame, candidates, reads)
        t4 = time.perf_counter()
        ms = {"detect": (t1 - t0) * 1000, "filter": (t2 - t1 + t4 - t3) * 1000,
              "recognise": (t3 - t2) * 1000}
        looked = (self._second_look(frame, regions, candidates, reads, plates)
                  if self.second_look else None)
        if looked is not None:
            extra, extra_reads, det_s, rec_s = looked
            plates = self._select(frame, candidates + extra, reads + extra_reads)
            # The windows' detection and recognition count as such; the rest is filter.
            spent = time.perf_counter() - t4
            ms["detect"] += det_s * 1000
            ms["recognise"] += rec_s * 1000
            ms["filter"] += (spent - det_s - rec_s) * 1000
        return FrameReads(
            plates=plates,
            timings_ms=ms,
            regions=len(regions),
        )

    def _second_look(
        self, frame: np.ndarray, regions: list[RegionBox], candidates: list[RegionBox],
        reads: list[TextRead], plates: list[PlateRead],
    ) -> tuple[list[RegionBox], list[TextRead], float, float] | None:
        """Candidates (and reads) from enlarged windows around small unread text, with
        the seconds spent detecting and recognising; None when no line needs it.

        Worth a look: lines read with about a plate's number of characters
        but not accepted (a blurred box took in the whole plate), and weak
        lines the detector could not form at its scale. Signs and badges
        with fewer or many more characters are not looked at again.
        """
        assert self.second_look is not None
        lo, hi = self.rules.length_range
        plate_like = [c for c, r in zip(candidates, reads, strict=True)
                      if lo <= len(r.chars) <= hi + 2]
        weak = [r for r in regions if r.weak]
        seeds = self.second_look.seeds(
            [r for r in plate_like + weak if self._in_roi(r, frame.shape)],
            [p.text_box for p in plates], frame.shape)
        if not seeds:
            return None
        extra: list[RegionBox] = []
        extra_reads: list[TextRead] = []
        det_s = rec_s = 0.0
        for seed in seeds:
            looked = self.second_look.look(self.backend, frame, seed)
            det_s += looked.detect_s
            rec_s += looked.recognise_s
            for region, read in zip(looked.regions, looked.reads, strict=True):
                if self._keep(region, frame.shape):
                    extra.append(region)
                    extra_reads.append(read)
        return extra, extra_reads, det_s, rec_s

    def _in_roi(self, region: RegionBox, frame_shape: tuple[int, ...]) -> bool:
        if self.config.roi is None:
            return True
        fh, fw = frame_shape[:2]
        x1, y1, x2, y2 = region.bbox
        cx, cy = (x1 + x2) / 2 / fw, (y1 + y2) / 2 / fh
        rx1, ry1, rx2, ry2 = self.config.roi
        return rx1 <= cx <= rx2 and ry1 <= cy <= ry2

    # --- candidates ----------------------------------------------------------------
    def _keep(self, region: RegionBox, frame_shape: tuple[int, ...]) -> bool:
        h = region.height
        w = region.width
        if region.score < self.config.min_det_score or h < self.config.min_plate_height:
            return False
        if not MIN_ASPECT <= w / max(h, 1e-6) <= MAX_ASPECT:
            return False
        fh, fw = frame_shape[:2]
        x1, y1, x2, y2 = region.bbox
        # A line cut by the frame border is a partly visible plate: its read
        # is a fragment (a false plate), and the tracker gets the whole
        # plate a few frames later.
        # A quarter character height: a plate's border and margin are at least
        # that wide, so text closer to the edge belongs to a cut-off plate.
        edge = max(EDGE_PX, 0.25 * h)
        if x1 <= edge or y1 <= EDGE_PX or x2 >= fw - edge or y2 >= fh - EDGE_PX:
            return False
        if self.config.roi is not None:
            cx, cy = (x1 + x2) / 2 / fw, (y1 + y2) / 2 / fh
            rx1, ry1, rx2, ry2 = self.config.roi
            if not (rx1 <= cx <= rx2 and ry1 <= cy <= ry2):
                return False
        return True

    def _candidates(self, frame: np.ndarray, regions: list[RegionBox]) -> list[RegionBox]:
        base = [r for r in regions if not r.weak and r.score >= self.config.min_det_score
                and r.height >= self.config.min_plate_height]
        merged: list[RegionBox] = []
        for i, a in enumerate(base):
            for b in base[i + 1:]:
                m = _merge(a, b)
                if m is not None:
                    merged.append(m)
        out = [r for r in base + merged if self._keep(r, frame.shape)]
        out.sort(key=lambda r: r.score, reverse=True)
        return out[:MAX_CANDIDATES]

    def _select(
        self, frame: np.ndarray, candidates: list[RegionBox], reads: list[TextRead]
    ) -> list[PlateRead]:
        fh, fw = frame.shape[:2]
        accepted: list[PlateRead] = []
        for region, read in zip(candidates, reads, strict=True):
            if not read.chars:
                continue
            ruled = self.rules.apply(read.chars)
            if ruled is None:
                continue
            if self.config.reject_sign_colours and looks_like_sign(frame, region.bbox):
                continue
            text, conf = ruled
            if conf < self.config.min_confidence:
                continue
            reaches = [r.plate_margin for r in self.rules.accepting(text)] or [0.3]
            if not self.shape.accepts(frame, region.quad, text, read.text,
                                      self.rules.fits_layout(text), reaches):
                continue
            x1, y1, x2, y2 = region.bbox
            mx, my = (x2 - x1) * PLATE_MARGIN_X, (y2 - y1) * PLATE_MARGIN_Y
            plate_box = (max(0.0, x1 - mx), max(0.0, y1 - my),
                         min(float(fw), x2 + mx), min(float(fh), y2 + my))
            accepted.append(PlateRead(
                text=text, raw_text=read.text, confidence=conf,
                det_score=region.score, text_box=region.bbox, plate_box=plate_box,
                quad=region.quad,
            ))
        accepted = [p for p in accepted if not _is_caption(p, accepted)]
        # One plate per place: a merged line and its parts, or duplicate
        # boxes, overlap; keep the most confident (longer text on near-ties,
        # because a part of a plate is also a confident read).
        accepted.sort(key=lambda p: (round(p.confidence, 1), len(p.text), p.confidence),
                      reverse=True)
        kept: list[PlateRead] = []
        for plate in accepted:
            if all(overlap_min(plate.text_box, k.text_box) < 0.5 for k in kept):
                kept.append(plate)
        return kept


# A plate's caption (US state name, slogan, the Mercosur BRASIL band) is a
# line of much smaller text right above or below the plate's characters.
CAPTION_MAX_HEIGHT = 0.7  # of the plate text's height
CAPTION_MAX_GAP = 1.0  # plate text heights between the two lines


def _is_caption(plate: PlateRead, others: list[PlateRead]) -> bool:
    x1, y1, x2, y2 = plate.text_box
    h = y2 - y1
    for other in others:
        ox1, oy1, ox2, oy2 = other.text_box
        oh = oy2 - oy1
        if other is plate or h > CAPTION_MAX_HEIGHT * oh:
            continue
        overlap = min(x2, ox2) - max(x1, ox1)
        gap = max(oy1 - y2, y1 - oy2)  # vertical distance between the lines
        if overlap >= 0.5 * (x2 - x1) and -0.2 * oh <= gap <= CAPTION_MAX_GAP * oh:
            return True
    return False


def looks_like_sign(frame: np.ndarray, box: Box) -> bool:
    """Text on a saturated green/blue ground: a road or shop sign, not a plate.

    The median of the text box is the background colour (characters are
    the minority of its pixels). Yellow, white and grey plates pass; the
    rare blue or green plate needs ``reject_sign_colours = false``.
    """
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    patch = frame[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    if patch.size == 0:
        return False
    hsv = cv2.cvtColor(patch, cv2.COLOR_BGR2HSV).reshape(-1, 3)
    hue, sat, _ = np.median(hsv, axis=0)
    return bool(sat >= SIGN_MIN_SATURATION and SIGN_HUES[0] <= hue <= SIGN_HUES[1])


def _merge(a: RegionBox, b: RegionBox) -> RegionBox | None:
    """Union of two boxes on the same text line with a plate-sized gap, else None."""
    ha, hb = a.height, b.height
    if max(ha, hb) > 1.4 * min(ha, hb):
        return None
    ax1, ay1, _ax2, ay2 = a.bbox
    bx1, by1, _bx2, by2 = b.bbox
    h = (ha + hb) / 2
    if abs((ay1 + ay2) / 2 - (by1 + by2) / 2) > 0.35 * h:
        return None
    left, right = (a, b) if ax1 <= bx1 else (b, a)
    gap = right.bbox[0] - left.bbox[2]
    if gap > 1.2 * h or gap < -0.3 * h:
        return None
    quad = np.array([left.quad[0], right.quad[1], right.quad[2], left.quad[3]], dtype=np.float32)
    return RegionBox(quad=quad, score=min(a.score, b.score))
