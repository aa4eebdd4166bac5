"""``lpr-agent check`` tells whether a server is usable without changing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.agent_process import REPO_ROOT
from tests.helpers.stub_process import StubProcess, free_port


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubProcess]:
    with StubProcess(tmp_path / "stub.db") as s:
        yield s


def check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LPR_AGENT_")}
    env["LPR_AGENT_CAMERA__CAMERA_ID"] = "cam_check"
    return subprocess.run([sys.executable, "-m", "lpr_agent", "check", "--config", os.devnull,
                           "--timeout", "5", *args], capture_output=True, text=True,
                          timeout=90, cwd=REPO_ROOT, env=env)


def _cameras(stub: StubProcess) -> list[str]:
    return [c["camera_id"] for c in stub.get("/api/cameras").json()["cameras"]]


def test_check_leaves_no_camera_on_the_server(stub: StubProcess) -> None:
    r = check("--server", stub.url, "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert report["socketio_ok"] and report["rest_ok"]
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["Socket.IO connect"]["ok"] and "not registered" in steps[
        "Socket.IO connect"]["detail"]
    assert steps["Socket.IO ping/pong"]["ok"]
    assert report["ack_style"] == "unknown"  # learnt only by registering
    assert _cameras(stub) == []
    stats = stub.get("/api/statistics").json()["data"]
    assert stats["total_detections"] == 0 and stats["total_health_checks"] == 0


def test_register_on_request(stub: StubProcess) -> None:
    r = check("--server", stub.url, "--register")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "registered cam_check" in r.stdout and "ack style: outcome" in r.stdout
    assert _cameras(stub) == ["cam_check"]


def test_unreachable_server_is_unusable() -> None:
    r = check("--server", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 2 and "FAIL: the server is not reachable" in r.stdout
