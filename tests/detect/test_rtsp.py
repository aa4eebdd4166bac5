"""A real RTSP camera (GStreamer, H.264) and the ways cameras fail in the field.

The camera is ``tests/helpers/rtsp_camera.py`` running under Debian's
``/usr/bin/python3``; the agent side is the real ``FrameGrabber`` /
``DetectionPipeline`` reading ``rtsp://127.0.0.1:PORT/cam`` through PyAV
(``lpr_agent/detect/av_source.py``). Each failure must be detected, visible in
the stats the health report carries (state + error), and recovered from with
backoff.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from lpr_agent.detect.av_source import AvSource
from lpr_agent.detect.config import DetectorConfig, SourceConfig
from lpr_agent.detect.frame import Frame, SourceError
from lpr_agent.detect.pipeline import DetectionPipeline
from lpr_agent.detect.reader import PlateReader
from lpr_agent.detect.sources import FrameGrabber, open_source, redact_url
from lpr_agent.identity import CameraIdentity
from lpr_agent.protocol import DetectionResult
from tests.helpers.prereq import require
from tests.helpers.rtsp_camera import (
    Clip,
    RtspCamera,
    make_certificate,
    render_clip,
    rtsp_unavailable,
    rtsps_unavailable,
)

SMALL_PLATES = ["AB123CD", "XY987ZT"]  # 640x360 clip
LARGE_PLATES = ["KL456MN"]  # 1280x720 clip


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Clip, Clip]:
    reason = rtsp_unavailable()
    require(reason is None, f"GStreamer's RTSP server under /usr/bin/python3: {reason}")
    root = tmp_path_factory.mktemp("rtsp-clips")
    small = render_clip(root / "small", SMALL_PLATES, 640, 360)
    large = render_clip(root / "large", LARGE_PLATES, 1280, 720)
    assert small.plates == SMALL_PLATES and large.plates == LARGE_PLATES
    return small, large


@pytest.fixture
def camera(clips: tuple[Clip, Clip]) -> Iterator[RtspCamera]:
    with RtspCamera(list(clips)) as cam:
        yield cam


def rtsp_config(camera: RtspCamera, **overrides: object) -> SourceConfig:
    values: dict[str, object] = {"url": camera.url, "read_timeout_s": 2.0,
                                 "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0}
    values.update(overrides)
    return SourceConfig(**values)  # type: ignore[arg-type]


def take(grabber: FrameGrabber, timeout: float,
         accept: Callable[[Frame], bool] = lambda f: True) -> Frame | None:
    """The first frame within ``timeout`` s that ``accept`` likes."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        frame = grabber.get(timeout=min(left, 0.5))
        if frame is not None and accept(frame):
            return frame
    return None


def connections_to(port: int) -> list[str]:
    """TCP connections of this process to ``port`` that are established."""
    return [c.status for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


# --- reading plates; the camera restarting -------------------------------------------
@pytest.mark.slow
def test_pipeline_reads_plates_from_rtsp_and_rides_out_a_camera_restart(
        camera: RtspCamera, reader: PlateReader) -> None:
    results: list[DetectionResult] = []
    pipeline = DetectionPipeline(rtsp_config(camera), DetectorConfig(cooldown_s=0),
                                 CameraIdentity(), results.append, reader=reader)
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    worker.start()
    try:
        def plates() -> set[str]:
            return {d.text for r in list(results) for d in r.plate_detections}

        assert wait_for(lambda: set(SMALL_PLATES) <= plates(), 40), (
            plates(), pipeline.stats())
        stats = pipeline.stats()
        assert stats.source_state == "running" and stats.source_error is None
        assert stats.source_fps > 5  # the camera sends 10 fps
        assert camera.setups() == ["RTP/AVP/TCP;unicast;interleaved=0-1"]  # the default

        camera.kill()  # power cut: the kernel resets the connection
        assert wait_for(lambda: pipeline.stats().source_state in ("reconnecting", "opening")
                        and pipeline.stats().reconnects >= 2, 15), pipeline.stats()
        assert pipeline.stats().source_error  # health says why
        time.sleep(2.0)
        # Backoff, not a spin: attempts against the closed port are spaced out.
        assert pipeline.stats().reconnects < 25

        read_before = len(results)
        camera.start()  # the camera is back on the same address
        assert wait_for(lambda: pipeline.stats().source_state == "running", 20), \
            pipeline.stats()
        assert wait_for(lambda: len(results) > read_before, 30), pipeline.stats()
        assert {d.text for r in results[read_before:] for d in r.plate_detections} \
            <= set(SMALL_PLATES)
        assert pipeline.stats().source_error is None
    finally:
        stop.set()
        worker.join(15)
    assert not worker.is_alive()


# --- stalls: the connection stays open, no frames come --------------------------------
@pytest.mark.slow
def test_frozen_camera_with_open_socket_is_detected_within_the_read_timeout(
        camera: RtspCamera) -> None:
    config = rtsp_config(camera)
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    try:
        assert take(grabber, 20) is not None
        camera.freeze()  # SIGSTOP: the camera hangs, its socket stays open
        frozen_at = time.monotonic()
        time.sleep(0.5)
        # The rig really stalls: connected, the server stopped, nothing flowing.
        assert psutil.Process(camera.pid).status() == psutil.STATUS_STOPPED
        assert connections_to(camera.port), "the stalled stream's TCP connection is gone"
        grabber.get(timeout=0.01)  # drop a frame that was already on its way
        assert grabber.get(timeout=0.8) is None
        assert connections_to(camera.port)

        assert wait_for(lambda: grabber.state != "running", 10)
        detected_after = time.monotonic() - frozen_at
        # The read timeout (2 s) is the detection time; before the fix, two
        # more timeouts passed while stale decoder frames came out as fresh.
        assert detected_after < config.read_timeout_s * 1.75, detected_after
        assert "stalled" in (grabber.error or ""), grabber.error
        last = grabber.last_frame_monotonic
        assert last is not None and last < frozen_at + 1.0  # no stale frame passed as new
        # Reopening a hung camera: TCP is accepted, RTSP never answered — said so.
        assert wait_for(lambda: "no answer within 2.0 s" in (grabber.error or ""), 10), \
            grabber.error

        camera.thaw()
        assert wait_for(lambda: grabber.state == "running", 20), (grabber.state, grabber.error)
        assert take(grabber, 10) is not None
        assert grabber.reconnects >= 1
    finally:
        camera.thaw()
        grabber.stop()


@pytest.mark.slow
def test_stalled_encoder_while_the_camera_answers_rtsp_is_detected(
        camera: RtspCamera) -> None:
    config = rtsp_config(camera)
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    try:
        assert take(grabber, 20) is not None
        camera.toggle_feed()  # the encoder stops; the server process runs on
        stalled_at = time.monotonic()
        assert wait_for(lambda: grabber.state != "running", 10)
        assert time.monotonic() - stalled_at < config.read_timeout_s * 1.75
        assert grabber.error, "the stall must be reported"
        camera.toggle_feed()
        assert wait_for(lambda: grabber.state == "running", 20), (grabber.state, grabber.error)
        assert take(grabber, 10) is not None
    finally:
        grabber.stop()


class _NoKeyframes(AvSource):
    """The camera's real packets with every keyframe lost: nothing can be decoded."""

    def _demux(self, container: Any, stream: Any) -> Iterator[Any]:
        return (p for p in container.demux(stream) if not p.is_keyframe)


@pytest.mark.slow
def test_packets_that_never_decode_count_as_a_stall(camera: RtspCamera) -> None:
    # Packets keep flowing (so no read timeout fires) yet no picture comes out:
    # a broken encoder, or a camera whose keyframes are always lost.
    config = rtsp_config(camera)
    source = _NoKeyframes(camera.url, config)
    source.open()
    try:
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"stalled, no frame for .* none decodes"):
            source.read()
        assert config.read_timeout_s <= time.monotonic() - started < config.read_timeout_s * 1.75
    finally:
        source.close()


# --- resolution changes -------------------------------------------------------------
def _shape_of(clip: Clip) -> tuple[int, int, int]:
    return (clip.height, clip.width, 3)


@pytest.mark.slow
def test_resolution_change_by_a_camera_restart(
        clips: tuple[Clip, Clip], reader: PlateReader) -> None:
    small, large = clips
    with RtspCamera([small]) as camera:
        config = rtsp_config(camera)
        grabber = FrameGrabber(open_source(config), config)
        grabber.start()
        try:
            first = take(grabber, 20)
            assert first is not None and first.image.shape == _shape_of(small)
            camera.clips = [large]
            camera.restart()
            frame = take(grabber, 30, lambda f: f.image.shape == _shape_of(large)
                         and bool(reader.read(f.image).plates))
            assert frame is not None, (grabber.state, grabber.error)
            assert [p.text for p in reader.read(frame.image).plates] == LARGE_PLATES
        finally:
            grabber.stop()


@pytest.mark.slow
def test_resolution_change_inside_the_running_stream(
        camera: RtspCamera, clips: tuple[Clip, Clip], reader: PlateReader) -> None:
    small, large = clips
    config = rtsp_config(camera)
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    try:
        first = take(grabber, 20)
        assert first is not None and first.image.shape == _shape_of(small)
        camera.next_clip()  # new SPS/PPS in the same RTSP session
        frame = take(grabber, 15, lambda f: f.image.shape == _shape_of(large))
        shapes = {f.image.shape for f in [first]}
        assert frame is not None, (
            f"no {large.width}x{large.height} frame after the camera changed resolution "
            f"(grabber state {grabber.state}, error {grabber.error}, shapes {shapes})")
        assert take(grabber, 15, lambda f: f.image.shape == _shape_of(large) and [
            p.text for p in reader.read(f.image).plates] == LARGE_PLATES) is not None
    finally:
        grabber.stop()


@pytest.mark.slow
def test_resolution_change_is_followed_without_a_reconnect_and_logged_once(
        camera: RtspCamera, clips: tuple[Clip, Clip], caplog: pytest.LogCaptureFixture) -> None:
    small, large = clips
    caplog.set_level(logging.INFO, logger="lpr_agent.detect.sources")
    config = rtsp_config(camera)
    grabber = FrameGrabber(open_source(config), config)
    grabber.start()
    try:
        assert take(grabber, 20) is not None
        assert grabber.frame_size == (small.width, small.height)
        camera.next_clip()
        # (How soon is a benchmark figure: benchmarks/rtsp_capture_bench.py switch_s.)
        assert take(grabber, 15, lambda f: f.image.shape == _shape_of(large)) is not None, (
            grabber.state, grabber.error)
        # Every later frame keeps the new size; the session was never reopened.
        for _ in range(5):
            frame = take(grabber, 5)
            assert frame is not None and frame.image.shape == _shape_of(large), (
                None if frame is None else frame.image.shape, grabber.state, grabber.error)
        assert grabber.frame_size == (large.width, large.height)
        assert grabber.reconnects == 0 and grabber.state == "running", (
            grabber.reconnects, grabber.state, grabber.error)
    finally:
        grabber.stop()
    changes = [r.getMessage() for r in caplog.records if "resolution changed" in r.getMessage()]
    assert len(changes) == 1, changes
    assert changes[0].startswith(f"camera resolution changed {small.width}x{small.height} -> "
                                 f"{large.width}x{large.height}")


# --- transport and FFmpeg options ---------------------------------------------------
@pytest.mark.slow
def test_rtsp_transport_and_options_are_applied_per_source(
        clips: tuple[Clip, Clip], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # An operator's old OpenCV variable must not change the transport; it is
    # named in a warning (once per source) instead of being silently ignored.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;http")
    small, _large = clips
    with RtspCamera([small], audio=True) as camera:  # video + G.711 audio, like most cameras
        for transport, expected in (("udp", "RTP/AVP/UDP"), ("tcp", "RTP/AVP/TCP")):
            config = rtsp_config(camera, rtsp_transport=transport,
                                 ffmpeg_options={"user_agent": f"lpr-test-{transport}"})
            source = open_source(config)
            assert isinstance(source, AvSource)
            for _reopen in range(2):
                source.open()
                try:
                    assert source.read().image.shape == (360, 640, 3)
                finally:
                    source.close()
            assert camera.setups()[-1].startswith(expected), camera.setups()
            assert camera.user_agents()[-1] == f"lpr-test-{transport}"  # reached FFmpeg
        # One SETUP per open: the audio stream is never set up (nor received).
        assert len(camera.setups()) == 4, camera.setups()
    warnings = [r for r in caplog.records if "OPENCV_FFMPEG_CAPTURE_OPTIONS" in r.getMessage()]
    assert len(warnings) == 2, warnings  # one per source, not one per (re)open


def test_rtsp_transport_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="rtsp_transport"):
        SourceConfig(rtsp_transport="http")  # type: ignore[arg-type]


def test_ffmpeg_options_cannot_override_the_settings_that_have_their_own_key() -> None:
    with pytest.raises(ValueError, match=r"set 'rtsp_transport' with \[source\] rtsp_transport"):
        SourceConfig(ffmpeg_options={"rtsp_transport": "udp"})
    with pytest.raises(ValueError, match="read_timeout_s"):
        SourceConfig(ffmpeg_options={"timeout": 5})
    with pytest.raises(ValueError, match="not an FFmpeg option name"):
        SourceConfig(ffmpeg_options={"buffer size": 1})
    config = SourceConfig(url="rtsp://cam/s", read_timeout_s=3, ffmpeg_options={
        "buffer_size": 4194304, "analyzeduration": "2000000"})
    options = AvSource(config.url, config).options()
    # The operator's values win over our defaults; the timeout (µs) backs up
    # the 3 s interrupt callback and must come after it.
    assert options["buffer_size"] == "4194304" and options["analyzeduration"] == "2000000"
    assert options["rtsp_transport"] == "tcp" and int(options["timeout"]) > 3_000_000


@pytest.mark.slow
def test_rtsps_camera_encrypted_and_optionally_verified(
        clips: tuple[Clip, Clip], tmp_path: Path) -> None:
    reason = rtsps_unavailable()
    require(reason is None, f"an rtsps:// test camera: {reason}")
    cert, key = make_certificate(tmp_path)
    (tmp_path / "other").mkdir()
    other_ca, _ = make_certificate(tmp_path / "other")
    small, _large = clips
    with RtspCamera([small], tls=(cert, key)) as camera:
        assert camera.url.startswith("rtsps://")
        # FFmpeg's default (cameras mostly have self-signed certificates):
        # encrypted, not verified; and verified against the camera's own CA.
        for options in ({}, {"tls_verify": 1, "ca_file": str(cert)}):
            source = open_source(rtsp_config(camera, ffmpeg_options=options))
            assert isinstance(source, AvSource)
            source.open()
            try:
                assert source.read().image.shape == (360, 640, 3)
            finally:
                source.close()
        # A certificate from another CA is refused, with a hint at the reason.
        source = open_source(rtsp_config(camera, ffmpeg_options={
            "tls_verify": 1, "ca_file": str(other_ca)}))
        with pytest.raises(SourceError, match="certificate check failed"):
            source.open()
        # The camera really speaks TLS only: plain RTSP to it gets nowhere.
        plain = camera.url.replace("rtsps://", "rtsp://")
        with pytest.raises(SourceError):
            AvSource(plain, rtsp_config(camera, url=plain)).open()


@pytest.mark.slow
def test_a_wrong_camera_password_is_reported_and_retried_until_it_is_fixed(
        clips: tuple[Clip, Clip]) -> None:
    small, _large = clips
    with RtspCamera([small], login=("admin", "n3w-pass")) as camera:
        wrong = camera.url.replace("n3w-pass", "old-pass")  # the password was rotated
        config = rtsp_config(camera, url=wrong)
        grabber = FrameGrabber(open_source(config), config)
        grabber.start()
        try:
            assert wait_for(lambda: grabber.reconnects >= 2, 10), grabber.error
            assert "401" in (grabber.error or ""), grabber.error
            assert "old-pass" not in (grabber.error or "")
            assert grabber.last_frame_monotonic is None
        finally:
            grabber.stop()
        config = rtsp_config(camera)  # the right password
        grabber = FrameGrabber(open_source(config), config)
        grabber.start()
        try:
            assert take(grabber, 20) is not None, grabber.error
        finally:
            grabber.stop()


# --- what reaches logs and health reports ---------------------------------------------
def test_a_camera_password_never_reaches_errors_or_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/h264") == \
        "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact_url("rtsp://[fe80::1]:554/x") == "rtsp://[fe80::1]:554/x"
    assert redact_url("rtsp://u:p@[fe80::1]/x") == "rtsp://u:***@[fe80::1]/x"
    assert redact_url("rtsp://u:p@cam:99999/x") == "<unparsable url>"
    with socket.socket() as probe:  # a port where nothing listens: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # PyAV (rtsp) names the reason; OpenCV (an http MJPEG camera) only fails to open.
    for url, reason in ((f"rtsp://admin:s3cret@127.0.0.1:{port}/cam", "refused"),
                        (f"http://admin:s3cret@127.0.0.1:{port}/mjpg", "cannot open")):
        config = SourceConfig(url=url, read_timeout_s=2.0, reconnect_initial_s=0.05,
                              reconnect_max_s=0.1)
        grabber = FrameGrabber(open_source(config), config)
        grabber.start()
        try:
            assert wait_for(lambda: grabber.reconnects >= 1, 10)  # noqa: B023
            assert grabber.error and reason in grabber.error.lower(), grabber.error
            assert "s3cret" not in grabber.error and "admin:***@" in grabber.error
        finally:
            grabber.stop()
    assert "s3cret" not in caplog.text
    assert "frame source rtsp rtsp://admin:***@" in caplog.text
    assert "frame source capture http://admin:***@" in caplog.text


# --- the grabber's own watchdog (a backend whose read timeout never fires) ------------
class _BlockingSource:
    """A live source whose second read blocks until released, then fails."""

    live = True
    description = "blocking test source"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads = 0

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        self.reads += 1
        if self.reads == 1:
            return Frame(np.zeros((4, 4, 3), np.uint8), 1, time.time(), time.monotonic())
        if self.reads == 2:
            self.release.wait(30)
            raise SourceError("read gave up")
        time.sleep(0.05)
        return Frame(np.zeros((4, 4, 3), np.uint8), self.reads, time.time(), time.monotonic())

    def close(self) -> None:
        pass


def test_a_read_blocked_past_its_timeout_shows_as_stalled() -> None:
    source = _BlockingSource()
    config = SourceConfig(url="test:", read_timeout_s=0.3, reconnect_initial_s=0.05,
                          reconnect_max_s=0.1)
    grabber = FrameGrabber(source, config)
    grabber.start()
    try:
        assert take(grabber, 5) is not None
        assert wait_for(lambda: grabber.state == "stalled", 5), grabber.state
        assert "no frame" in (grabber.error or "")
        source.release.set()
        assert wait_for(lambda: grabber.state == "running" and grabber.reconnects == 1, 5)
        assert take(grabber, 5) is not None
        assert grabber.error is None
    finally:
        source.release.set()
        grabber.stop()
