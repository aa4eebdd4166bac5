"""Issue 15 (stub part): ``--workers 2 --redis URL`` — two stub processes on one port
(SO_REUSEPORT) sharing broadcasts through a real redis-server and one SQLite file."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.payloads import detection, event_id, registration
from tests.helpers.prereq import require_executable
from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import StubProcess, free_port

WS = {"transports": ["websocket"]}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = require_executable("redis-server")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_redis(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_for_redis(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, "redis-server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not answer")


def _worker_of(client: RecordingClient) -> int:
    return client.call("ping", {"message": "who"})["worker"]


def _client_on(stub: StubProcess, want_other_than: int | None, tries: int = 60) -> RecordingClient:
    """A connected client on a worker other than ``want_other_than`` (any if None)."""
    for _ in range(tries):
        client = RecordingClient().connect(stub.url, **WS)
        if want_other_than is None or _worker_of(client) != want_other_than:
            return client
        client.disconnect()
    raise AssertionError(f"{tries} connections all went to worker {want_other_than}")


def test_two_workers_share_broadcasts_and_storage(tmp_path: Path, redis_url: str) -> None:
    with StubProcess(tmp_path / "w.db", "--workers", "2", "--redis", redis_url) as stub:
        dashboard = _client_on(stub, None)
        camera = None
        try:
            dash_worker = _worker_of(dashboard)
            dashboard.call("join_dashboard")
            camera = _client_on(stub, dash_worker)
            cam_worker = _worker_of(camera)
            assert cam_worker != dash_worker

            camera.call("camera_register", registration("cam-w", "chk-w"))
            dashboard.wait_for("camera_status", lambda d: d["camera_id"] == "cam-w", timeout=10)
            eid = event_id()
            first = camera.call("lpr_data", detection("cam-w", "chk-w", event_id=eid, seq=1))
            assert first["success"] is True and first["duplicate"] is False
            news = dashboard.wait_for(
                "new_detection", lambda d: d["camera_id"] == "cam-w", timeout=10
            )
            assert news["detection_id"] == first["detection_id"] and news["seq"] == 1

            # The same event through the other worker: stored once.
            again = dashboard.call("lpr_data", detection("cam-w", "chk-w", event_id=eid, seq=1))
            assert again["duplicate"] is True
            assert again["detection_id"] == first["detection_id"]
            records = stub.records(camera_id="cam-w")
            assert [r["detection_id"] for r in records] == [first["detection_id"]]
            # no second new_detection for the duplicate
            time.sleep(0.5)
            assert len(dashboard.named("new_detection")) == 1
        finally:
            dashboard.disconnect()
            if camera is not None:
                camera.disconnect()
        assert stub.stop() == 0


def test_polling_is_refused_with_workers(tmp_path: Path, redis_url: str) -> None:
    # A polling session's requests could reach different workers.
    with StubProcess(tmp_path / "p.db", "--workers", "2", "--redis", redis_url) as stub:
        r = stub.get("/socket.io/?EIO=4&transport=polling")
        assert r.status_code == 400


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ([], "--redis"),
        (["--redis", "redis://x", "--legacy"], "--legacy"),
        (["--redis", "redis://x", "--faults"], "--faults"),
    ],
)
def test_workers_refuse_what_they_cannot_share(tmp_path: Path, extra: list[str], why: str) -> None:
    stub = StubProcess(tmp_path / "r.db", "--workers", "2", *extra)
    done = subprocess.run(stub.command(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and why in done.stderr
