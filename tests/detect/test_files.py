"""The library loop behind ``lpr-agent detect``: images and videos without a terminal."""

from __future__ import annotations

from pathlib import Path

import cv2

from lpr_agent.config import CameraIdentity
from lpr_agent.detect.config import DetectorConfig, SourceConfig
from lpr_agent.detect.files import VideoRun, detect_images, expand_paths, is_image
from lpr_agent.detect.reader import PlateReader
from lpr_agent.detect.synthetic import SyntheticSource, parse_synthetic_url


def test_images_give_one_result_each_and_report_unreadable_files(
        reader: PlateReader, eu_data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    files = [eu_data / "eu1.jpg", broken]
    items = list(detect_images(files, reader, DetectorConfig(), CameraIdentity()))
    assert [i.path for i in items] == files
    assert items[0].result is not None and "M5XSX" in items[0].result.ocr_results
    assert [t for _, t, _ in items[0].plates] == items[0].result.ocr_results
    assert items[1].result is None and "cannot read" in (items[1].error or "")


def test_expand_paths_lists_a_folder_in_name_order(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.png", "b.jpg"]
    assert is_image(Path("x.JPEG")) and not is_image(Path("clip.mp4"))


def test_video_run_yields_events_per_frame_then_the_flush(
        reader: PlateReader, tmp_path: Path) -> None:
    source = SyntheticSource(parse_synthetic_url(
        "synthetic:?plates=KD482TR&once=1&fps=4&speed=2&width=960&height=540"))
    source.open()
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 4, (960, 540))
    frames = 0
    while (frame := source.read()) is not None:
        writer.write(frame.image)
        frames += 1
    writer.release()
    run = VideoRun(video, reader, SourceConfig(), DetectorConfig(), CameraIdentity())
    steps = list(run)
    assert run.total_frames == frames
    assert [s.frame_index for s in steps[:-1]] == list(range(1, frames + 1))
    assert steps[-1].frame_index is None  # the flush of open tracks
    assert [r.ocr_results for s in steps for r in s.results] == [["KD482TR"]]
    assert [r.ocr_results for r in run.results] == [["KD482TR"]]
