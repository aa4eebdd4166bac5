"""The link shaper itself (``tests/helpers/link_shaper.py``): measured rate,
latency, jitter, backpressure, loss and drops must be what the profile says,
or every slow-link test built on it proves nothing."""

from __future__ import annotations

import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers.link_shaper import (
    Direction,
    LinkProfile,
    ShaperProcess,
    ShaperThread,
)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            server.record(len(data))
            if server.echo:
                sock.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    """A TCP sink (or echo) server that records when bytes arrive."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, echo: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.echo = echo
        self.arrivals: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server_address[1])

    def record(self, n: int) -> None:
        with self.lock:
            self.arrivals.append((time.monotonic(), n))

    def received(self) -> int:
        with self.lock:
            return sum(n for _, n in self.arrivals)

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def sink() -> Iterator[Server]:
    s = Server(echo=False)
    yield s
    s.close()


@pytest.fixture
def echo() -> Iterator[Server]:
    s = Server(echo=True)
    yield s
    s.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _measured_rate(server: Server, total: int, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while server.received() < total and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.received() == total
    arrivals = server.arrivals
    first_t, first_n = arrivals[0]
    last_t = arrivals[-1][0]
    return (total - first_n) * 8 / (last_t - first_t)


def _rtt(sock: socket.socket, n: int = 16) -> float:
    t0 = time.monotonic()
    sock.sendall(b"x" * n)
    got = 0
    while got < n:
        data = sock.recv(65536)
        assert data
        got += len(data)
    return time.monotonic() - t0


@pytest.mark.parametrize("rate_bps", [1_000_000, 256_000])
def test_upstream_rate_is_the_profile_rate(sink: Server, rate_bps: int) -> None:
    total = int(rate_bps / 8 * 1.5)  # 1.5 s at the line rate
    with ShaperThread(sink.addr, LinkProfile.symmetric(rate_bps, 0.05)) as link:
        sock = _connect(link.port)
        sock.sendall(b"a" * total)
        rate = _measured_rate(sink, total)
        sock.close()
    assert rate == pytest.approx(rate_bps, rel=0.08)


def test_downstream_rate_and_directions_are_independent(echo: Server) -> None:
    profile = LinkProfile(up=Direction(rate_bps=None), down=Direction(rate_bps=512_000))
    total = 96_000  # 1.5 s down, ~0 up
    with ShaperThread(echo.addr, profile) as link:
        sock = _connect(link.port)
        t0 = time.monotonic()
        sock.sendall(b"b" * total)
        got = 0
        while got < total:
            got += len(sock.recv(65536))
        elapsed = time.monotonic() - t0
        sock.close()
        up_done = echo.arrivals[-1][0] - t0
    assert up_done < 0.3  # the up direction was not limited
    assert elapsed == pytest.approx(total * 8 / 512_000, rel=0.08)


def test_latency_each_way(echo: Server) -> None:
    with ShaperThread(echo.addr, LinkProfile.symmetric(1_000_000, 0.1)) as link:
        sock = _connect(link.port)
        rtts = [_rtt(sock) for _ in range(5)]
        sock.close()
    # Never faster than 2 x 100 ms (+ 2 x 16 bytes at 1 Mbit/s); typically
    # within 25 ms of it (the median: one scheduling hiccup of a loaded
    # machine is not the shaper's error).
    assert min(rtts) >= 0.2, rtts
    assert statistics.median(rtts) <= 0.225, rtts


def test_jitter_delays_within_bounds_and_keeps_order(echo: Server) -> None:
    profile = LinkProfile.symmetric(None, 0.05, jitter_s=0.05, chunk=100)
    with ShaperThread(echo.addr, profile, seed=1) as link:
        sock = _connect(link.port)
        rtts = [_rtt(sock) for _ in range(10)]
        payload = bytes(range(256)) * 40  # 100-byte chunks, each with its own delay
        sock.sendall(payload)
        back = b""
        while len(back) < len(payload):
            back += sock.recv(65536)
        sock.close()
    assert back == payload
    assert min(rtts) >= 0.1, rtts  # 2 x 50 ms at least
    assert statistics.median(rtts) <= 0.2 + 0.02, rtts  # 2 x (50 + up to 50) ms at most
    assert max(rtts) - min(rtts) > 0.01, rtts  # it does jitter


def test_full_bottleneck_stops_reading(sink: Server) -> None:
    # 256 kbit/s = 32 KB/s with a 32 KB buffer: after 1 s the shaper may hold
    # at most the buffer, plus one read, plus what left at the line rate.
    d = Direction(rate_bps=256_000, queue_bytes=32_768)
    with ShaperThread(sink.addr, LinkProfile(up=d, down=Direction())) as link:
        sock = _connect(link.port)
        sock.setblocking(False)
        sent = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            try:
                sent += sock.send(b"c" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
        read = link.stats.read_up
        sock.close()
    assert sent > 200_000  # the sender had far more to give (kernel buffers took it)
    assert 24_000 <= read <= 32_768 + 65_536 + 32_000 * 1.1, read


def test_set_profile_reshapes_a_live_connection(sink: Server) -> None:
    with ShaperThread(sink.addr, LinkProfile.symmetric(2_000_000, 0.0)) as link:
        sock = _connect(link.port)
        link.set_profile(LinkProfile.symmetric(256_000, 0.0))
        time.sleep(0.05)
        total = 48_000  # 1.5 s at the new rate, 0.19 s at the old one
        sock.sendall(b"f" * total)
        rate = _measured_rate(sink, total)
        sock.close()
    assert rate == pytest.approx(256_000, rel=0.08)


def test_drop_resets_connections_and_refuses_for_its_duration(echo: Server) -> None:
    with ShaperThread(echo.addr, LinkProfile.symmetric(None, 0.0)) as link:
        sock = _connect(link.port)
        assert _rtt(sock) < 0.1
        link.drop(1.0)
        time.sleep(0.1)
        with pytest.raises(OSError):
            _rtt(sock)
            _rtt(sock)
        t0 = time.monotonic()
        refused = 0
        while True:
            try:
                s2 = _connect(link.port)
                _rtt(s2)
                s2.close()
                break
            except (OSError, AssertionError):
                refused += 1
                time.sleep(0.05)
        back_after = time.monotonic() - t0
    assert refused >= 5
    assert 0.7 <= back_after <= 1.3


def test_blackhole_moves_nothing_and_resets_nothing(echo: Server) -> None:
    with ShaperThread(echo.addr, LinkProfile.symmetric(None, 0.0)) as link:
        sock = _connect(link.port)
        assert _rtt(sock) < 0.1
        before = echo.received()
        link.drop(2.0, blackhole=True)
        time.sleep(0.1)
        sock.settimeout(0.8)
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(10)  # neither data nor a reset: a dead radio
        assert echo.received() == before
        sock.close()


def test_loss_as_stalls_and_resets(echo: Server) -> None:
    stall = LinkProfile(up=Direction(stall_prob=1.0, stall_s=0.3), down=Direction())
    with ShaperThread(echo.addr, stall) as link:
        sock = _connect(link.port)
        rtt = _rtt(sock)
        sock.close()
        assert link.stats.stalls >= 1
    assert 0.3 <= rtt <= 0.4
    reset = LinkProfile(up=Direction(reset_prob=1.0), down=Direction())
    with ShaperThread(echo.addr, reset) as link:
        sock = _connect(link.port)
        with pytest.raises((OSError, AssertionError)):
            _rtt(sock)
        assert link.stats.resets == 1


def test_subprocess_shapes_and_takes_commands(sink: Server) -> None:
    total = 48_000  # 1.5 s at 256 kbit/s
    with ShaperProcess(sink.addr, LinkProfile.symmetric(256_000, 0.05)) as link:
        sock = _connect(link.port)
        sock.sendall(b"d" * total)
        rate = _measured_rate(sink, total)
        assert link.stats.bytes_up == total
        link.drop(5.0)
        time.sleep(0.2)
        with pytest.raises(OSError):
            sock.sendall(b"e" * 10)
            time.sleep(0.1)
            sock.sendall(b"e" * 10)
        assert link.stats.drops == 1
    assert rate == pytest.approx(256_000, rel=0.08)
