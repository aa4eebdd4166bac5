"""Frame sources: synthetic, folder, video file, HTTP stream, V4L2; reconnect; latest wins."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lpr_agent.detect.av_source import AvSource
from lpr_agent.detect.config import SourceConfig
from lpr_agent.detect.sources import (
    CaptureSource,
    FolderSource,
    FrameGrabber,
    SourceError,
    open_source,
)
from lpr_agent.detect.synthetic import SyntheticSource, parse_synthetic_url
from tests.detect.mjpeg_server import MjpegCamera


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_open_source_picks_the_kind_from_the_url(tmp_path: Path) -> None:
    assert isinstance(open_source(SourceConfig(url="synthetic:?seed=3")), SyntheticSource)
    assert isinstance(open_source(SourceConfig(url=str(tmp_path))), FolderSource)
    for url in ("rtsp://cam/stream", "RTSPS://cam:322/stream"):
        rtsp = open_source(SourceConfig(url=url))
        assert isinstance(rtsp, AvSource) and rtsp.live  # follows in-stream size changes
    for url in ("http://cam/video.mjpg", "/dev/video0", "v4l2:0"):
        source = open_source(SourceConfig(url=url))
        assert isinstance(source, CaptureSource) and source.live
    video = open_source(SourceConfig(url=str(tmp_path / "clip.mp4")))
    assert isinstance(video, CaptureSource) and not video.live


def test_synthetic_once_gives_every_plate_with_truth() -> None:
    source = SyntheticSource(parse_synthetic_url(
        "synthetic:?plates=AB123CD,XY987ZT&once=1&fps=10&width=640&height=360"))
    source.open()
    seen: dict[str, int] = {}
    frames = 0
    while (frame := source.read()) is not None:
        frames += 1
        assert frame.image.shape == (360, 640, 3)
        for truth in frame.truth:
            seen[truth.text] = seen.get(truth.text, 0) + 1
            x1, y1, x2, y2 = truth.box
            assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 360
    assert set(seen) == {"AB123CD", "XY987ZT"}
    assert all(n >= 20 for n in seen.values())  # each crosses over many frames
    assert source.generated == ["AB123CD", "XY987ZT"]
    # Simulated clock: frame times follow the configured fps exactly.
    assert frames >= 40


def test_synthetic_is_deterministic_for_a_seed() -> None:
    def first_frames(seed: int) -> list[np.ndarray]:
        s = SyntheticSource(parse_synthetic_url(f"synthetic:?seed={seed}&width=640&height=360"))
        s.open()
        return [s.read().image for _ in range(5)]  # type: ignore[union-attr]

    a, b, c = first_frames(7), first_frames(7), first_frames(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_synthetic_bad_options_are_reported() -> None:
    with pytest.raises(ValueError, match="fps"):
        parse_synthetic_url("synthetic:?fps=abc")


def _write_images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((60, 80, 3), i * 20, np.uint8)
        cv2.imwrite(str(folder / f"img{i:02d}.png"), img)


def test_folder_source_reads_images_in_order_and_ends(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    source = FolderSource(tmp_path / "imgs")
    source.open()
    names = []
    while (frame := source.read()) is not None:
        names.append(frame.name)
    assert names == ["img00.png", "img01.png", "img02.png"]


def test_video_file_source(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    assert writer.isOpened()
    for i in range(12):
        writer.write(np.full((120, 160, 3), i * 10, np.uint8))
    writer.release()
    source = open_source(SourceConfig(url=str(path)))
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert len(frames) == 12
    assert frames[-1].image.shape == (120, 160, 3)


def test_missing_v4l2_device_is_retried_with_backoff_not_fatal() -> None:
    config = SourceConfig(url="/dev/video97", reconnect_initial_s=0.05, reconnect_max_s=0.2)
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    try:
        assert wait_for(lambda: grabber.reconnects >= 3, 10)
        assert grabber.state in ("reconnecting", "opening")
        assert grabber.error and "video97" in grabber.error
        assert grabber.get(timeout=0.1) is None
    finally:
        grabber.stop()
    assert grabber.state == "stopped"


def test_folder_grabber_hands_over_every_frame_of_a_finite_source(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", 6)
    config = SourceConfig(url=str(tmp_path / "imgs"))
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    got = []
    while (frame := grabber.get(timeout=5)) is not None:
        got.append(frame.name)
        time.sleep(0.05)  # a slow consumer must not lose frames of a file/folder
    grabber.stop()
    assert len(got) == 6 and grabber.frames_dropped == 0
    assert grabber.state == "ended"


def test_folder_source_that_vanishes_comes_back(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    config = SourceConfig(url=str(folder), loop=True, reconnect_initial_s=0.05,
                          reconnect_max_s=0.1)
    _write_images(folder, 2)
    grabber = FrameGrabber(FolderSource(folder), config)
    grabber.start()
    try:
        assert grabber.get(timeout=5) is not None
        shutil.rmtree(folder)
        # Keep consuming: a finite source waits for its frame to be taken.
        assert wait_for(lambda: grabber.get(timeout=0.05) is None
                        and grabber.state == "reconnecting", 5)
        reconnects = grabber.reconnects
        assert reconnects >= 1
        _write_images(folder, 2)
        frame = grabber.get(timeout=5)
        assert frame is not None and frame.name in ("img00.png", "img01.png")
        assert grabber.state in ("running", "opening")
    finally:
        grabber.stop()


def test_http_stream_latest_frame_wins_and_reconnects_after_the_camera_dies() -> None:
    camera = MjpegCamera(fps=40)
    port = camera.port
    config = SourceConfig(url=camera.url, reconnect_initial_s=0.1, reconnect_max_s=0.5,
                          read_timeout_s=2)
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    try:
        assert grabber.get(timeout=10) is not None
        # A consumer slower than the camera gets the newest frame; the rest are dropped.
        time.sleep(0.5)
        first = grabber.get(timeout=2)
        assert first is not None
        assert grabber.frames_dropped >= 3
        assert grabber.fps > 5
        age = grabber.last_frame_age_s
        assert age is not None and age < 1.0

        camera.close()  # the camera dies
        assert wait_for(lambda: grabber.state in ("reconnecting", "opening")
                        and grabber.reconnects >= 1, 10)

        camera = MjpegCamera(port=port, fps=40)  # and comes back on the same address
        assert wait_for(lambda: grabber.state == "running", 15)
        assert grabber.get(timeout=5) is not None
    finally:
        grabber.stop()
        camera.close()


def test_closed_source_read_raises() -> None:
    source = CaptureSource("/nonexistent/clip.mp4", SourceConfig(), live=False)
    with pytest.raises(SourceError):
        source.open()
    with pytest.raises(SourceError):
        source.read()


def test_synthetic_plate_count_option_and_real_time_default() -> None:
    opts = parse_synthetic_url("synthetic:?plates=3&seed=2", SourceConfig(max_fps=4))
    assert len(opts.plates) == 3 and len(set(opts.plates)) == 3
    assert all(len(p) == 7 for p in opts.plates)
    assert opts.fps == 4


def test_video_file_that_appears_later_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "camera.avi"
    config = SourceConfig(url=str(path), loop=True, reconnect_initial_s=0.05,
                          reconnect_max_s=0.2)
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    try:
        assert wait_for(lambda: grabber.reconnects >= 2, 10)
        assert "cannot open" in (grabber.error or "")
        writing = tmp_path / "writing.avi"
        writer = cv2.VideoWriter(str(writing), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
        for i in range(5):
            writer.write(np.full((120, 160, 3), i * 40, np.uint8))
        writer.release()
        writing.rename(path)
        assert grabber.get(timeout=10) is not None
    finally:
        grabber.stop()
