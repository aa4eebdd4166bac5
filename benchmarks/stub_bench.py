"""Sustained detections/s the server stub stores, beside a bare handler.

Starts, in the same run and under the same conditions, two server processes:

* the stub (``python -m server_stub``, default mode, SQLite writes on);
* a bare python-socketio ``AsyncServer`` on aiohttp whose ``lpr_data`` handler
  and ``POST /api/detection`` route parse the message and answer, storing
  nothing.

Each gets the same load: detections with a plate crop and an ``event_id``,
sent over Socket.IO with acks (a window of in-flight ``emit`` callbacks) and
over REST (concurrent aiohttp POSTs). The stub's stored count is checked
against what was acknowledged. The last line printed is one JSON object with
``sio_ratio`` and ``rest_ratio`` (stub rate / bare rate).

    python benchmarks/stub_bench.py [--seconds 2] [--rounds 5] [--window 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import requests
import socketio

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("bare", "stub")
CROP_B64 = base64.b64encode(os.urandom(3000)).decode()  # ~ a small JPEG plate crop

log = logging.getLogger("stub_bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(n: int) -> dict[str, Any]:
    return {
        "type": "detection_result",
        "event_id": str(uuid.uuid4()),
        "camera_id": "bench_cam",
        "checkpoint_id": "bench_chk",
        "timestamp": "2024-12-19T10:00:00.000+00:00",
        "vehicles_count": 1,
        "plates_count": 1,
        "ocr_results": [f"B{n:07d}"],
        "vehicle_detections": [{"bbox": [100, 100, 400, 300], "confidence": 0.9, "class": "car"}],
        "plate_detections": [
            {"bbox": [200, 250, 280, 280], "confidence": 0.8, "text": f"B{n:07d}"}
        ],
        "processing_time_ms": 42.0,
        "cropped_plates": [CROP_B64],
    }


# --- the bare server (runs in its own process) ---------------------------------------


def run_bare_server(port: int) -> None:
    from aiohttp import web

    from lpr_agent.protocol import now_timestamp

    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application(client_max_size=10 * 1024 * 1024)
    sio.attach(app)

    @sio.on("lpr_data")
    async def lpr_data(sid: str, data: Any) -> dict[str, Any]:
        # The same exchange as the protocol asks of any server (reply event,
        # then the ack), so that the comparison prices the stub's validation
        # and storage rather than a different number of packets.
        reply = {"success": True, "detection_id": str(uuid.uuid4()), "timestamp": now_timestamp()}
        await sio.emit("lpr_response", reply, to=sid)
        return reply

    async def detection(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response(
            {"success": True, "detection_id": str(uuid.uuid4()), "timestamp": now_timestamp()}
        )

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"success": True})

    app.router.add_post("/api/detection", detection)
    app.router.add_get("/api/test", ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- load generators -----------------------------------------------------------------


async def sio_load(url: str, seconds: float, window: int) -> tuple[int, float]:
    """Acked detections/s over one Socket.IO connection with ``window`` in flight."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    slots = asyncio.Semaphore(window)
    acked = 0
    failed = 0
    n = 0
    done = asyncio.Event()

    def on_ack(*args: Any) -> None:
        nonlocal acked, failed
        if args and isinstance(args[0], dict) and args[0].get("success") is False:
            failed += 1
        acked += 1
        slots.release()

    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        await slots.acquire()
        n += 1
        await client.emit("lpr_data", message(n), callback=on_ack)
    for _ in range(window):  # wait for the tail
        await asyncio.wait_for(slots.acquire(), timeout=30)
    elapsed = time.perf_counter() - t0
    done.set()
    await client.disconnect()
    if failed:
        raise RuntimeError(f"{failed} detections were rejected")
    return acked, elapsed


async def rest_load(url: str, seconds: float, concurrency: int) -> tuple[int, float]:
    ok = 0
    counter = 0

    async def worker(session: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal ok, counter
        while time.perf_counter() < deadline:
            counter += 1
            async with session.post(url + "/api/detection", json=message(counter)) as r:
                body = await r.json()
                if r.status != 200 or not body.get("success"):
                    raise RuntimeError(f"REST detection failed: {r.status} {body}")
                ok += 1

    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(worker(session, deadline) for _ in range(concurrency)))
        return ok, time.perf_counter() - t0


# --- orchestration -----------------------------------------------------------------------


class Server:
    def __init__(self, cmd: list[str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        env.pop("LPR_STUB_TOKEN", None)
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if requests.get(self.url + "/api/test", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"server on {port} did not start")

    def cpu(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per round, channel, server")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=64, help="Socket.IO messages in flight")
    parser.add_argument("--rest-concurrency", type=int, default=8)
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        run_bare_server(args.bare_server)
        return 0
    logging.basicConfig(level=logging.WARNING)

    # Both servers run side by side and are measured in alternating rounds, so
    # that load from other processes on the machine hits both alike; the
    # ratio reported is the median of the per-round ratios. Server CPU time
    # per message is recorded too: unlike rates, it barely moves with load.
    rates: dict[str, dict[str, list[float]]] = {n: {"sio": [], "rest": []} for n in SERVERS}
    cpu_us: dict[str, dict[str, list[float]]] = {n: {"sio": [], "rest": []} for n in SERVERS}
    acked = 0
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        bare = Server([sys.executable, __file__, "--bare-server", str(port)], port)
        port = free_port()
        db = Path(tmp) / "bench.db"
        try:
            stub = Server(
                [sys.executable, "-m", "server_stub", "--port", str(port), "--db", str(db),
                 "--log-level", "WARNING"],
                port,
            )  # fmt: skip
        except BaseException:
            bare.stop()
            raise
        try:
            servers = {"bare": bare, "stub": stub}
            for server in servers.values():  # warm-up, not counted
                asyncio.run(sio_load(server.url, 0.3, args.window))
            warm = requests.get(stub.url + "/api/statistics", timeout=30).json()["data"]
            for _ in range(args.rounds):
                for name, server in servers.items():
                    for ch in ("sio", "rest"):
                        cpu0 = server.cpu()
                        if ch == "sio":
                            load = sio_load(server.url, args.seconds, args.window)
                        else:
                            load = rest_load(server.url, args.seconds, args.rest_concurrency)
                        n, secs = asyncio.run(load)
                        rates[name][ch].append(n / secs)
                        cpu_us[name][ch].append((server.cpu() - cpu0) / n * 1e6)
                        acked += n if name == "stub" else 0
            stored = requests.get(stub.url + "/api/statistics", timeout=30).json()["data"]
        finally:
            bare.stop()
            stub.stop()
    new_rows = stored["total_detections"] - warm["total_detections"]
    if new_rows != acked:
        raise RuntimeError(f"stub stored {new_rows} detections but acknowledged {acked}")

    print(
        f"{'channel':<8}{'bare /s':>10}{'stub /s':>10}{'ratio':>7}{'bare cpu':>10}{'stub cpu':>10}"
        f"   (medians of {args.rounds} rounds of {args.seconds:g} s; cpu = server CPU us/msg)"
    )
    summary: dict[str, Any] = {}
    for ch in ("sio", "rest"):
        ratios = [s / b for s, b in zip(rates["stub"][ch], rates["bare"][ch], strict=True)]
        bare_rate, stub_rate = median(rates["bare"][ch]), median(rates["stub"][ch])
        bare_cpu, stub_cpu = median(cpu_us["bare"][ch]), median(cpu_us["stub"][ch])
        ratio = median(ratios)
        print(
            f"{ch:<8}{bare_rate:>10.0f}{stub_rate:>10.0f}{ratio:>7.2f}"
            f"{bare_cpu:>10.0f}{stub_cpu:>10.0f}"
        )
        summary[f"{ch}_bare_per_s"] = round(bare_rate, 1)
        summary[f"{ch}_stub_per_s"] = round(stub_rate, 1)
        summary[f"{ch}_ratio"] = round(ratio, 3)
        summary[f"{ch}_server_cpu_us_per_msg_bare"] = round(bare_cpu)
        summary[f"{ch}_server_cpu_us_per_msg_stub"] = round(stub_cpu)
    summary["stub_stored"] = stored["total_detections"]
    summary["acked_equals_stored"] = True
    summary["rounds"] = args.rounds
    summary["seconds_per_round"] = args.seconds
    summary["target_ratio"] = 0.5
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
