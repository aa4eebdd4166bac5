"""Start-up/shutdown behaviour and the benchmark script (smoke run)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time

import requests

from tests.helpers.sio_client import RecordingClient
from tests.helpers.stub_process import REPO_ROOT, StubProcess


def test_sigterm_exits_0_promptly_despite_stalled_requests_and_clients(tmp_path) -> None:
    s = StubProcess(tmp_path / "l.db", "--faults").start()
    client = RecordingClient().connect(s.url)
    s.faults(stall=True)

    def held_request() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(s.url + "/api/test", timeout=30)

    t = threading.Thread(target=held_request, daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert s.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 6
    client.wait_for("disconnect", timeout=5)
    client.disconnect()
    assert "dashboard at that URL" in s.log()


def test_benchmark_script_smoke() -> None:
    r = subprocess.run(
        [sys.executable, "benchmarks/stub_bench.py", "--rounds", "1", "--seconds", "0.3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("sio_ratio", "rest_ratio", "sio_stub_per_s", "rest_bare_per_s"):
        assert summary[key] > 0
    assert summary["acked_equals_stored"] is True
