"""A real RTSP camera for the tests: GStreamer's RTSP server streaming H.264.

Two halves in one file, because they belong together and run in different
Pythons:

* **the server** (``python3 tests/helpers/rtsp_camera.py --port P --clip DIR``)
  runs under Debian's ``/usr/bin/python3`` — ``python3-gi`` and
  ``gir1.2-gst-rtsp-server-1.0`` exist only there, not in the project venv.
  It feeds the JPEG frames of a clip folder into an ``appsrc`` at ``--fps``
  (a live source, like a camera sensor), encodes them with ``x264enc``
  (``tune=zerolatency speed-preset=ultrafast``) and serves them at
  ``rtsp://127.0.0.1:P/cam``, looping the clip. Signals drive field failures:
  ``SIGUSR1`` switches to the next ``--clip`` (a resolution change inside the
  running stream: the encoder is re-created with the new caps and sends new
  SPS/PPS), ``SIGUSR2`` stops / restarts feeding frames (the encoder stalls
  while the RTSP session and its TCP connection stay up and keep answering),
  ``SIGSTOP`` (sent by the test) freezes the whole camera with its socket
  open. It prints ``READY <port>`` once listening, and ``SETUP <Transport
  header>`` and ``AGENT <User-Agent>`` for every client SETUP, so tests can
  see which transport a client asked for and that its options reached FFmpeg.
  ``--audio`` adds a G.711 audio stream (as most IP cameras send), ``--tls
  CERT KEY`` serves ``rtsps://`` (GLib's TLS backend, glib-networking),
  ``--login USER PASSWORD`` requires Basic authentication.
* **the test side** (:class:`RtspCamera`, :func:`render_clip`) runs in the
  venv: it renders clips with the project's synthetic renderer and starts,
  kills, restarts, freezes and resumes the server process.

Only the standard library is imported at module level; each half imports
what only its own Python has (``gi`` / ``cv2``) inside its functions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
MOUNT = "/cam"
AUDIO_RATE = 8000  # Hz, mono S16 -> G.711 µ-law, as many IP cameras send
READY_TIMEOUT_S = 20.0


# ==================================================================================
# Test side (project venv)
# ==================================================================================
@dataclass
class Clip:
    """A folder of JPEG frames and the plates drawn on them (ground truth)."""

    folder: Path
    plates: list[str]
    width: int
    height: int
    frames: int


def render_clip(folder: Path, plates: Sequence[str], width: int = 640, height: int = 360,
                fps: float = 10.0, speed: float = 2.5) -> Clip:
    """Render every plate crossing the road once, as ``f00000.jpg``… in ``folder``."""
    import cv2

    from lpr_agent.detect.synthetic import SyntheticSource, parse_synthetic_url

    folder.mkdir(parents=True, exist_ok=True)
    url = (f"synthetic:?plates={','.join(plates)}&once=1&fps={fps}&width={width}"
           f"&height={height}&speed={speed}&seed=1")
    source = SyntheticSource(parse_synthetic_url(url))
    source.open()
    count = 0
    while (frame := source.read()) is not None:
        # High quality: the stream's H.264 is the lossy step under test, not this.
        cv2.imwrite(str(folder / f"f{count:05d}.jpg"), frame.image,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        count += 1
    return Clip(folder, list(source.generated), width, height, count)


def rtsp_unavailable() -> str | None:
    """Why the RTSP camera cannot run here (None if it can)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON}"
    try:
        done = subprocess.run([SYSTEM_PYTHON, __file__, "--check"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"GStreamer check failed to run: {exc}"
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        return ("python3-gi, gir1.2-gst-rtsp-server-1.0 and gstreamer1.0-plugins-"
                f"{{base,good,ugly}} ({lines[-1]})")
    return None


def rtsps_unavailable() -> str | None:
    """Why the camera cannot serve rtsps:// here (None if it can)."""
    if shutil.which("openssl") is None:
        return "`openssl` on PATH (makes the test certificate)"
    done = subprocess.run([SYSTEM_PYTHON, __file__, "--check-tls"], capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        return f"glib-networking ({(done.stderr.strip() or 'no TLS').splitlines()[-1]})"
    return None


def make_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP address): (cert.pem, key.pem)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=IP:{host}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class RtspCamera:
    """The server process; ``start()`` it, then break it the ways cameras break."""

    clips: list[Clip]
    port: int = 0  # 0: the server binds a free port, kept across restarts
    fps: float = 10.0
    tls: tuple[Path, Path] | None = None  # (certificate, key) PEM files: serve rtsps://
    audio: bool = False  # a second (audio) stream in the session, like most IP cameras
    login: tuple[str, str] | None = None  # (user, password) the camera requires
    lines: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        scheme = "rtsps" if self.tls else "rtsp"
        user = f"{self.login[0]}:{self.login[1]}@" if self.login else ""
        return f"{scheme}://{user}127.0.0.1:{self.port}{MOUNT}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "camera not started"
        return self._proc.pid

    def start(self) -> RtspCamera:
        # Restarting on the port just freed: the server sets SO_REUSEADDR, but
        # give a lingering bind a few tries rather than fail the test on it.
        for _attempt in range(20):
            if self._spawn():
                return self
            time.sleep(0.25)
        raise RuntimeError(f"RTSP camera did not start: {self.lines[-5:]}")

    def _spawn(self) -> bool:
        cmd = [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--fps", str(self.fps)]
        for clip in self.clips:
            cmd += ["--clip", str(clip.folder)]
        if self.tls:
            cmd += ["--tls", str(self.tls[0]), str(self.tls[1])]
        if self.audio:
            cmd.append("--audio")
        if self.login:
            cmd += ["--login", *self.login]
        self._ready.clear()
        # The server's Python must not inherit the venv (its site-packages,
        # PYTHONPATH) — it is Debian's interpreter with Debian's gi.
        env = {k: v for k, v in os.environ.items()
               if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env)
        threading.Thread(target=self._pump, args=(self._proc,), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._ready.wait(0.1):
                return True
            if self._proc.poll() is not None:
                return False
        self.kill()
        return False

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                self._ready.set()

    def setups(self) -> list[str]:
        """The Transport header of every client SETUP so far."""
        return [line.removeprefix("SETUP ") for line in self.lines if line.startswith("SETUP ")]

    def user_agents(self) -> list[str]:
        """The User-Agent header of every client SETUP so far."""
        return [line.removeprefix("AGENT ") for line in self.lines if line.startswith("AGENT ")]

    def kill(self) -> None:
        """SIGKILL: a camera that loses power (its sockets are reset by the kernel)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a frozen process must die too
            self._proc.kill()
            self._proc.wait(10)

    def restart(self) -> None:
        """The camera reboots: killed, then back on the same port."""
        self.kill()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the camera hangs with its TCP connections open."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def next_clip(self) -> None:
        """Switch the running stream to the next clip (resolution change mid-stream)."""
        self._signal(signal.SIGUSR1)

    def toggle_feed(self) -> None:
        """Stop (or restart) feeding frames; the server keeps answering RTSP."""
        self._signal(signal.SIGUSR2)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None and self._proc.poll() is None, "camera not running"
        self._proc.send_signal(sig)

    def __enter__(self) -> RtspCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


# ==================================================================================
# Server side (Debian's /usr/bin/python3 with python3-gi)
# ==================================================================================
def _launch_line(fps: float, audio: bool = False) -> str:
    num, den = (int(fps * 1000), 1000)
    # Many IP cameras also stream their microphone (G.711 µ-law here).
    # (An appsrc like the video: audiotestsrc would make the media seekable,
    # and the server then fails PLAY trying to seek the video's appsrc.)
    sound = (f"appsrc name=asrc is-live=true format=time do-timestamp=true caps=audio/x-raw,"
             f"format=S16LE,rate={AUDIO_RATE},channels=1,layout=interleaved "
             "! mulawenc ! rtppcmupay name=pay1 pt=0 " if audio else "")
    return (
        f"( appsrc name=src is-live=true format=time do-timestamp=true "
        f"caps=image/jpeg,framerate={num}/{den} "
        "! jpegdec ! videoconvert ! video/x-raw,format=I420 "
        # A keyframe every second: a client (re)connecting decodes within 1 s.
        f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate=2000 threads=1 "
        f"key-int-max={max(1, round(fps))} "
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 {sound})"
    )


class _Feeder:
    """Pushes the current clip's JPEGs into every prepared media's appsrc."""

    def __init__(self, clips: list[list[bytes]]) -> None:
        self.clips = clips
        self.clip = 0
        self.index = 0
        self.feeding = True
        self.sources: list[object] = []
        self.audio_sources: list[object] = []
        self.silence = b""  # one tick of audio, set by serve()

    def tick(self) -> bool:
        from gi.repository import Gst

        if self.feeding and self.sources:
            frames = self.clips[self.clip]
            data = frames[self.index % len(frames)]
            self.index += 1
            for src in list(self.sources):
                src.emit("push-buffer", Gst.Buffer.new_wrapped(data))  # type: ignore[attr-defined]
        # The microphone goes on even when the video encoder stalls.
        for src in list(self.audio_sources):
            src.emit("push-buffer", Gst.Buffer.new_wrapped(self.silence))  # type: ignore[attr-defined]
        return True  # keep the timer

    def next_clip(self) -> bool:
        self.clip = (self.clip + 1) % len(self.clips)
        self.index = 0
        print(f"CLIP {self.clip}", flush=True)
        return True

    def toggle(self) -> bool:
        self.feeding = not self.feeding
        print(f"FEEDING {int(self.feeding)}", flush=True)
        return True


def _load_clip(folder: str) -> list[bytes]:
    files = sorted(Path(folder).glob("*.jpg"))
    if not files:
        raise SystemExit(f"no .jpg frames in {folder}")
    return [f.read_bytes() for f in files]


def _check() -> int:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer  # noqa: F401

    Gst.init(None)
    missing = [e for e in ("appsrc", "jpegdec", "videoconvert", "x264enc", "rtph264pay",
                           "mulawenc", "rtppcmupay")
               if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"missing GStreamer elements: {' '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _check_tls() -> int:
    import gi

    gi.require_version("Gio", "2.0")
    from gi.repository import Gio

    if not Gio.TlsBackend.get_default().supports_tls():
        print("GLib has no TLS backend (glib-networking)", file=sys.stderr)
        return 1
    return 0


def _set_auth(server: object, factory: object, tls: tuple[str, str] | None,
              login: tuple[str, str] | None) -> None:
    """rtsps:// with this certificate and/or a Basic-auth login (else: anyone plays)."""
    import gi

    gi.require_version("Gio", "2.0")
    from gi.repository import Gio, Gst, GstRtspServer

    auth = GstRtspServer.RTSPAuth()
    if tls:
        auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(*tls))
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "viewer")
    if login:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(*login), token)
    else:
        auth.set_default_token(token)
    factory.add_role_from_structure(Gst.Structure.new_from_string(  # type: ignore[attr-defined]
        "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
    server.set_auth(auth)  # type: ignore[attr-defined]


def serve(port: int, clip_dirs: list[str], fps: float, tls: tuple[str, str] | None = None,
          audio: bool = False, login: tuple[str, str] | None = None) -> int:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    feeder = _Feeder([_load_clip(d) for d in clip_dirs])
    feeder.silence = bytes(2 * max(1, round(AUDIO_RATE / fps)))
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(fps, audio))
    factory.set_shared(True)  # one encoder, like a camera: every client sees the same frames

    def on_configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_by_name_recurse_up("src")
        feeder.sources.append(src)
        media.connect("unprepared", lambda *_: feeder.sources.remove(src))
        asrc = media.get_element().get_by_name_recurse_up("asrc")
        if asrc is not None:
            feeder.audio_sources.append(asrc)
            media.connect("unprepared", lambda *_: feeder.audio_sources.remove(asrc))

    factory.connect("media-configure", on_configure)
    if tls or login:
        _set_auth(server, factory, tls, login)
    server.get_mount_points().add_factory(MOUNT, factory)

    def on_client(_server: object, client: GstRtspServer.RTSPClient) -> None:
        def on_setup(_client: object, ctx: GstRtspServer.RTSPContext) -> None:
            _res, value = ctx.request.get_header(GstRtsp.RTSPHeaderField.TRANSPORT, 0)
            _res, agent = ctx.request.get_header(GstRtsp.RTSPHeaderField.USER_AGENT, 0)
            print(f"SETUP {value}", flush=True)
            print(f"AGENT {agent}", flush=True)

        client.connect("pre-setup-request", lambda c, ctx: on_setup(c, ctx)
                       or GstRtsp.RTSPStatusCode.OK)

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        print(f"cannot listen on port {port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.timeout_add(max(1, round(1000 / fps)), feeder.tick)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, feeder.next_clip)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR2, feeder.toggle)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RTSP H.264 test camera (GStreamer)")
    parser.add_argument("--check", action="store_true", help="only check the prerequisites")
    parser.add_argument("--check-tls", action="store_true",
                        help="only check that rtsps:// can be served")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--clip", action="append", default=[], help="folder of JPEG frames")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--audio", action="store_true", help="add a G.711 audio track")
    parser.add_argument("--login", nargs=2, metavar=("USER", "PASSWORD"),
                        help="require this Basic-auth login")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"),
                        help="serve rtsps:// with this PEM certificate and key")
    args = parser.parse_args(argv)
    if args.check:
        return _check()
    if args.check_tls:
        return _check_tls()
    if not args.clip:
        parser.error("at least one --clip is needed")
    return serve(args.port, args.clip, args.fps, tuple(args.tls) if args.tls else None,
                 args.audio, tuple(args.login) if args.login else None)


if __name__ == "__main__":
    sys.exit(main())
