"""Plates on files: still images (every plate) and videos (tracked, one result per vehicle).

The library side of ``lpr-agent detect``: the verb only parses arguments and
prints what these generators yield, so the daemon, tests and scripts can run
the same loop without a terminal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lpr_agent.detect.config import DetectorConfig, SourceConfig
from lpr_agent.detect.frame import Frame
from lpr_agent.detect.reader import Box, PlateReader
from lpr_agent.protocol import DetectionResult

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# A video whose container gives no frame rate: assume 25 fps for tracking time.
DEFAULT_FRAME_STEP_S = 0.04


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files to read: folders become their images in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if is_image(p)))
        else:
            files.append(path)
    return files


@dataclass
class ImageResult:
    path: Path
    image: np.ndarray | None  # None: unreadable (``error`` says why)
    result: DetectionResult | None = None
    plates: list[tuple[Box, str, float]] = field(default_factory=list)  # box, text, confidence
    error: str | None = None


def detect_images(
    paths: list[Path], reader: PlateReader, detector: DetectorConfig, camera: Any,
    *, with_images: bool = False,
) -> Iterator[ImageResult]:
    """One result per image with every plate on it (no tracking: photos are unrelated)."""
    from lpr_agent.detect.output import build_frame_result

    for path in paths:
        image = cv2.imread(str(path))
        if image is None:
            yield ImageResult(path, None, error=f"cannot read image {path}")
            continue
        reads = reader.read(image)
        plates = [(p.plate_box, p.text, p.confidence) for p in reads.plates]
        result = build_frame_result(image, plates, reads.total_ms, detector, camera.camera_id,
                                    camera.checkpoint_id, with_images=with_images)
        yield ImageResult(path, image, result, plates)


@dataclass
class VideoStep:
    frame_index: int | None  # None: the end of the video (tracks still open were flushed)
    results: list[DetectionResult]  # events this step completed


class VideoRun:
    """A video file through the tracking pipeline; iterate for per-frame events.

    Opening raises :class:`~lpr_agent.detect.frame.SourceError` (or any
    OpenCV failure) so the caller can report it and go on with the next file.
    """

    def __init__(self, path: Path, reader: PlateReader, source: SourceConfig,
                 detector: DetectorConfig, camera: Any) -> None:
        from lpr_agent.detect.pipeline import DetectionPipeline
        from lpr_agent.detect.sources import CaptureSource

        self.path = path
        cap = cv2.VideoCapture(str(path))
        self.total_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0
        cap.release()
        self.frame_step_s = 1.0 / fps if fps and fps > 0 else DEFAULT_FRAME_STEP_S
        self.results: list[DetectionResult] = []  # every event so far, in order
        self._pipeline = DetectionPipeline(source, detector, camera, self.results.append,
                                           reader=reader)
        self._source = CaptureSource(str(path), source, live=False)
        self._source.open()

    def __iter__(self) -> Iterator[VideoStep]:
        t0 = time.monotonic()
        try:
            while (frame := self._source.read()) is not None:
                # Video time, not wall time: tracking timeouts follow the footage.
                frame = Frame(frame.image, frame.index, frame.wall_time,
                              t0 + frame.index * self.frame_step_s)
                yield VideoStep(frame.index, self._pipeline.process_frame(frame))
        finally:
            self._source.close()
        yield VideoStep(None, self._pipeline.flush())
