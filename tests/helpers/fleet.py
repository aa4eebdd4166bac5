"""A fleet of simulated cameras against one stub (``benchmarks/fleet_bench.py``).

Each camera is the real thing minus the detector: its own spool file and its
own ``Uplink``; readings are put at a fixed rate with a random phase, so a
fleet does not tick in lockstep. The cameras run in a few worker processes,
one asyncio loop each, so that hundreds fit on a 2-core machine.

:func:`run_fleet`: warm-up, steady load, the stub stopped for ``down_s``, the
stub back with its database, recovery, then drain. Workers report per reading
its camera, event_id, put time and ack time (``time.monotonic()`` is
system-wide on Linux, so the parent lines them up with its own clock), and
each uplink's counters. Every reading is then looked up in the stub's
database by ``event_id``: nothing may be lost or stored twice.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import multiprocessing as mp
import os
import random
import sqlite3
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

from lpr_agent.identity import CameraIdentity
from lpr_agent.protocol import Kind
from lpr_agent.spool import Spool, SpoolConfig
from lpr_agent.uplink import Uplink, UplinkConfig
from tests.helpers.stub_process import StubProcess, free_port


@dataclass
class FleetOptions:
    cameras: int = 300
    rate: float = 0.5  # readings per second per camera
    processes: int = 4
    warmup_s: float = 10.0
    steady_s: float = 40.0
    down_s: float = 30.0
    recover_s: float = 70.0  # cameras keep reading this long after the stub is back
    drain_timeout_s: float = 120.0
    image_share: float = 0.1
    image_bytes: int = 30_000
    synchronous: str = "FULL"
    spool_dir: str = "/dev/shm"
    work_dir: Path | None = None


@dataclass
class WorkerSpec:
    cameras: list[str]
    server_url: str
    spool_dir: str
    rate: float
    image_share: float
    image_bytes: int
    synchronous: str
    seed: int


def reading(camera: str, rng: random.Random, image_share: float = 0.0,
            image_bytes: int = 0) -> dict[str, Any]:
    """One detection of about 1 KB of JSON, with an image at ``image_share``."""
    msg: dict[str, Any] = {
        "type": "detection_result",
        "event_id": str(uuid.uuid4()),
        "camera_id": camera,
        "checkpoint_id": "fleet",
        "timestamp": "2026-11-30T10:00:00.000+00:00",
        "vehicles_count": 1,
        "plates_count": 1,
        "ocr_results": ["FL33T01"],
        "vehicle_detections": [{"bbox": [100, 100, 400, 300], "confidence": 0.9, "class": "car"}],
        "plate_detections": [{"bbox": [200, 250, 280, 270], "confidence": 0.9,
                              "text": "FL33T01"}],
        "processing_time_ms": 120,
        "details": {"pad": "x" * 640},
    }
    if image_bytes and rng.random() < image_share:
        msg["annotated_image"] = base64.b64encode(os.urandom(image_bytes)).decode()
    return msg


# --- worker process ------------------------------------------------------------------


class TimedSpool:
    """The real spool with put and ack times noted; the uplink sees a spool."""

    def __init__(self, spool: Spool, camera: str) -> None:
        self._spool = spool
        self.camera = camera
        self.times: dict[int, list[Any]] = {}  # spool id -> [event_id, put_at, acked_at]

    def put(self, kind: Kind, payload: dict[str, Any]) -> int:
        item_id = self._spool.put(kind, payload)
        self.times[item_id] = [payload["event_id"], time.monotonic(), None]
        return item_id

    def ack(self, ids: Any) -> None:
        ids = list(ids)
        self._spool.ack(ids)
        now = time.monotonic()
        for item_id in ids:
            entry = self.times.get(int(item_id))
            if entry is not None and entry[2] is None:
                entry[2] = now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)


@dataclass
class _Camera:
    name: str
    spool: TimedSpool
    uplink: Uplink
    next_put: float
    task: asyncio.Task[None] | None = field(default=None)


async def _cameras(spec: WorkerSpec, control: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    stop = asyncio.Event()
    cams: list[_Camera] = []
    for name in spec.cameras:
        spool = Spool.open(SpoolConfig(path=Path(spec.spool_dir) / f"{name}.db",
                                       synchronous=spec.synchronous))
        timed = TimedSpool(spool, name)
        uplink = Uplink(UplinkConfig(server_url=spec.server_url),
                        CameraIdentity(camera_id=name, checkpoint_id="fleet"), timed)
        cams.append(_Camera(name, timed, uplink,
                            time.monotonic() + rng.uniform(0, 1 / spec.rate)))
    for cam in cams:
        cam.task = asyncio.create_task(cam.uplink.run(stop))
    period = 1.0 / spec.rate
    while control["producing"].value:
        now = time.monotonic()
        for cam in cams:
            while cam.next_put <= now:
                cam.spool.put(Kind.DETECTION, reading(cam.name, rng, spec.image_share,
                                                      spec.image_bytes))
                cam.next_put += period
        await asyncio.sleep(0.02)
    while not control["finish"].value and any(
            t[2] is None for c in cams for t in c.spool.times.values()):
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*(c.task for c in cams if c.task), return_exceptions=True)
    readings, uplinks = [], []
    for cam in cams:
        readings.extend((cam.name, *t) for t in cam.spool.times.values())
        st = cam.uplink.stats()
        uplinks.append({"camera": cam.name, "retried": st.retried,
                        "possible_duplicates": st.possible_duplicates,
                        "sio_connects": st.sio_connects,
                        "sio_connect_failures": st.sio_connect_failures})
        cam.spool.close()
    return {"readings": readings, "uplinks": uplinks}


def worker_main(spec: WorkerSpec, control: dict[str, Any], conn: Connection) -> None:
    """A worker process: run its cameras, send the results to the parent."""
    logging.basicConfig(level=logging.ERROR)
    try:
        conn.send(asyncio.run(_cameras(spec, control)))
    except BaseException as exc:  # the parent must hear about it, not hang
        conn.send({"error": repr(exc)})
        raise
    finally:
        conn.close()


# --- parent -------------------------------------------------------------------------

class CountingProxy:
    """TCP proxy in front of the stub that notes when each connection arrives.

    Every TCP connection a camera opens (Socket.IO handshake, REST request) is
    one attempt. While the stub is down the proxy does not listen either
    (:meth:`pause`), so a camera's connect is refused by the kernel exactly as
    by a server that is down; accepting and then closing instead would look
    to the camera like a request lost in flight.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.accepts: list[float] = []
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def pause(self) -> None:
        """Stop listening (the port refuses connections) until :meth:`resume`."""
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    def resume(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                  backlog=1024)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(time.monotonic())
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()



def per_second(times: list[float], start: float, end: float) -> list[int]:
    buckets = [0] * max(1, int(end - start + 0.999))
    for t in times:
        if start <= t < end:
            buckets[int(t - start)] += 1
    return buckets


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def stored_counts(db: Path) -> Counter[str]:
    conn = sqlite3.connect(db)
    try:
        return Counter(dict(conn.execute(
            "SELECT event_id, COUNT(*) FROM records WHERE event_id IS NOT NULL "
            "GROUP BY event_id")))
    finally:
        conn.close()


def run_fleet(opt: FleetOptions, stub: StubProcess | None = None) -> dict[str, Any]:
    """Run the whole timeline; returns the figures (see benchmarks/fleet_bench.py)."""
    work = opt.work_dir or Path(mkdtemp(prefix="fleet-"))
    spool_dir = Path(mkdtemp(prefix="fleet-spools-", dir=opt.spool_dir))
    own_stub = stub is None
    if stub is None:
        stub = StubProcess(work / "stub.db", log_path=work / "stub.log").start()
    proxy = CountingProxy(stub.port).start()
    url = f"http://127.0.0.1:{proxy.port}"
    ctx = mp.get_context("spawn")
    control = {"producing": ctx.Value("b", 1), "finish": ctx.Value("b", 0)}
    names = [f"cam{n:04d}" for n in range(opt.cameras)]
    workers = []
    for i in range(opt.processes):
        spec = WorkerSpec(names[i::opt.processes], url, str(spool_dir), opt.rate,
                          opt.image_share, opt.image_bytes, opt.synchronous, seed=i)
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker_main, args=(spec, control, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    try:
        t_start = time.monotonic()
        steady_from = t_start + opt.warmup_s
        steady_to = steady_from + opt.steady_s
        time.sleep(max(0.0, steady_to - time.monotonic()))
        proxy.pause()
        stub.stop()
        time.sleep(opt.down_s)
        stub.start()
        proxy.resume()
        t_back = time.monotonic()
        time.sleep(opt.recover_s)
        control["producing"].value = 0
        deadline = time.monotonic() + opt.drain_timeout_s
        results = [conn.recv() for _, conn in workers
                   if conn.poll(max(0.1, deadline - time.monotonic()))]
        control["finish"].value = 1
        if len(results) < len(workers):
            raise RuntimeError(f"only {len(results)} of {len(workers)} workers finished")
        for proc, _ in workers:
            proc.join(30)
    finally:
        control["finish"].value = 1
        control["producing"].value = 0
        for proc, _ in workers:
            if proc.is_alive():
                proc.kill()
        proxy.stop()
        if own_stub:
            stub.stop()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"workers failed: {errors}")
    return _figures(opt, results, proxy.accepts, stored_counts(stub.db),
                    (steady_from, steady_to, t_back))


def _figures(opt: FleetOptions, results: list[dict[str, Any]], accepts: list[float],
             stored: Counter[str], marks: tuple[float, float, float]) -> dict[str, Any]:
    steady_from, steady_to, t_back = marks
    readings = [r for res in results for r in res["readings"]]
    uplinks = [u for res in results for u in res["uplinks"]]
    lost = sum(1 for _, eid, _, _ in readings if eid not in stored)
    duplicates = sum(n - 1 for n in stored.values() if n > 1)
    steady = [r for r in readings if steady_from <= r[2] < steady_to]
    stored_in_window = sum(1 for r in readings
                           if r[3] is not None and steady_from <= r[3] < steady_to)
    latencies = [(r[3] - r[2]) * 1000 for r in steady if r[3] is not None]
    drain_by_camera: dict[str, float] = {}
    for camera, _, put_at, acked_at in readings:
        if put_at < t_back:
            done = (acked_at if acked_at is not None else float("inf")) - t_back
            drain_by_camera[camera] = max(drain_by_camera.get(camera, 0.0), done)
    drains = list(drain_by_camera.values())
    drain_s = max(drains) if drains else 0.0
    attempts = per_second(accepts, t_back, t_back + max(1.0, min(drain_s, opt.recover_s)))
    mean_attempts = statistics.fmean(attempts)
    return {
        "cameras": opt.cameras,
        "rate_per_camera": opt.rate,
        "offered_per_s": round(len(steady) / opt.steady_s, 1),
        "stored_ratio": round(stored_in_window / len(steady), 4) if steady else None,
        "lost": lost,
        "duplicates": duplicates,
        "unacked_at_end": sum(1 for r in readings if r[3] is None),
        "readings": len(readings),
        "drain_s": round(drain_s, 2),
        "drain_p50_s": round(pct(drains, 0.5) or 0.0, 2),
        "drain_p90_s": round(pct(drains, 0.9) or 0.0, 2),
        "storm_peak_per_s": max(attempts),
        "storm_mean_per_s": round(mean_attempts, 2),
        "storm_peak_to_mean": round(max(attempts) / mean_attempts, 2) if mean_attempts else None,
        "attempts_per_s": attempts,
        "p50_ack_ms": round(pct(latencies, 0.5) or 0.0, 1),
        "p99_ack_ms": round(pct(latencies, 0.99) or 0.0, 1),
        "resent": sum(u["retried"] for u in uplinks),
        "possible_duplicates": sum(u["possible_duplicates"] for u in uplinks),
        "spool": f"{opt.synchronous} on {opt.spool_dir}",
    }
