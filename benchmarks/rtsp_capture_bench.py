"""RTSP capture benchmark: PyAV (the agent's rtsp:// source) against OpenCV's capture.

One real RTSP camera (``tests/helpers/rtsp_camera.py``: GStreamer, H.264,
``--fps``), restarted for each variant. Per variant, in this order:

* ``open_s``: ``open()`` until the first frame;
* ``switch_s``: the camera switches 640x360 → 1280x720 inside the running
  stream; time until the first 1280x720 frame (``null``: none within 5 s —
  the frames keep their old size);
* ``cpu_ms_per_frame`` / ``cpu_pct``: CPU time of this process (decode +
  conversion to BGR; the camera is another process) per frame and as % of
  one core, reading every frame of the 1280x720 stream for ``--seconds``;
* ``stall_s``: the camera is SIGSTOPped with its socket open; time until the
  source reports the stall (``read_timeout_s`` = 2 s).

Variants: ``opencv`` (baseline: ``cv2.VideoCapture`` through the old
``CaptureSource``, TCP), and PyAV with one decoder thread (the agent's
choice), frame+slice threads on every core (``AUTO``), and 2 frame threads.
The last line of output is one JSON object.

    .venv/bin/python benchmarks/rtsp_capture_bench.py [--fps 25] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lpr_agent.detect.av_source import AvSource  # noqa: E402
from lpr_agent.detect.config import SourceConfig  # noqa: E402
from lpr_agent.detect.frame import FrameSource, SourceError  # noqa: E402
from lpr_agent.detect.sources import CaptureSource  # noqa: E402
from tests.helpers.rtsp_camera import Clip, RtspCamera, render_clip, rtsp_unavailable  # noqa: E402

READ_TIMEOUT_S = 2.0
VARIANTS = {
    "opencv": None,
    "av_1_thread": ("SLICE", 1),
    "av_auto_threads": ("AUTO", 0),
    "av_2_frame_threads": ("FRAME", 2),
}


def make_source(variant: str, url: str) -> FrameSource:
    config = SourceConfig(url=url, read_timeout_s=READ_TIMEOUT_S)
    threading = VARIANTS[variant]
    if threading is None:
        return CaptureSource(url, config, live=True)
    return AvSource(url, config, thread_type=threading[0], threads=threading[1])


def first_frame_of(source: FrameSource, shape: tuple[int, ...], limit_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        frame = source.read()
        if frame is not None and frame.image.shape == shape:
            return time.monotonic() - started
    return None


def reopen_until_frames(source: FrameSource, tries: int = 5) -> None:
    """Open ``source`` and read a few frames (a loaded machine can time out an open)."""
    for _ in range(tries):
        try:
            source.open()
            for _ in range(5):
                source.read()
            return
        except SourceError as exc:
            print(f"  (reopening: {exc})", flush=True)
    raise SystemExit(f"{source.description}: no frames after {tries} opens")


def measure(variant: str, clips: list[Clip], fps: float, seconds: float) -> dict[str, Any]:
    small, large = clips
    with RtspCamera(clips, fps=fps) as camera:
        source = make_source(variant, camera.url)
        started = time.monotonic()
        source.open()
        first = source.read()
        assert first is not None and first.image.shape == (small.height, small.width, 3)
        open_s = time.monotonic() - started
        camera.next_clip()
        switch_s = first_frame_of(source, (large.height, large.width, 3), 5.0)
        if switch_s is None:  # OpenCV: reopen to measure CPU on the large stream
            reopen_until_frames(source)
        frames, cpu0, wall0 = 0, time.process_time(), time.monotonic()
        while time.monotonic() - wall0 < seconds:
            if source.read() is not None:
                frames += 1
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        camera.freeze()
        frozen = time.monotonic()
        stall_s: float | None = None
        try:
            while time.monotonic() - frozen < 4 * READ_TIMEOUT_S:
                source.read()
        except SourceError:
            stall_s = time.monotonic() - frozen
        camera.thaw()
        source.close()
    return {"open_s": round(open_s, 2),
            "switch_s": None if switch_s is None else round(switch_s, 2),
            "fps": round(frames / wall, 1),
            "cpu_ms_per_frame": round(1000 * cpu / max(frames, 1), 2),
            "cpu_pct": round(100 * cpu / wall, 1),
            "stall_s": None if stall_s is None else round(stall_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if (reason := rtsp_unavailable()) is not None:
        print(f"the RTSP camera cannot run here: {reason}", file=sys.stderr)
        return 2
    # The OpenCV baseline takes its transport only from this process-wide variable.
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    result: dict[str, Any] = {"bench": "rtsp_capture", "fps_sent": args.fps,
                              "read_timeout_s": READ_TIMEOUT_S}
    with tempfile.TemporaryDirectory() as tmp:
        clips = [render_clip(Path(tmp) / "small", ["AB123CD"], 640, 360, fps=args.fps),
                 render_clip(Path(tmp) / "large", ["KL456MN"], 1280, 720, fps=args.fps)]
        for variant in args.variants.split(","):
            result[variant] = r = measure(variant, clips, args.fps, args.seconds)
            print(f"{variant}: open {r['open_s']} s, 640x360 -> 1280x720 after "
                  f"{r['switch_s']} s, {r['fps']} fps, {r['cpu_ms_per_frame']} ms CPU/frame "
                  f"({r['cpu_pct']} % of a core), stall seen after {r['stall_s']} s",
                  flush=True)
    if "opencv" in result and "av_1_thread" in result:
        result["cpu_ratio_av_vs_opencv"] = round(
            result["av_1_thread"]["cpu_ms_per_frame"] / result["opencv"]["cpu_ms_per_frame"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
