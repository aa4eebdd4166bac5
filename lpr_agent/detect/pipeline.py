"""The detection pipeline: frames → plate reads → tracks → one ``DetectionResult`` per vehicle.

Runs in a worker thread of the daemon (OpenCV and onnxruntime release the
GIL). See docs/architecture.md for the contract.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lpr_agent.detect.config import DetectorConfig, SourceConfig
from lpr_agent.detect.motion import MotionGate
from lpr_agent.detect.output import build_result
from lpr_agent.detect.reader import FrameReads, PlateReader
from lpr_agent.detect.sources import Frame, FrameGrabber, open_source, redact_url
from lpr_agent.detect.tracker import PlateTracker, Sighting, TrackEvent
from lpr_agent.protocol import DetectionResult

log = logging.getLogger(__name__)

Sink = Callable[[DetectionResult], None]
MAX_CONSECUTIVE_ERRORS = 20


class _Identity:
    """Anything with ``camera_id`` and ``checkpoint_id`` (``CameraIdentity``)."""

    camera_id: str
    checkpoint_id: str


@dataclass
class PipelineStats:
    source_url: str  # password redacted: stats travel to the server in health reports
    source_state: str  # idle, opening, running, reconnecting, stalled, ended, stopped
    source_error: str | None
    source_fps: float  # frames the source delivered per second
    fps: float  # frames processed per second
    frames: int  # frames processed
    frames_dropped: int  # frames replaced by a newer one before being processed
    last_frame_age_s: float | None
    reconnects: int
    model_loaded: bool
    detector_mean_ms: float  # mean over recent frames
    stage_ms: dict[str, float] = field(default_factory=dict)  # detect / recognise / filter
    plates_read: int = 0  # plate reads over all frames (before de-duplication)
    events_emitted: int = 0
    events_suppressed: int = 0  # same plate within the cooldown
    sink_errors: int = 0
    frame_errors: int = 0  # frames the detector failed on
    active_tracks: int = 0
    frames_skipped: int = 0  # processed frames without motion (detection skipped)
    frame_size: tuple[int, int] | None = None  # (width, height) of the latest frame
    model: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class DetectionPipeline:
    def __init__(
        self,
        source: SourceConfig,
        detector: DetectorConfig,
        identity: Any,
        sink: Sink,
        *,
        reader: PlateReader | None = None,
    ) -> None:
        self.source_config = source
        self.detector_config = detector
        self.identity = identity
        self.sink = sink
        # A reader may be shared (tests load the models once per session).
        self.reader = reader or PlateReader(detector)
        self.tracker = PlateTracker(
            track_timeout_s=detector.track_timeout_s,
            max_track_s=detector.max_track_s,
            cooldown_s=detector.cooldown_s,
            min_hits=detector.min_hits,
        )
        self._heartbeat = time.monotonic()
        self._grabber: FrameGrabber | None = None
        self._lock = threading.Lock()
        self._frames = 0
        self._plates_read = 0
        self._events = 0
        self._sink_errors = 0
        self._frame_errors = 0
        self._latency: deque[float] = deque(maxlen=100)
        self._stages: dict[str, deque[float]] = {}
        self._processed_at: deque[float] = deque(maxlen=50)
        self._sim_offset: float | None = None  # frame clock minus monotonic clock
        self.motion = (MotionGate(min_changed=detector.motion_min_changed,
                                  max_skip_s=detector.motion_max_skip_s,
                                  roi=tuple(detector.roi) if detector.roi else None)
                       if detector.motion_skip else None)

    # --- lifecycle -----------------------------------------------------------------
    @property
    def heartbeat(self) -> float:
        """``time.monotonic()`` of the last loop turn (for the systemd watchdog)."""
        return self._heartbeat

    @property
    def loaded(self) -> bool:
        return self.reader.loaded

    def load(self) -> None:
        """Load the models (seconds); call before :meth:`run` to report start-up progress."""
        if self.reader.loaded:
            return
        t0 = time.monotonic()
        self.reader.load()
        self._heartbeat = time.monotonic()
        log.info("detector loaded in %.1f s: %s", time.monotonic() - t0,
                 self.reader.backend.describe())

    def run(self, stop: threading.Event) -> None:
        """Capture and detect until ``stop`` is set or a finite source ends."""
        self.load()
        grabber = FrameGrabber(open_source(self.source_config), self.source_config)
        self._grabber = grabber
        grabber.start()
        interval = 1.0 / self.source_config.max_fps
        next_slot = time.monotonic()
        consecutive_errors = 0
        try:
            while not stop.is_set():
                self._heartbeat = time.monotonic()
                frame = grabber.get(timeout=0.5)
                if frame is None:
                    if grabber.ended:
                        log.info("frame source ended")
                        break
                    # No frame (source down or slow): still close tracks that
                    # timed out, so a reading is not held back by an outage.
                    self._emit(self.tracker.update([], self._tracker_now(), keep_frames=True))
                    continue
                try:
                    self.process_frame(frame)
                    consecutive_errors = 0
                except Exception:
                    # One bad frame (corrupt decode, odd size) must not stop
                    # the camera; a detector that fails on every frame must.
                    consecutive_errors += 1
                    with self._lock:
                        self._frame_errors += 1
                    log.exception("detection failed on frame %d", frame.index)
                    if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                        raise
                next_slot += interval
                delay = next_slot - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                else:
                    next_slot = time.monotonic()
        finally:
            grabber.stop()
            self._emit(self.tracker.flush())
            self._heartbeat = time.monotonic()

    # --- per frame -----------------------------------------------------------------
    def _tracker_now(self) -> float:
        offset = self._sim_offset or 0.0
        return time.monotonic() + offset

    def detect(self, frame: Frame) -> FrameReads:
        """Plate reads of one frame (no tracking); updates latency statistics."""
        t0 = time.perf_counter()
        reads = self.reader.read(frame.image)
        total = (time.perf_counter() - t0) * 1000
        with self._lock:
            self._frames += 1
            self._plates_read += len(reads.plates)
            self._latency.append(total)
            for stage, ms in reads.timings_ms.items():
                self._stages.setdefault(stage, deque(maxlen=100)).append(ms)
            self._processed_at.append(time.monotonic())
        return reads

    def process_frame(self, frame: Frame) -> list[DetectionResult]:
        """Detect, track, and emit the events this frame completes; returns them."""
        # The tracker runs on the frame's own clock (the synthetic source's is
        # simulated); remember the offset to keep expiring tracks between frames.
        self._sim_offset = frame.monotonic - time.monotonic()
        if self.motion is not None and not self.motion.should_detect(frame.image,
                                                                     frame.monotonic):
            # Nothing moved: no new sightings, but tracks still time out.
            with self._lock:
                self._frames += 1
                self._processed_at.append(time.monotonic())
            return self._emit(self.tracker.update([], frame.monotonic))
        reads = self.detect(frame)
        sightings = [
            Sighting(read=plate, time=frame.monotonic, frame=frame.image,
                     processing_ms=reads.total_ms, meta={"index": frame.index})
            for plate in reads.plates
        ]
        return self._emit(self.tracker.update(sightings, frame.monotonic))

    def flush(self) -> list[DetectionResult]:
        """Emit the tracks still open (end of input)."""
        return self._emit(self.tracker.flush())

    def _emit(self, events: list[TrackEvent]) -> list[DetectionResult]:
        results = []
        for event in events:
            result = build_result(event, self.detector_config, self.identity.camera_id,
                                  self.identity.checkpoint_id)
            results.append(result)
            try:
                self.sink(result)
            except Exception:
                # The sink is the spool: a failure there must not stop
                # capture; the daemon's health report shows the count.
                log.exception("sink failed for plate %s", event.text)
                with self._lock:
                    self._sink_errors += 1
                continue
            with self._lock:
                self._events += 1
            log.info("plate %s (%d frames, conf %.2f)", event.text, event.hits, event.confidence)
        return results

    # --- statistics -----------------------------------------------------------------
    def stats(self) -> PipelineStats:
        grabber = self._grabber
        with self._lock:
            lat = list(self._latency)
            stages = {k: round(sum(v) / len(v), 1) for k, v in self._stages.items() if v}
            times = list(self._processed_at)
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and \
                times[-1] > times[0] else 0.0
            return PipelineStats(
                source_url=redact_url(self.source_config.url),
                source_state=grabber.state if grabber else "idle",
                source_error=grabber.error if grabber else None,
                source_fps=round(grabber.fps, 2) if grabber else 0.0,
                fps=round(fps, 2),
                frames=self._frames,
                frames_dropped=grabber.frames_dropped if grabber else 0,
                last_frame_age_s=(round(age, 3) if grabber and
                                  (age := grabber.last_frame_age_s) is not None else None),
                reconnects=grabber.reconnects if grabber else 0,
                model_loaded=self.reader.loaded,
                detector_mean_ms=round(sum(lat) / len(lat), 1) if lat else 0.0,
                stage_ms=stages,
                plates_read=self._plates_read,
                events_emitted=self._events,
                events_suppressed=self.tracker.suppressed,
                sink_errors=self._sink_errors,
                frame_errors=self._frame_errors,
                active_tracks=len(self.tracker.tracks),
                frames_skipped=self.motion.skipped if self.motion else 0,
                frame_size=grabber.frame_size if grabber else None,
                model=self.reader.backend.describe() if self.reader.loaded else {},
            )
