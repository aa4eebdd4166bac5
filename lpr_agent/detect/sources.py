"""Frame sources and the latest-frame-wins grabber.

Every source yields :class:`Frame` objects. :func:`open_source` picks the
source from ``SourceConfig.url``. :class:`FrameGrabber` runs a source in its
own thread, reopens it with exponential backoff when it fails, and keeps
only the newest frame of a live source, so a detector slower than the camera
never works through a backlog of stale frames.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from lpr_agent.detect.config import SourceConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class SourceError(RuntimeError):
    """The source cannot deliver frames now (it may be reopened later)."""


@dataclass
class Frame:
    image: np.ndarray
    index: int
    wall_time: float  # time.time() at capture
    monotonic: float  # time.monotonic() at capture
    name: str | None = None  # file name for folder sources
    truth: list[Any] = field(default_factory=list)  # synthetic ground truth


class FrameSource(Protocol):
    description: str
    live: bool  # frames keep coming whether we read them or not (camera, stream)

    def open(self) -> None: ...
    def read(self) -> Frame | None:
        """The next frame; None at the end of a finite source; SourceError on failure."""
    def close(self) -> None: ...


class CaptureSource:
    """RTSP/HTTP streams, V4L2 devices and video files through OpenCV's FFmpeg/V4L2."""

    def __init__(self, target: str | int, config: SourceConfig, live: bool) -> None:
        self.target = target
        self.config = config
        self.live = live
        self.description = f"capture {target}"
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def open(self) -> None:
        self.close()
        timeout_ms = int(self.config.read_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
            if self.config.width and self.config.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        elif str(self.target).startswith("/dev/video"):
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_V4L2)
        else:
            if str(self.target).startswith("rtsp"):
                # TCP: UDP loses packets on busy networks and gives smeared frames.
                os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.target}")
        if self.live:
            # A small driver buffer: old frames waiting there are stale frames.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError("source is not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            if self.live:
                raise SourceError(f"{self.target}: no frame (stream ended or timed out)")
            return None
        self._index += 1
        return Frame(image=image, index=self._index, wall_time=time.time(),
                     monotonic=time.monotonic())

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource:
    """Images of a folder in name order (a test set, or frames dropped by another tool)."""

    live = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = f"folder {folder}"
        self._queue: deque[Path] = deque()
        self._index = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder} is not a folder")
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self._queue = deque(files)

    def read(self) -> Frame | None:
        while self._queue:
            path = self._queue.popleft()
            image = cv2.imread(str(path))
            if image is None:
                if not self.folder.is_dir():
                    raise SourceError(f"{self.folder} disappeared")
                log.warning("skipping unreadable image %s", path)
                continue
            self._index += 1
            return Frame(image=image, index=self._index, wall_time=time.time(),
                         monotonic=time.monotonic(), name=path.name)
        return None

    def close(self) -> None:
        self._queue.clear()


def open_source(config: SourceConfig) -> FrameSource:
    """The source named by ``config.url`` (not yet opened)."""
    url = config.url.strip()
    if url.startswith("synthetic:"):
        from lpr_agent.detect.synthetic import SyntheticSource, parse_synthetic_url

        return SyntheticSource(parse_synthetic_url(url, config))
    scheme = urlparse(url).scheme.lower()
    if scheme in {"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp"}:
        return CaptureSource(url, config, live=True)
    if url.startswith("v4l2:"):
        return CaptureSource(int(url.removeprefix("v4l2:") or 0), config, live=True)
    if url.startswith("/dev/video"):
        return CaptureSource(url, config, live=True)
    if url.startswith("file:"):
        url = urlparse(url).path
    path = Path(url)
    if path.is_dir():
        return FolderSource(path)
    return CaptureSource(str(path), config, live=False)


def url_options(url: str) -> dict[str, str]:
    query = url.split("?", 1)[1] if "?" in url else ""
    return {k: v[-1] for k, v in parse_qs(query).items()}


class FrameGrabber:
    """Runs a source in a thread; latest frame wins; reopens with backoff.

    For a live source the grabber reads as fast as the source delivers and
    overwrites the slot, counting frames nobody took as dropped. A finite
    source (file, folder, synthetic) waits until its frame was taken: there
    is no real-time clock to fall behind, and tests rely on seeing every
    frame.
    """

    def __init__(self, source: FrameSource, config: SourceConfig) -> None:
        self.source = source
        self.config = config
        self.state = "idle"  # idle, opening, running, reconnecting, ended, stopped
        self.error: str | None = None
        self.frames_read = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.last_frame_monotonic: float | None = None
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._times: deque[float] = deque(maxlen=50)

    # --- consumer side -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def get(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.state in ("ended", "stopped"):
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            return frame

    @property
    def ended(self) -> bool:
        with self._cond:
            return self.state == "ended" and self._slot is None

    @property
    def fps(self) -> float:
        times = list(self._times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    @property
    def last_frame_age_s(self) -> float | None:
        if self.last_frame_monotonic is None:
            return None
        return time.monotonic() - self.last_frame_monotonic

    # --- producer thread -----------------------------------------------------------
    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._cond:
            self.state = state
            self.error = error
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = self.config.reconnect_initial_s
        opened = False
        frames_since_open = 0
        while not self._stop.is_set():
            if not opened:
                self._set_state("opening", self.error)
                try:
                    self.source.open()
                except Exception as exc:  # any failure means "retry later"
                    self._fail(exc, backoff)
                    backoff = min(backoff * 2, self.config.reconnect_max_s)
                    continue
                opened = True
                frames_since_open = 0
                self._set_state("running")
            try:
                frame = self.source.read()
            except Exception as exc:
                opened = False
                self._close_quietly()
                self._fail(exc, backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            if frame is None:
                self._close_quietly()
                opened = False
                if self.config.loop:
                    if not frames_since_open:
                        # An empty folder/file would spin the CPU reopening it.
                        self._fail(SourceError("source has no frames"), backoff)
                        backoff = min(backoff * 2, self.config.reconnect_max_s)
                    frames_since_open = 0
                    continue
                self._set_state("ended")
                return
            backoff = self.config.reconnect_initial_s
            frames_since_open += 1
            self._publish(frame)
        self._close_quietly()
        self._set_state("stopped")

    def _publish(self, frame: Frame) -> None:
        now = time.monotonic()
        with self._cond:
            if not self.source.live:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.5)
            if self._slot is not None:
                self.frames_dropped += 1
            self._slot = frame
            self.frames_read += 1
            self.last_frame_monotonic = now
            self._times.append(now)
            self._cond.notify_all()

    def _fail(self, exc: BaseException, backoff: float) -> None:
        self.reconnects += 1
        message = str(exc) or type(exc).__name__
        log.warning("frame source %s failed: %s; retrying in %.1f s",
                    self.source.description, message, backoff)
        self._set_state("reconnecting", message)
        self._stop.wait(backoff)

    def _close_quietly(self) -> None:
        try:
            self.source.close()
        except Exception:  # closing a broken source may fail too
            log.debug("closing source failed", exc_info=True)
