"""The README's run command: ``lpr-agent demo`` (what ``scripts/demo`` execs).

Runs the real thing: the stub and the agent as child processes on the
synthetic camera. Ctrl-C (SIGINT) must stop both cleanly.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.helpers.stub_process import free_port

pytestmark = pytest.mark.slow


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_demo_shows_plates_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lpr_agent", "demo", "--port", str(port),
         "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("plate "):
                break
        output = "".join(lines)
        assert f"Dashboard:  http://127.0.0.1:{port}/" in output, output
        assert any(x.strip().startswith("plate ") for x in lines), output
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
        records = requests.get(f"http://127.0.0.1:{port}/api/records", timeout=5).json()
        assert records["records"] and records["records"][0]["camera_id"] == "demo_camera"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Stopping" in out
    assert _port_is_free(port), "the stub outlived the demo"
    assert "agent stopped" in (tmp_path / "agent.log").read_text()
