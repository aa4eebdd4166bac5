"""A TCP proxy that behaves like a slow, lossy link (``tc netem`` is not
available in this kernel). 127.0.0.1 only.

Per direction (client -> server is ``up``, server -> client is ``down``):

* ``rate_bps``: a token bucket one chunk deep (bytes leave at the line rate,
  ``chunk`` bytes at a time, like packets on a serial link);
* ``latency_s`` (one way) and ``jitter_s`` (uniform extra delay; order is
  kept, as TCP delivers in order);
* ``queue_bytes``: the bottleneck's buffer. When it is full the proxy stops
  reading, so TCP backpressure reaches the sender, as on a real modem;
* loss as a TCP connection experiences it: ``stall_prob`` per chunk stalls
  the direction for ``stall_s`` (a retransmission timeout), ``reset_prob``
  per chunk resets the connection;
* a scripted drop: ``drop(seconds)`` cuts every connection and refuses new
  ones (RST) for that long, or with ``blackhole=True`` accepts and forwards
  nothing (a dead radio: no RST ever comes);
* ``set_profile(profile)``: a new profile for everything read from then on,
  live connections included (a handover to a slower cell).

In-process (``LinkShaper`` in a running loop, or ``ShaperThread`` for
synchronous tests) or as a subprocess (``ShaperProcess``, so that the shaping
does not share the GIL with the code under test)::

    with ShaperProcess(("127.0.0.1", stub.port), LinkProfile.symmetric(1e6, 0.1)) as link:
        agent_url = f"http://127.0.0.1:{link.port}"
        link.drop(3)

Command line: ``python -m tests.helpers.link_shaper --target HOST:PORT --rate
1e6 --latency 0.1``; prints ``PORT <n>``; reads commands from stdin
(``drop S``, ``blackhole S``, ``profile JSON``, ``stats``; ``stats`` prints
one JSON line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
_READ_MAX = 65536


@dataclass(frozen=True)
class Direction:
    rate_bps: float | None = None  # None: no rate limit
    latency_s: float = 0.0
    jitter_s: float = 0.0
    queue_bytes: int = 64 * 1024
    chunk: int = 1460
    stall_prob: float = 0.0
    stall_s: float = 0.3
    reset_prob: float = 0.0


@dataclass(frozen=True)
class LinkProfile:
    up: Direction = field(default_factory=Direction)  # client -> server
    down: Direction = field(default_factory=Direction)  # server -> client

    @classmethod
    def symmetric(cls, rate_bps: float | None, latency_s: float, **kw: Any) -> LinkProfile:
        d = Direction(rate_bps=rate_bps, latency_s=latency_s, **kw)
        return cls(up=d, down=d)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkProfile:
        return cls(up=Direction(**data["up"]), down=Direction(**data["down"]))


@dataclass
class ShaperStats:
    connections: int = 0
    refused: int = 0
    resets: int = 0  # connections reset by reset_prob
    stalls: int = 0
    drops: int = 0
    bytes_up: int = 0  # delivered to the server
    bytes_down: int = 0  # delivered to the client
    read_up: int = 0  # taken from the client (delivered + queued in the shaper)
    read_down: int = 0


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a reset connection does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pipe:
    """One direction of one connection: read, queue at the bottleneck, pace, delay, write."""

    def __init__(self, shaper: LinkShaper, conn: _Conn, name: str,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.shaper, self.conn, self.name = shaper, conn, name
        self.reader, self.writer = reader, writer
        self.rng = shaper.rng
        self.pending: deque[tuple[float, float, bytes]] = deque()  # (depart, arrive, data)
        self.queued = 0  # bytes read but not yet departed from the bottleneck
        self.last_depart = 0.0
        self.last_arrive = 0.0
        self.more = asyncio.Event()
        self.eof = False

    @property
    def d(self) -> Direction:
        profile = self.shaper.profile
        return profile.up if self.name == "up" else profile.down

    async def ingress(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_room()
            d = self.d
            room = d.queue_bytes - self.queued
            data = await self.reader.read(min(_READ_MAX, max(d.chunk, room)))
            if not data:
                break
            # The read may have waited long: pace what it got with the profile
            # in force now (set_profile applies to everything read after it).
            d = self.d
            setattr(self.shaper.stats, f"read_{self.name}",
                    getattr(self.shaper.stats, f"read_{self.name}") + len(data))
            for i in range(0, len(data), d.chunk):
                piece = data[i:i + d.chunk]
                now = loop.time()
                depart = max(now, self.last_depart)
                if d.stall_prob and self.rng.random() < d.stall_prob:
                    self.shaper.stats.stalls += 1
                    depart += d.stall_s
                if d.reset_prob and self.rng.random() < d.reset_prob:
                    self.shaper.stats.resets += 1
                    self.conn.abort()
                    return
                if d.rate_bps:
                    depart += len(piece) * 8 / d.rate_bps
                self.last_depart = depart
                arrive = depart + d.latency_s + (self.rng.uniform(0, d.jitter_s)
                                                 if d.jitter_s else 0.0)
                arrive = max(arrive, self.last_arrive)  # in order, as TCP delivers
                self.last_arrive = arrive
                self.pending.append((depart, arrive, piece))
                self.queued += len(piece)
            self.more.set()
        self.eof = True
        self.more.set()

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self._account_departed(now)
            if self.queued < self.d.queue_bytes:
                return
            # Sleep until the oldest queued chunk has left the bottleneck.
            for depart, _, _ in self.pending:
                if depart > now:
                    await asyncio.sleep(depart - now)
                    break
            else:
                await asyncio.sleep(0.001)

    def _account_departed(self, now: float) -> None:
        # queued counts bytes whose departure lies in the future
        queued = 0
        for depart, _, data in reversed(self.pending):
            if depart <= now:
                break
            queued += len(data)
        self.queued = queued

    async def egress(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self.pending
        while True:
            if not pending:
                if self.eof:
                    break
                self.more.clear()
                await self.more.wait()
                continue
            arrive = pending[0][1]
            now = loop.time()
            if arrive > now:
                await asyncio.sleep(arrive - now)
                continue
            out = []
            while pending and pending[0][1] <= now:
                out.append(pending.popleft()[2])
            data = b"".join(out)
            self.writer.write(data)
            setattr(self.shaper.stats, f"bytes_{self.name}",
                    getattr(self.shaper.stats, f"bytes_{self.name}") + len(data))
            await self.writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            if self.writer.can_write_eof():
                self.writer.write_eof()


class _Conn:
    def __init__(self, shaper: LinkShaper, client: tuple[asyncio.StreamReader,
                 asyncio.StreamWriter], server: tuple[asyncio.StreamReader,
                 asyncio.StreamWriter]) -> None:
        self.client_w, self.server_w = client[1], server[1]
        self.pipes = [_Pipe(shaper, self, "up", client[0], server[1]),
                      _Pipe(shaper, self, "down", server[0], client[1])]
        self.tasks: list[asyncio.Task[None]] = []
        self.held = False  # black-holed: keep the sockets open, move nothing

    async def run(self) -> None:
        self.tasks = [asyncio.create_task(t) for p in self.pipes for t in (p.ingress(),
                                                                            p.egress())]
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.held:
            return
        for w in (self.client_w, self.server_w):
            with contextlib.suppress(Exception):
                w.close()

    def abort(self) -> None:
        for w in (self.client_w, self.server_w):
            _abort(w)
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()


class LinkShaper:
    """The proxy, in the running event loop. ``await start()``, ``await stop()``."""

    def __init__(self, target: tuple[str, int], profile: LinkProfile, *,
                 port: int = 0, seed: int | None = None) -> None:
        self.target = target
        self.profile = profile
        self.port = port
        self.rng = random.Random(seed)
        self.stats = ShaperStats()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._refuse_until = 0.0
        self._blackhole_until = 0.0
        self._held: list[asyncio.StreamWriter] = []

    async def start(self) -> LinkShaper:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.abort()
        for w in self._held:
            _abort(w)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def set_profile(self, profile: LinkProfile) -> None:
        """Shape everything read from now on with ``profile``."""
        self.profile = profile

    def drop(self, seconds: float, *, blackhole: bool = False) -> None:
        """Cut every connection now; refuse (or black-hole) new ones for ``seconds``."""
        self.stats.drops += 1
        until = time.monotonic() + seconds
        if blackhole:
            self._blackhole_until = until
        else:
            self._refuse_until = until
        for c in list(self._conns):
            if blackhole:
                c.held = True
                for t in c.tasks:  # the radio died: nothing moves, nothing is reset
                    t.cancel()
                self._held.extend((c.client_w, c.server_w))
            else:
                c.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        if now < self._refuse_until:
            self.stats.refused += 1
            _abort(writer)
            return
        if now < self._blackhole_until:
            self.stats.refused += 1
            self._held.append(writer)
            return
        try:
            server = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused += 1
            _abort(writer)
            return
        self.stats.connections += 1
        for w in (writer, server[1]):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(self, (reader, writer), server)
        self._conns.add(conn)
        try:
            await conn.run()
        finally:
            self._conns.discard(conn)


class ShaperThread:
    """A ``LinkShaper`` in its own event loop thread, for synchronous tests."""

    def __init__(self, target: tuple[str, int], profile: LinkProfile, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.shaper = LinkShaper(target, profile, **kw)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.shaper.port

    @property
    def stats(self) -> ShaperStats:
        return self.shaper.stats

    def start(self) -> ShaperThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.shaper.start(), self.loop).result(10)
        return self

    def drop(self, seconds: float, *, blackhole: bool = False) -> None:
        self._call(self.shaper.drop, seconds, blackhole=blackhole)

    def set_profile(self, profile: LinkProfile) -> None:
        # Wait until the loop has applied it: a caller that sends right after
        # must be shaped by the new profile, however busy the machine is.
        self._call(self.shaper.set_profile, profile)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        async def call() -> None:
            fn(*args, **kwargs)

        asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def stop(self) -> None:
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.shaper.stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def __enter__(self) -> ShaperThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ShaperProcess:
    """The shaper as a subprocess (``python -m tests.helpers.link_shaper``)."""

    def __init__(self, target: tuple[str, int], profile: LinkProfile, *,
                 seed: int | None = None) -> None:
        self.target, self.profile, self.seed = target, profile, seed
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._lock = threading.Lock()

    def start(self) -> ShaperProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "tests.helpers.link_shaper",
               "--target", f"{self.target[0]}:{self.target[1]}",
               "--profile", json.dumps(self.profile.as_dict())]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"link shaper did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def _command(self, text: str) -> str | None:
        assert self.proc is not None and self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
            if text == "stats":
                assert self.proc.stdout is not None
                return self.proc.stdout.readline()
        return None

    def drop(self, seconds: float, *, blackhole: bool = False) -> None:
        self._command(f"{'blackhole' if blackhole else 'drop'} {seconds}")

    def set_profile(self, profile: LinkProfile) -> None:
        self._command(f"profile {json.dumps(profile.as_dict())}")

    @property
    def stats(self) -> ShaperStats:
        line = self._command("stats")
        return ShaperStats(**json.loads(line or "{}"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: the shaper exits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> ShaperProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(target: tuple[str, int], profile: LinkProfile, seed: int | None) -> None:
    shaper = await LinkShaper(target, profile, seed=seed).start()
    print(f"PORT {shaper.port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.decode().split(maxsplit=1)
        if not words:
            continue
        if words[0] == "profile":
            shaper.set_profile(LinkProfile.from_dict(json.loads(words[1])))
        elif words[0] in ("drop", "blackhole"):
            shaper.drop(float(words[1]), blackhole=words[0] == "blackhole")
        elif words[0] == "stats":
            print(json.dumps(dataclasses.asdict(shaper.stats)), flush=True)
    await shaper.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--profile", help="LinkProfile as JSON (overrides the flags below)")
    ap.add_argument("--rate", type=float, default=None, help="bits/s each way")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds one way")
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    host, port = args.target.rsplit(":", 1)
    if args.profile:
        profile = LinkProfile.from_dict(json.loads(args.profile))
    else:
        profile = LinkProfile.symmetric(args.rate, args.latency, jitter_s=args.jitter)
    asyncio.run(_serve((host, int(port)), profile, args.seed))


if __name__ == "__main__":
    main()
