"""Motion gate: detection is skipped on frames where nothing moved in the ROI."""

from __future__ import annotations

import numpy as np

from lpr_agent.config import CameraIdentity
from lpr_agent.detect.config import DetectorConfig, SourceConfig
from lpr_agent.detect.frame import Frame
from lpr_agent.detect.motion import MotionGate
from lpr_agent.detect.pipeline import DetectionPipeline
from lpr_agent.detect.reader import PlateReader
from lpr_agent.detect.synthetic import SyntheticSource, parse_synthetic_url


def _road(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((720, 1280, 3), 90, np.uint8)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def test_gate_skips_still_frames_and_noise() -> None:
    gate = MotionGate()
    road = _road()
    assert gate.should_detect(road, 0.0)  # the first frame is always detected
    assert not gate.should_detect(_road(seed=1), 0.1)  # only sensor noise differs
    assert not gate.should_detect(road, 0.2)
    car = road.copy()
    car[400:560, 500:800] = (40, 40, 160)
    assert gate.should_detect(car, 0.3)
    assert not gate.should_detect(car, 0.4)  # parked: no new motion ...
    assert gate.should_detect(car, 2.5)  # ... but looked at again after max_skip_s
    assert gate.skipped == 3


def test_gate_watches_only_the_region_of_interest() -> None:
    gate = MotionGate(roi=(0.0, 0.5, 1.0, 1.0))  # the lower half: the road
    road = _road()
    assert gate.should_detect(road, 0.0)
    sky = road.copy()
    sky[50:200, 100:600] = 250  # a bird, a tree in the wind: outside the ROI
    assert not gate.should_detect(sky, 0.1)
    lane = road.copy()
    lane[450:600, 100:500] = 20
    assert gate.should_detect(lane, 0.2)


class CountingReader:
    def __init__(self, inner: PlateReader) -> None:
        self.inner = inner
        self.calls = 0
        self.loaded = True
        self.backend = inner.backend

    def load(self) -> None:
        pass

    def read(self, image: np.ndarray):  # -> FrameReads
        self.calls += 1
        return self.inner.read(image)


def test_pipeline_skips_detection_without_motion_and_still_reads_the_car(
        reader: PlateReader) -> None:
    source = SyntheticSource(parse_synthetic_url(
        "synthetic:?plates=KD482TR&once=1&fps=4&speed=2&width=960&height=540"))
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    empty = frames[0].image.copy()
    # An empty road before and after the car: 12 identical frames each.
    still = [Frame(empty, 0, 0.0, 0.0)] * 12
    sequence = still + frames + still
    results = []
    counting = CountingReader(reader)
    pipeline = DetectionPipeline(SourceConfig(), DetectorConfig(motion_skip=True),
                                 CameraIdentity(), results.append, reader=counting)
    t = 0.0
    for k, frame in enumerate(sequence):
        t += 0.25
        pipeline.process_frame(Frame(frame.image, k + 1, t, t))
    pipeline.flush()
    assert [r.ocr_results for r in results] == [["KD482TR"]]
    stats = pipeline.stats()
    assert stats.frames == len(sequence)
    assert stats.frames_skipped >= 15  # most of the still frames
    assert counting.calls == len(sequence) - stats.frames_skipped
