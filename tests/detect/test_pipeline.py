"""DetectionPipeline end to end: synthetic camera in, protocol results out."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from lpr_agent.config import CameraIdentity
from lpr_agent.detect import DetectionPipeline, DetectorConfig, SourceConfig
from lpr_agent.detect.reader import PlateReader
from lpr_agent.protocol import DetectionResult, parse_inbound

REPO = Path(__file__).resolve().parents[2]


def test_every_synthetic_plate_arrives_exactly_once(reader: PlateReader) -> None:
    plates = ["KD482TR", "BXR5M27", "7WZH481", "MN204LC"]
    results: list[DetectionResult] = []
    pipeline = DetectionPipeline(
        SourceConfig(url=f"synthetic:?plates={','.join(plates)}&once=1&fps=3&cars=2&seed=4",
                     max_fps=1000),
        DetectorConfig(),
        CameraIdentity(camera_id="cam-7", checkpoint_id="gate-1"),
        results.append,
        reader=reader,
    )
    stop = threading.Event()
    pipeline.run(stop)  # returns when the finite source ends
    texts = sorted(r.ocr_results[0] for r in results)
    assert texts == sorted(plates)
    event_ids = {r.event_id for r in results}
    assert len(event_ids) == len(results)
    for r in results:
        parsed = parse_inbound(DetectionResult, r.wire())
        assert parsed.camera_id == "cam-7" and parsed.checkpoint_id == "gate-1"
        assert parsed.annotated_image and parsed.cropped_plates
        assert len(json.dumps(r.wire())) < 1_000_000
    stats = pipeline.stats()
    assert stats.events_emitted == 4
    assert stats.frames > 10 and stats.plates_read > 4 * 3
    assert stats.source_state == "ended"
    assert stats.model_loaded and stats.model["rec_model"]["licence"] == "Apache-2.0"
    assert set(stats.stage_ms) == {"detect", "recognise", "filter"}


def test_source_outage_keeps_heartbeat_and_stops_promptly(reader: PlateReader) -> None:
    pipeline = DetectionPipeline(
        SourceConfig(url="rtsp://admin:s3cret@127.0.0.1:9/none", reconnect_initial_s=0.1,
                     reconnect_max_s=0.2, read_timeout_s=1),
        DetectorConfig(), CameraIdentity(), lambda r: None, reader=reader,
    )
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run, args=(stop,))
    worker.start()
    try:
        time.sleep(1.5)
        beat = pipeline.heartbeat
        time.sleep(1.0)
        assert pipeline.heartbeat > beat  # still turning while the source is down
        stats = pipeline.stats()
        assert stats.source_state in ("reconnecting", "opening")
        assert stats.reconnects >= 1 and stats.source_error
        assert stats.frames == 0 and stats.last_frame_age_s is None
        # Stats travel to the server in every health report: no camera password.
        assert "s3cret" not in json.dumps(stats.as_dict())
        assert "127.0.0.1:9/none" in stats.source_url
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()


def test_sink_failure_does_not_stop_the_pipeline(reader: PlateReader) -> None:
    calls = []

    def bad_sink(result: DetectionResult) -> None:
        calls.append(result)
        raise OSError("disk full")

    pipeline = DetectionPipeline(
        SourceConfig(url="synthetic:?plates=KD482TR,MN204LC&once=1&fps=3", max_fps=1000),
        DetectorConfig(), CameraIdentity(), bad_sink, reader=reader,
    )
    pipeline.run(threading.Event())
    assert len(calls) == 2
    assert pipeline.stats().sink_errors == 2


def test_cli_detect_prints_plates(eu_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ann.jpg"
    proc = subprocess.run(
        [sys.executable, "-m", "lpr_agent", "detect", str(eu_data / "eu1.jpg"), "--json",
         "--annotate", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "M5XSX" in data["ocr_results"]
    parse_inbound(DetectionResult, data)
    assert out.stat().st_size > 1000


def test_cli_detect_on_a_video_gives_one_result_per_vehicle(tmp_path: Path) -> None:
    import cv2

    from lpr_agent.detect.synthetic import SyntheticSource, parse_synthetic_url

    source = SyntheticSource(parse_synthetic_url(
        "synthetic:?plates=KD482TR,BXR5M27&once=1&fps=4&speed=2&width=960&height=540"))
    source.open()
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 4, (960, 540))
    while (frame := source.read()) is not None:
        writer.write(frame.image)
    writer.release()
    proc = subprocess.run(
        [sys.executable, "-m", "lpr_agent", "detect", str(video), "--json"],
        capture_output=True, text=True, timeout=180, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["ocr_results"] for r in results] == [["KD482TR"], ["BXR5M27"]]

