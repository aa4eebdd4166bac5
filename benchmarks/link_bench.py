"""Slow-link benchmark (issue 12): a backlog of detections with images drained
by the real uplink through a shaped link, against what the link allows.

Per link profile (the shaper, ``tests/helpers/link_shaper.py``, runs as its
own process; latency is added in EACH direction, so the round trip is twice
the figure):

* ``efficiency``: backlog bytes / (drain time x link rate); drain time from
  the uplink's start (connect included) to the last ack in the spool;
* ``flaps``: Socket.IO link losses (reconnects) + channel switches to REST;
* ``retry_ratio``: messages sent beyond one per reading / readings delivered;
* baseline, same run, same shaper: a bare python-socketio client sending the
  same messages one at a time, waiting for each ack (``bare_efficiency``),
  and the line-rate bound (``line_rate_s``).

Then, on loopback: the stub is SIGSTOPped (a frozen server) while the uplink
is idle (a reading is put at once) and while it drains; the figure is the
time until the uplink declares the Socket.IO link dead.

The last line of output is one JSON object.

    .venv/bin/python benchmarks/link_bench.py [--n 54] [--image-kb 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import json
import os
import struct
import sys
import tempfile
import termios
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import socketio  # noqa: E402

from lpr_agent.spool import Kind, Spool, SpoolConfig  # noqa: E402
from lpr_agent.uplink import Uplink, UplinkConfig  # noqa: E402
from tests.helpers.link_shaper import LinkProfile, ShaperProcess  # noqa: E402
from tests.helpers.payloads import detection  # noqa: E402
from tests.helpers.stub_process import StubProcess  # noqa: E402
from tests.helpers.uplink_thread import UplinkThread, wait_for  # noqa: E402

CAMERA = "camera_link_bench"
PROFILES = {  # name: (bits/s each way, one-way latency s)
    "1mbit_100ms": (1_000_000, 0.1),
    "256kbit_300ms": (256_000, 0.3),
}


def backlog(n: int, image_kb: int) -> list[dict[str, Any]]:
    """Detections with an annotated image of ``image_kb`` KB of base64 (random
    bytes: JPEG does not compress further)."""
    raw = image_kb * 1024 * 3 // 4
    return [detection(CAMERA, event_id=str(uuid.uuid4()), ocr_results=[f"LNK{i:04d}"],
                      annotated_image=base64.b64encode(os.urandom(raw)).decode())
            for i in range(n)]


def payload_bytes(payloads: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(p, separators=(",", ":"))) for p in payloads)


class QueueSampler:
    """Where the bytes handed to the Socket.IO link wait, sampled every 20 ms
    from outside the uplink's loop (racy reads of counters; benchmark only):
    python-socketio's send queue (packets), the transport's write buffer and
    the kernel's unsent bytes (SIOCOUTQ) on our side, and the flow
    controller's in-flight bytes and window."""

    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink
        self.max: dict[str, int] = {"eio_queue_packets": 0, "transport_buffer_bytes": 0,
                                    "kernel_unsent_bytes": 0, "in_flight_bytes": 0,
                                    "window_bytes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(Exception):
                self._sample()

    def _sample(self) -> None:
        link = self.uplink._sio  # the live SioLink, if any
        if link is None:
            return
        m = self.max
        m["in_flight_bytes"] = max(m["in_flight_bytes"], link.flow.in_flight_bytes)
        m["window_bytes"] = max(m["window_bytes"], link.flow.window_bytes)
        eio = link.client.eio
        m["eio_queue_packets"] = max(m["eio_queue_packets"], eio.queue.qsize())
        conn = eio.ws._response.connection
        if conn is None or conn.transport is None:
            return
        transport = conn.transport
        m["transport_buffer_bytes"] = max(m["transport_buffer_bytes"],
                                          transport.get_write_buffer_size())
        sock = transport.get_extra_info("socket")
        if sock is not None:
            m["socket_samples"] = m.get("socket_samples", 0) + 1  # the probe reached the socket
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
            m["kernel_unsent_bytes"] = max(m["kernel_unsent_bytes"],
                                           struct.unpack("i", raw)[0])


def flaps(st: Any) -> int:
    return max(0, st.sio_connects - 1) + st.fallback_switches


def drain_through_link(tmp: Path, name: str, rate: float, latency: float,
                       payloads: list[dict[str, Any]]) -> dict[str, Any]:
    total = payload_bytes(payloads)
    with StubProcess(tmp / f"{name}-stub.db", "--log-level", "WARNING") as stub, \
            ShaperProcess(("127.0.0.1", stub.port), LinkProfile.symmetric(rate, latency)) as link:
        spool = Spool.open(SpoolConfig(path=tmp / f"{name}.db"))
        spool.put_many([(Kind.DETECTION, p) for p in payloads])
        config = UplinkConfig(server_url=f"http://127.0.0.1:{link.port}")  # product defaults
        up = UplinkThread(config, spool, CAMERA)
        t0 = time.perf_counter()
        with QueueSampler(up.uplink) as sampler:
            up.start()
            t1 = wait_for(lambda: spool.stats().items == 0, 900, 0.05)
        st = up.uplink.stats()
        up.stop()
        spool.close()
        stored = stub.records()
        events = [r.get("event_id") for r in stored]
        assert sorted(events) == sorted(p["event_id"] for p in payloads), "lost or doubled"
        wire_up = link.stats.bytes_up  # the uplink's traffic alone
        bare_s = asyncio.run(bare_one_by_one(f"http://127.0.0.1:{link.port}",
                                             fresh(payloads)))
    drain = t1 - t0
    line = total * 8 / rate
    return {
        "backlog_bytes": total,
        "drain_s": round(drain, 2),
        "line_rate_s": round(line, 2),
        "efficiency": round(line / drain, 3),
        "flaps": flaps(st),
        "sent": st.sent,
        "acked": st.acked,
        "retry_ratio": round((st.sent - len(payloads)) / len(payloads), 3),
        "wire_bytes_up": wire_up,
        "queues_max": sampler.max,
        "bare_drain_s": round(bare_s, 2),
        "bare_efficiency": round(line / bare_s, 3),
    }


def fresh(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same messages with new event_ids (the stub would answer repeats as duplicates)."""
    return [{**p, "event_id": str(uuid.uuid4())} for p in payloads]


async def bare_one_by_one(url: str, payloads: list[dict[str, Any]]) -> float:
    """python-socketio, one message at a time, each waiting for its ack."""
    client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    t0 = time.monotonic()
    await client.connect(url, transports=["websocket"], wait_timeout=30)
    await client.call("camera_register", {"camera_id": CAMERA, "checkpoint_id": "checkpoint_001",
                                          "timestamp": "2024-12-19T10:00:00Z"}, timeout=60)
    for p in payloads:
        reply = await client.call("lpr_data", p, timeout=120)
        assert reply and reply.get("success"), reply
    elapsed = time.monotonic() - t0
    await client.disconnect()
    return elapsed


def frozen_server(tmp: Path, *, draining: bool, measured: bool = True) -> float:
    """Seconds from SIGSTOP of the stub to the uplink declaring Socket.IO dead.

    ``measured=False``: the link has carried nothing yet (a fresh process), so
    the deadline of the first message rests on ``link_min_rate_kbps``."""
    name = f"frozen-{draining}-{measured}"
    with StubProcess(tmp / f"{name}-stub.db", "--log-level", "WARNING") as stub:
        spool = Spool.open(SpoolConfig(path=tmp / f"{name}.db", synchronous="NORMAL"))
        up = UplinkThread(UplinkConfig(server_url=stub.url), spool, CAMERA).start()
        wait_for(lambda: up.uplink.stats().connected, 15)
        if measured and not draining:
            # The agent has been running: a few readings went out, then quiet.
            spool.put_many([(Kind.DETECTION, p) for p in backlog(5, 50)])
            wait_for(lambda: spool.stats().items == 0, 30)
        stop = threading.Event()
        producer = None
        if draining:
            def produce() -> None:  # a backlog that keeps the pipe full
                while not stop.is_set():
                    spool.put_many([(Kind.DETECTION, p) for p in backlog(20, 50)])
                    time.sleep(0.05)

            producer = threading.Thread(target=produce, daemon=True)
            producer.start()
            wait_for(lambda: up.uplink.stats().acked > 200, 60)
        else:
            time.sleep(1.0)  # idle, connected
        stub.freeze()
        t0 = time.perf_counter()
        if not draining:
            spool.put(Kind.DETECTION, backlog(1, 50)[0])
        t1 = wait_for(lambda: not up.uplink.stats().connected, 60, 0.005)
        stop.set()
        if producer is not None:
            producer.join()
        stub.thaw()
        up.stop()
        spool.close()
    return t1 - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=54, help="detections in the backlog")
    parser.add_argument("--image-kb", type=int, default=50, help="image size (base64 KB)")
    parser.add_argument("--profiles", default=",".join(PROFILES),
                        help=f"comma-separated, of {', '.join(PROFILES)}")
    args = parser.parse_args()
    result: dict[str, Any] = {"n": args.n, "image_kb": args.image_kb}
    with tempfile.TemporaryDirectory(prefix="link-bench-") as d:
        tmp = Path(d)
        payloads = backlog(args.n, args.image_kb)
        for name in args.profiles.split(","):
            rate, latency = PROFILES[name]
            r = drain_through_link(tmp, name, rate, latency, payloads)
            result[name] = r
            print(f"{name}: drain {r['drain_s']} s (line rate {r['line_rate_s']} s), "
                  f"efficiency {r['efficiency']}, flaps {r['flaps']}, retry_ratio "
                  f"{r['retry_ratio']}; bare one-by-one {r['bare_drain_s']} s "
                  f"(efficiency {r['bare_efficiency']})", flush=True)
        for key, draining, measured in (("frozen_idle_s", False, True),
                                        ("frozen_draining_s", True, True),
                                        ("frozen_idle_unmeasured_s", False, False)):
            result[key] = round(frozen_server(tmp, draining=draining, measured=measured), 2)
            print(f"{key}: {result[key]}", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
