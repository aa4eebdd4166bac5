"""rtsp:// and rtsps:// cameras through PyAV (FFmpeg's libraries, bundled in its wheel).

Why not OpenCV, which reads every other kind of source: measured with
OpenCV 5.0, when a camera switches its resolution inside the running stream
(new SPS, e.g. 640×360 → 1280×720 after an operator changes the profile),
OpenCV's capture keeps returning frames scaled to the size it opened with —
halving the plate's pixels — and no property of its Python API reports the new
size. PyAV hands out each decoded picture at the decoder's own size, takes
FFmpeg options per open (OpenCV only takes them from a process-wide variable)
and gives up a blocked read after a timeout with ``av.ExitError``.

Failures all become :class:`SourceError` (the grabber reopens with backoff):

* no packet for ``read_timeout_s`` (camera hung with its socket open) →
  ``stream stalled, no frame for N s``;
* packets keep coming but none decodes into a picture for ``read_timeout_s``
  (broken encoder, a stream without keyframes) → the same;
* connection refused/reset, authentication, end of stream → the FFmpeg reason.

Messages never contain the URL's password: they end up in logs and in the
health reports sent to the server.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from collections.abc import Iterator

import av
import av.error
from av.video.reformatter import VideoReformatter

from lpr_agent.detect.config import SourceConfig
from lpr_agent.detect.frame import Frame, SourceError
from lpr_agent.detect.sources import redact_url

__all__ = ["AvSource"]

log = logging.getLogger(__name__)

# The probe (avformat_find_stream_info) reads this much stream before the
# first frame. FFmpeg's default (5 s cap) took 2.9 s per open on the test
# camera, 0.5 s took 0.7 s: every reconnect waits for it. The decoder does not
# need the probe's answer (it reads the size from the SPS in the stream), so a
# short probe loses nothing.
PROBE_US = 500_000
# Frame threads hold back (threads - 1) decoded frames — latency, and stale
# frames at a stall; slice threads help only multi-slice encoders. One thread
# keeps capture from competing with detection for the camera's cores
# (benchmarks/rtsp_capture_bench.py measures the CPU cost of each choice).
DECODER_THREAD_TYPE = "SLICE"
DECODER_THREADS = 1
OPENCV_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def _reason(exc: BaseException) -> str:
    """FFmpeg's reason without the URL PyAV appends (it may hold a password)."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return type(exc).__name__


class AvSource:
    """A live RTSP(S) camera decoded with PyAV; one :class:`Frame` per decoded picture."""

    live = True

    def __init__(self, url: str, config: SourceConfig, *,
                 thread_type: str = DECODER_THREAD_TYPE,
                 threads: int = DECODER_THREADS) -> None:
        self.url = url
        self.config = config
        self.thread_type = thread_type  # decoder threading (the benchmark compares them)
        self.threads = threads
        self.name = redact_url(url)
        self.description = f"rtsp {self.name}"
        self.corrupt_packets = 0  # packets the decoder rejected (loss on UDP, bad encoder)
        self._container: av.container.InputContainer | None = None
        self._packets: Iterator[av.Packet] | None = None
        self._decoded: deque[av.VideoFrame] = deque()
        self._last_picture = 0.0  # monotonic time of the last decoded picture (or the open)
        self._index = 0
        self._warned_env = False
        # One converter for the source's life: frame.to_ndarray() builds a new
        # swscale context per frame (measured on 1280x720: 1.13 ms per frame
        # decoded and converted, 0.78 ms with a kept converter; decode alone 0.48).
        self._to_bgr = VideoReformatter()

    def options(self) -> dict[str, str]:
        """The FFmpeg options of one open (the operator's ``ffmpeg_options`` over ours)."""
        # FFmpeg's own socket timeout only backs up the interrupt callback
        # (open's timeout=), which must fire first: measured, when the socket
        # timeout fired at the same moment it flushed the H.264 parser and the
        # last frame before the stall came out as new, read_timeout_s late.
        timeout_us = str(int(self.config.read_timeout_s * 2 * 1_000_000))
        options = {
            "analyzeduration": str(PROBE_US),
            # Only the video: no audio RTP to receive, probe or drop.
            "allowed_media_types": "video",
            **{key: str(value) for key, value in self.config.ffmpeg_options.items()},
            "rtsp_transport": self.config.rtsp_transport,
            "timeout": timeout_us,  # µs
        }
        return options

    def open(self) -> None:
        self.close()
        if os.environ.get(OPENCV_ENV) and not self._warned_env:
            self._warned_env = True  # once, not at every reconnect of a dead camera
            log.warning("%s is set but not used for rtsp:// sources; put FFmpeg options "
                        "in [source] ffmpeg_options", OPENCV_ENV)
        timeout = self.config.read_timeout_s
        started = time.monotonic()
        try:
            container = av.open(self.url, options=self.options(), timeout=(timeout, timeout))
        except (av.error.FFmpegError, OSError) as exc:
            if isinstance(exc, av.error.ExitError) or time.monotonic() - started >= timeout:
                # Measured on a hung camera (TCP accepted, RTSP unanswered): the
                # interrupted open reports "Invalid data found", not a timeout.
                raise SourceError(f"cannot open {self.name}: no answer within "
                                  f"{timeout:.1f} s") from exc
            hint = ""
            if self.url.lower().startswith("rtsps:") and getattr(exc, "errno", None) == errno.EIO:
                # FFmpeg's TLS layer reports a failed handshake or certificate check as EIO.
                hint = " (TLS handshake or certificate check failed?)"
            raise SourceError(f"cannot open {self.name}: {_reason(exc)}{hint}") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = self.thread_type
        stream.codec_context.thread_count = self.threads
        self._container = container
        self._packets = self._demux(container, stream)
        self._last_picture = time.monotonic()

    def _demux(self, container: av.container.InputContainer,
               stream: av.VideoStream) -> Iterator[av.Packet]:
        """The packets of ``stream`` (a seam: tests drop packets here to break the stream)."""
        return container.demux(stream)

    def read(self) -> Frame:
        if self._packets is None:
            raise SourceError("source is not open")
        picture = self._next_picture()
        self._index += 1
        now = time.monotonic()
        image = self._to_bgr.reformat(picture, format="bgr24").to_ndarray()
        return Frame(image=image, index=self._index,
                     wall_time=time.time(), monotonic=now)

    def _next_picture(self) -> av.VideoFrame:
        assert self._packets is not None
        while not self._decoded:
            waited = time.monotonic() - self._last_picture
            if waited >= self.config.read_timeout_s:
                # Packets arrive (else the read timeout would have fired) but
                # none decodes into a picture: as dead as a silent camera.
                raise SourceError(f"{self.name}: stream stalled, no frame for {waited:.1f} s "
                                  f"(packets arrive, none decodes)")
            try:
                packet = next(self._packets)
            except StopIteration:
                raise SourceError(f"{self.name}: stream ended") from None
            except av.error.ExitError:
                waited = time.monotonic() - self._last_picture
                raise SourceError(f"{self.name}: stream stalled, no frame for {waited:.1f} s") \
                    from None
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceError(f"{self.name}: {_reason(exc)}") from exc
            try:
                self._decoded.extend(packet.decode())
            except av.error.InvalidDataError:
                # One damaged packet (lost UDP datagram, glitching encoder): the
                # decoder resynchronises at the next keyframe; the stall check
                # above ends a stream that never does.
                self.corrupt_packets += 1
                log.debug("%s: corrupt packet dropped (%d so far)", self.name,
                          self.corrupt_packets)
            except av.error.FFmpegError as exc:  # decoder trouble: reopen afresh
                raise SourceError(f"{self.name}: decoder: {_reason(exc)}") from exc
        now = time.monotonic()
        waited, self._last_picture = now - self._last_picture, now
        if waited >= self.config.read_timeout_s:
            # A picture after a gap this long is old news (a parser or decoder
            # flushed on a timeout); passing it on would hide the stall.
            raise SourceError(f"{self.name}: stream stalled, no frame for {waited:.1f} s")
        return self._decoded.popleft()

    def close(self) -> None:
        self._decoded.clear()
        self._packets = None
        if self._container is not None:
            container, self._container = self._container, None
            container.close()
