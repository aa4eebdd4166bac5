"""Skip plate detection on frames where nothing moved in the region of interest.

At a checkpoint most frames show an empty road; text detection on them costs
the full ~150 ms and finds nothing new. A frame is compared with the last
frame that *was* detected, both shrunk to :data:`SIZE` px wide, grey and
blurred (sensor noise and JPEG blocks must not count as motion): if fewer
than ``min_changed`` of the ROI's pixels changed by more than ``pixel_delta``
grey levels, detection is skipped. Comparing with the last detected frame,
not the previous one, means a slowly creeping car still triggers once it
has moved enough. A detection is forced every ``max_skip_s`` anyway, so
light changes and a parked car are not ignored forever. Cost: ~1 ms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

SIZE = 160  # width of the comparison image


@dataclass
class MotionGate:
    pixel_delta: int = 12
    min_changed: float = 0.002  # fraction of ROI pixels
    max_skip_s: float = 2.0
    roi: tuple[float, ...] | None = None  # fractions x1, y1, x2, y2
    skipped: int = 0
    _last: np.ndarray | None = field(default=None, repr=False)
    _last_time: float = 0.0

    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self.roi is not None:
            x1, y1, x2, y2 = self.roi
            image = image[int(y1 * h):max(int(y2 * h), int(y1 * h) + 1),
                          int(x1 * w):max(int(x2 * w), int(x1 * w) + 1)]
            h, w = image.shape[:2]
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(gray, (SIZE, max(1, round(h * SIZE / max(w, 1)))),
                           interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (5, 5), 0)

    def should_detect(self, image: np.ndarray, now: float) -> bool:
        """True if ``image`` (taken at ``now``, seconds) needs plate detection."""
        small = self._small(image)
        last = self._last
        if (last is None or last.shape != small.shape
                or now - self._last_time >= self.max_skip_s
                or float((cv2.absdiff(small, last) > self.pixel_delta).mean())
                >= self.min_changed):
            self._last = small
            self._last_time = now
            return True
        self.skipped += 1
        return False
