"""Frame sources and the latest-frame-wins grabber.

Every source yields :class:`Frame` objects. :func:`open_source` picks the
source from ``SourceConfig.url``. :class:`FrameGrabber` runs a source in its
own thread, reopens it with jittered exponential backoff
(:mod:`lpr_agent.backoff`) when it fails, and keeps only the newest frame of a
live source, so a detector slower than the camera never works through a
backlog of stale frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

import cv2

from lpr_agent import backoff
from lpr_agent.detect.config import SourceConfig

# Frame, FrameSource, SourceError and url_options live in frame.py (shared with
# the synthetic source without an import cycle); re-exported for old imports.
from lpr_agent.detect.frame import Frame, FrameSource, SourceError, url_options

__all__ = ["CaptureSource", "FolderSource", "Frame", "FrameGrabber", "FrameSource",
           "SourceError", "open_source", "redact_url", "url_options"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# A read blocked this long past read_timeout_s shows as "stalled" (see FrameGrabber.state).
STALL_GRACE_S = 1.0
# Read through PyAV (av_source.py): OpenCV's capture cannot follow a resolution
# change inside the stream, and takes FFmpeg options only process-wide.
AV_SCHEMES = {"rtsp", "rtsps"}
OPENCV_SCHEMES = {"rtmp", "http", "https", "udp", "tcp"}


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``.

    Source errors end up in logs and in the health reports sent to the server.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:  # unparsable port etc.: show nothing of the authority
        return "<unparsable url>"


class CaptureSource:
    """HTTP/RTMP streams, V4L2 devices and video files through OpenCV's FFmpeg/V4L2.

    (rtsp:// cameras go to :class:`~lpr_agent.detect.av_source.AvSource`.)
    """

    def __init__(self, target: str | int, config: SourceConfig, live: bool) -> None:
        self.target = target
        self.config = config
        self.live = live
        self.name = redact_url(target) if isinstance(target, str) else str(target)
        self.description = f"capture {self.name}"
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
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}")
        if self.live:
            # A small driver buffer: old frames waiting there are stale frames.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError("source is not open")
        started = time.monotonic()
        ok, image = self._cap.read()
        waited = time.monotonic() - started
        if self.live and waited >= self.config.read_timeout_s:
            # OpenCV's FFmpeg read timeout fired: the camera stopped sending
            # with its connection open (hung firmware, stalled encoder).
            # Measured on RTSP/TCP: the reads after the timeout first return
            # the decoder's delayed frames with ok=True, as if fresh, and the
            # capture never recovers even when the camera does — so reopen now.
            raise SourceError(f"{self.name}: stream stalled, no frame for {waited:.1f} s")
        if not ok or image is None:
            if self.live:
                raise SourceError(f"{self.name}: no frame (stream ended)")
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
    if scheme in AV_SCHEMES:
        from lpr_agent.detect.av_source import AvSource  # PyAV loads only for cameras using it

        return AvSource(url, config)
    if scheme in OPENCV_SCHEMES:
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
        self._state = "idle"  # idle, opening, running, reconnecting, ended, stopped
        self._error: str | None = None
        self._read_since: float | None = None  # monotonic start of the read in progress
        self.frames_read = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.last_frame_monotonic: float | None = None
        # (width, height) of the newest frame; a live camera may change it mid-stream.
        self.frame_size: tuple[int, int] | None = None
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
    def state(self) -> str:
        """idle, opening, running, stalled, reconnecting, ended or stopped.

        ``stalled``: a read has been blocked longer than ``read_timeout_s``
        plus a grace, i.e. past the source's own timeout (which fires for
        OpenCV's FFmpeg streams; this catches a backend whose timeout does
        not), so health shows the camera as down while the read is stuck.
        """
        since = self._read_since
        if (self._state == "running" and since is not None
                and time.monotonic() - since > self.config.read_timeout_s + STALL_GRACE_S):
            return "stalled"
        return self._state

    @property
    def error(self) -> str | None:
        if self.state == "stalled" and self._read_since is not None:
            waited = time.monotonic() - self._read_since
            return f"no frame for {waited:.0f} s; read blocked past its timeout"
        return self._error

    @property
    def last_frame_age_s(self) -> float | None:
        if self.last_frame_monotonic is None:
            return None
        return time.monotonic() - self.last_frame_monotonic

    # --- producer thread -----------------------------------------------------------
    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._cond:
            self._state = state
            self._error = error
            self._cond.notify_all()

    def _run(self) -> None:
        failures = 0  # consecutive failed opens/reads; a delivered frame resets it
        opened = False
        frames_since_open = 0
        while not self._stop.is_set():
            if not opened:
                self._set_state("opening", self.error)
                try:
                    self.source.open()
                except Exception as exc:  # any failure means "retry later"
                    failures += 1
                    self._fail(exc, failures)
                    continue
                opened = True
                frames_since_open = 0
                self._set_state("running")
            self._read_since = time.monotonic()
            try:
                frame = self.source.read()
            except Exception as exc:
                self._read_since = None
                opened = False
                self._close_quietly()
                failures += 1
                self._fail(exc, failures)
                continue
            self._read_since = None
            if frame is None:
                self._close_quietly()
                opened = False
                if self.config.loop:
                    if not frames_since_open:
                        # An empty folder/file would spin the CPU reopening it.
                        failures += 1
                        self._fail(SourceError("source has no frames"), failures)
                    frames_since_open = 0
                    continue
                self._set_state("ended")
                return
            failures = 0
            frames_since_open += 1
            self._publish(frame)
        self._close_quietly()
        self._set_state("stopped")

    def _publish(self, frame: Frame) -> None:
        now = time.monotonic()
        self._note_size(frame)
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

    def _note_size(self, frame: Frame) -> None:
        height, width = frame.image.shape[:2]
        size = (int(width), int(height))
        # A folder of photos changes size at every image; only a camera's
        # change is news (a new profile: plate pixels doubled or halved).
        if self.source.live and self.frame_size is not None and size != self.frame_size:
            log.info("camera resolution changed %dx%d -> %dx%d (%s)", *self.frame_size, *size,
                     self.source.description)
        self.frame_size = size

    def _fail(self, exc: BaseException, failures: int) -> None:
        self.reconnects += 1
        # Full jitter (the agent's shared backoff): cameras of a site that lost
        # their network switch at the same moment do not reconnect in lockstep.
        delay = backoff.full_jitter(failures, self.config.reconnect_initial_s,
                                    self.config.reconnect_max_s)
        message = str(exc) or type(exc).__name__
        log.warning("frame source %s failed: %s; retrying in %.1f s",
                    self.source.description, message, delay)
        self._set_state("reconnecting", message)
        self._stop.wait(delay)

    def _close_quietly(self) -> None:
        try:
            self.source.close()
        except Exception:  # closing a broken source may fail too
            log.debug("closing source failed", exc_info=True)
