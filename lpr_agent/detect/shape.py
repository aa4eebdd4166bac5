"""Plate-shape evidence: is this text line printed on a plate?

Text alone cannot tell a plate from a badge (``GS300``, ``E150``), a sign
(``EXIT 79B``) or an all-digit number, and the old rule "needs a letter and a
digit" dropped every all-digit and vanity plate. A plate, though, is a
rectangle of its own: its top and bottom edges are straight lines running
along the whole text line, close above and below the characters. Chrome
badges and sign lettering sit on a car body or a sign panel that continues
far beyond the text; at most one edge (a trim line, a panel border) is near.

:func:`edge_lines` measures that on the text line's rectified crop, grown by
half a text height above and below: for each row near the top (bottom) of the
text, the fraction of columns where the brightness steps the same way; the
best row on each side is the evidence for that side (1.0 = an unbroken line
across the whole text). On the EU dev set, read plates score ≥ 0.55 on average
of the two sides with few exceptions, and the badges and shop-window words
mostly < 0.5 with one side at 0 (a single trim line).

:class:`ShapeRules` turns it into a decision, asking more evidence of the
text the weaker the text itself is: a mixed letter-and-digit read that fits
a region layout needs none, any other mixed read needs one good side on
average, an all-digit or all-letter read (vanity, or a number on a sign)
needs both sides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lpr_agent.detect.backends.onnx_ocr import crop_quad

log = logging.getLogger(__name__)

SEARCH_INSIDE = 0.12  # the DB box can overshoot the characters by this much (text heights)
NORM_HEIGHT = 32  # text height after rescaling: thresholds do not depend on resolution
# Ink (the characters) is the minority of a plate's text line: dark strokes on
# paper. Chrome badges on paint and light-on-dark lettering are the majority.
MAX_INK = 0.45
# (Known cost: an all-letter plate of wide letters, MPMAUU, reaches 0.53 and is
# dropped. Allowing 0.58 with close edges let two sticker words through on the
# EU set, LIQUI and MOLY.)
# European margins: a mixed read needs only one clear edge on average there.
NARROW_REACH = 0.3


@dataclass(frozen=True)
class EdgeEvidence:
    top: float  # 0..1: longest straight brightness step above the text
    bottom: float
    ink: float  # fraction of the text rows darker than half-way ink..paper

    @property
    def mean(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def both(self) -> float:
        return min(self.top, self.bottom)


def _grow(quad: np.ndarray, grow_y: float) -> np.ndarray:
    """``quad`` extended by ``grow_y`` of its height above and below."""
    q = quad.astype(np.float32)
    down = (q[3] - q[0] + q[2] - q[1]) / 2
    shift = down * grow_y
    return np.array([q[0] - shift, q[1] - shift, q[2] + shift, q[3] + shift], np.float32)


def edge_lines(frame: np.ndarray, quad: np.ndarray, reach: float = 0.3) -> EdgeEvidence:
    """Plate edges within ``reach`` text heights above and below the text line."""
    grow = reach + 0.2
    crop = crop_quad(frame, _grow(quad, grow))
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h, w = crop.shape[:2]
    if h < 4 or w < 4:
        return EdgeEvidence(0.0, 0.0, 1.0)
    total = round(NORM_HEIGHT * (1 + 2 * grow))
    crop = cv2.resize(crop, (max(8, round(w * total / h)), total),
                      interpolation=cv2.INTER_AREA).astype(np.float32)
    grad = cv2.Sobel(crop, cv2.CV_32F, 0, 1, ksize=3) / 4
    # A step is "real" relative to this crop's contrast (dim night frames too).
    lo, hi = np.percentile(crop, (5, 95))
    thr = max(8.0, 0.15 * float(hi - lo))
    top_text = round((total - NORM_HEIGHT) / 2)
    bottom_text = top_text + NORM_HEIGHT

    def best(r0: float, r1: float) -> float:
        rows = range(max(1, int(r0)), min(total - 1, int(r1)))
        scores = [max(float((grad[r] > thr).mean()), float((grad[r] < -thr).mean()))
                  for r in rows]
        return max(scores, default=0.0)

    text = crop[top_text:bottom_text]
    ink_level, paper_level = np.percentile(text, (10, 90))
    ink = float((text < (ink_level + paper_level) / 2).mean())
    reach_px, inside = reach * NORM_HEIGHT, SEARCH_INSIDE * NORM_HEIGHT
    return EdgeEvidence(best(top_text - reach_px, top_text + inside),
                        best(bottom_text - inside, bottom_text + reach_px), ink)


SIDE_REACH = 1.5  # a plate's side edges are this close to its characters (text heights)
SIDE_MIN = 0.6  # fraction of the plate's height a side edge must run along


def side_edges(frame: np.ndarray, quad: np.ndarray) -> float:
    """The weaker of the plate's left and right edges near the ends of the text (0..1).

    A sign's panel or a shop window is a light rectangle with dark text too,
    but much wider than its text; a plate ends within a character or so.
    """
    q = _grow(quad, 0.3).astype(np.float32)
    across = (q[1] - q[0] + q[2] - q[3]) / 2
    height = float(np.linalg.norm((q[3] - q[0] + q[2] - q[1]) / 2)) / 1.6
    width = float(np.linalg.norm(across))
    if width < 1 or height < 1:
        return 0.0
    unit = across / width * SIDE_REACH * height
    crop = crop_quad(frame, np.array([q[0] - unit, q[1] + unit, q[2] + unit, q[3] - unit],
                                     np.float32))
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h, w = crop.shape[:2]
    if h < 4 or w < 4:
        return 0.0
    scale = NORM_HEIGHT * 1.6 / h
    crop = cv2.resize(crop, (max(8, round(w * scale)), round(NORM_HEIGHT * 1.6)),
                      interpolation=cv2.INTER_AREA).astype(np.float32)
    grad = cv2.Sobel(crop, cv2.CV_32F, 1, 0, ksize=3) / 4
    lo, hi = np.percentile(crop, (5, 95))
    thr = max(8.0, 0.15 * float(hi - lo))
    reach = round(SIDE_REACH * NORM_HEIGHT)
    inside = round(SEARCH_INSIDE * NORM_HEIGHT)
    cols = grad.shape[1]

    def best(c0: int, c1: int) -> float:
        scores = [max(float((grad[:, c] > thr).mean()), float((grad[:, c] < -thr).mean()))
                  for c in range(max(1, c0), min(cols - 1, c1))]
        return max(scores, default=0.0)

    return min(best(0, reach + inside), best(cols - reach - inside, cols))


@dataclass(frozen=True)
class ShapeRules:
    mixed_min: float = 0.5  # mean of both sides, mixed read fitting no layout
    single_kind_min: float = 0.5  # both sides, all-digit / all-letter read
    # Beyond European margins: plates' edges are unbroken lines (≥ 0.9 on the
    # EU set and synthetic US plates), stray lines there are not (≤ 0.8).
    wide_min: float = 0.85
    enabled: bool = True

    def accepts(self, frame: np.ndarray, quad: np.ndarray, text: str, raw: str,
                fits_layout: bool, reaches: Sequence[float] = (0.3,)) -> bool:
        """``text`` (the corrected read of ``raw``) on the line ``quad`` is a plate.

        ``reaches``: how far from the characters the plate edges may be, one
        per region that would accept the text (US plates have wide margins,
        European ones narrow). The kind is judged on both texts: ``FELICIA``
        corrected into the layout ``FE11CIA`` is still an all-letter read.
        """
        if not self.enabled:
            return True
        mixed = not any(t.isdigit() or t.isalpha() for t in (text, raw))
        if mixed and fits_layout:
            return True  # the layout is the evidence
        # The narrow look always: a box that takes in the whole plate (blur,
        # small plates) has the plate's edges right at its border.
        for reach in sorted({NARROW_REACH, *reaches}):
            evidence = edge_lines(frame, quad, reach)
            # Looking further from the text finds more stray lines (bumpers,
            # trim, panel borders), so wide-margin evidence must be complete:
            # both edges, and dark characters on paper.
            narrow = reach <= NARROW_REACH
            if mixed and narrow and evidence.mean >= self.mixed_min:
                return True
            need = self.single_kind_min if narrow else self.wide_min
            if evidence.both >= need and evidence.ink <= MAX_INK and (
                    narrow or side_edges(frame, quad) >= SIDE_MIN):
                return True
        return False
