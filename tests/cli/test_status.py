"""``lpr-agent status``: says plainly whether the daemon runs, dates what it shows,
explains where the readings are. status.json files as a daemon leaves them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from lpr_agent import __version__
from lpr_agent.spool import Kind, Spool, SpoolConfig
from lpr_agent.status import STATUS_FILE, DaemonStatus, write_status
from tests.daemon.agent_process import REPO_ROOT

UPLINK = {"channel": "socketio", "connected": True, "ack_style": "outcome", "sent": 271,
          "acked": 255, "retried": 16, "rejected": 0, "in_flight": 3,
          "last_ack_at": None, "last_error": "connection reset", "last_error_at": None}


def _status(state_dir: Path, pid: int, *, age: float, state: str = "running",
            **over: Any) -> None:
    now = time.time()
    uplink = {**UPLINK, "last_ack_at": now - age - 2, "last_error_at": now - age - 100}
    try:  # a daemon records its start just after its process was created
        started = psutil.Process(pid).create_time() + 0.5
    except psutil.NoSuchProcess:
        started = now - age - 600
    write_status(state_dir / STATUS_FILE, DaemonStatus(
        version=__version__, pid=pid, state=state, started_at=started,
        updated_at=now - age, status_interval_s=2.0, camera_id="cam_s",
        checkpoint_id="cp_s", uplink=uplink,
        pipeline={"source_state": "running", "fps": 5.0, "frames": 3000,
                  "frames_dropped": 12},
        health=[{"component": "uplink", "status": "healthy", "message": "ok"}],
        health_at=now - age - 1, **over))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    spool = Spool.open(SpoolConfig(path=state_dir / "spool.db"))
    spool.put_many([(Kind.DETECTION, {"event_id": f"e{i}", "ocr_results": ["AB123CD"]})
                    for i in range(4)])
    ids = [item.id for item in spool.lease(1)]
    spool.dead_letter(ids, "invalid plate")
    spool.close()
    (tmp_path / "agent.toml").write_text(f'[spool]\npath = "{state_dir / "spool.db"}"\n')
    return state_dir


def status(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LPR_AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "lpr_agent", "status", "-c",
         str(state_dir.parent / "agent.toml"), *args],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_agent_that_died_is_not_running_and_old_values_are_dated(state: Path) -> None:
    _status(state, _dead_pid(), age=420)
    r = status(state)
    assert r.returncode == 3, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("lpr-agent: NOT RUNNING — pid ") and "is gone" in first
    # the link is the dead daemon's last word: past tense, with its age
    assert "link (as of 7.0 min ago, when it last ran): was socketio connected" in r.stdout
    assert "last error 8.7 min ago: connection reset  (recovered since)" in r.stdout
    assert "in flight" not in r.stdout  # nothing is in flight without a daemon
    # the spool is read now, and says so
    assert "in the spool now      3 waiting (3 detections)" in r.stdout
    assert "dead letters          1" in r.stdout
    assert "None" not in r.stdout and "{}" not in r.stdout


def test_counters_are_explained(state: Path) -> None:
    _status(state, os.getpid(), age=0.5)
    r = status(state)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("lpr-agent: running — pid ")
    assert "delivered             255 since the agent started" in r.stdout
    assert "resent                16 (after a link failure or server error: sent again, " \
           "not lost)" in r.stdout
    assert "lost                  0" in r.stdout
    assert "3 in flight" in r.stdout
    assert "link: is socketio connected" in r.stdout


def test_stale_status_of_a_living_pid(state: Path) -> None:
    _status(state, os.getpid(), age=60)  # alive but 30 intervals behind
    r = status(state)
    assert r.returncode == 1
    assert r.stdout.startswith("lpr-agent: NOT RESPONDING — pid ")
    assert "has not updated its status for 1.0 min (expected every 2 s)" in r.stdout


def test_clean_stop_and_json(state: Path) -> None:
    _status(state, os.getpid(), age=30, state="stopped")
    r = status(state, "--json")
    assert r.returncode == 3
    info = json.loads(r.stdout)
    assert info["running"] == "not running" and info["current"] is False
    # the age is measured when the CLI runs, a moment after the file was written
    assert info["status_age_s"] >= 30
    assert info["reason"] == f"stopped {info['status_age_s']:.0f} s ago"
    assert info["readings"] == {"lost": 0, "waiting": 3, "waiting_detections": 3,
                                "backing_off": 0, "dead_letters": 1,
                                "dropped_by_spool_cap": 0, "sent": 271, "delivered": 255,
                                "resent": 16, "rejected": 0}
    assert info["daemon"]["schema"] == 1 and info["daemon"]["camera_id"] == "cam_s"


def test_no_status_file_and_a_broken_one(state: Path) -> None:
    r = status(state)
    assert r.returncode == 3
    assert "no status file: the agent has not run with this state_dir" in r.stdout
    (state / STATUS_FILE).write_text('{"pid": "x"')
    r = status(state)
    assert r.returncode == 3 and "unreadable status file" in r.stdout
    assert "Traceback" not in r.stderr
    (state / STATUS_FILE).write_text('{"hello": 1}')
    r = status(state)
    assert r.returncode == 3 and "is not an agent status file" in r.stdout
