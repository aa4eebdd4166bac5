"""``lpr-agent demo``: the server stub and an agent on the synthetic camera.

Both run as child processes exactly as they would in production (the stub as
``python -m server_stub``, the agent as ``lpr-agent run``), so the demo shows
the real product rather than an in-process imitation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lpr_agent.cli._common import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the server stub and an agent on the built-in synthetic camera",
        description="Start the LPR server stub with its live dashboard and an agent reading "
        "the synthetic camera; print a live summary until Ctrl-C (or --duration).",
        **examples("lpr-agent demo", "lpr-agent demo --port 8800 --duration 60",
                   "lpr-agent demo --source rtsp://10.0.0.7:554/stream1"),
    )
    parser.add_argument("--host", default="127.0.0.1", help="stub address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="stub port (default 8765)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the stub database and agent spool live (default: a temporary folder)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop by itself after this many seconds"
    )
    parser.add_argument(
        "--source",
        default="synthetic:",
        help="frame source for the agent (default: the synthetic camera)",
    )
    parser.set_defaults(func=run)


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _get_json(url) is not None:
            return True
        time.sleep(0.2)
    return False


def _write_config(state: Path, server_url: str, source: str) -> Path:
    config = state / "agent.toml"
    config.write_text(
        "# Written by `lpr-agent demo`.\n"
        "[camera]\ncamera_id = \"demo_camera\"\ncheckpoint_id = \"demo_checkpoint\"\n\n"
        f"[source]\nurl = {json.dumps(source)}\n\n"
        f"[spool]\npath = {json.dumps(str(state / 'spool.db'))}\n\n"
        f"[uplink]\nserver_url = {json.dumps(server_url)}\n",
        encoding="utf-8",
    )
    return config


def _stop(proc: subprocess.Popen[bytes], name: str, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop within {timeout:.0f}s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def run(args: argparse.Namespace) -> int:
    owned_tmp = None
    if args.state_dir is None:
        owned_tmp = tempfile.TemporaryDirectory(prefix="lpr-demo-")
        state = Path(owned_tmp.name)
    else:
        state = args.state_dir
        state.mkdir(parents=True, exist_ok=True)
    base = f"http://{args.host}:{args.port}"
    if _get_json(f"{base}/api/test") is not None:
        print(f"Something already answers on {base}; stop it or pass --port.", file=sys.stderr)
        return 1

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stub = subprocess.Popen(
        [sys.executable, "-m", "server_stub", "--host", args.host, "--port", str(args.port),
         "--db", str(state / "stub.db")],
        env=env,
        stdout=open(state / "stub.log", "ab"),  # noqa: SIM115 - lives as long as the child
        stderr=subprocess.STDOUT,
    )
    agent: subprocess.Popen[bytes] | None = None
    # SIGTERM (e.g. from a test or a service manager) stops the demo like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not _wait_for(f"{base}/api/test", stub, 30):
            print(f"The server stub did not start; see {state / 'stub.log'}", file=sys.stderr)
            return 1
        config = _write_config(state, base, args.source)
        agent = subprocess.Popen(
            [sys.executable, "-m", "lpr_agent", "run", "--config", str(config)],
            env=env,
            stdout=open(state / "agent.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        print(f"Dashboard:  {base}/")
        print(f"Agent log:  {state / 'agent.log'}   stub log: {state / 'stub.log'}")
        print("Press Ctrl-C to stop.\n")
        return _summarise(base, agent, args.duration)
    except KeyboardInterrupt:
        print("\nStopping…")
        return 0
    finally:
        if agent is not None:
            _stop(agent, "agent")
        _stop(stub, "server stub")
        if owned_tmp is not None:
            owned_tmp.cleanup()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _summarise(base: str, agent: subprocess.Popen[bytes], duration: float | None) -> int:
    started = time.monotonic()
    seen: set[str] = set()
    while duration is None or time.monotonic() - started < duration:
        if agent.poll() is not None:
            print(f"The agent exited with status {agent.returncode}.", file=sys.stderr)
            return 1
        stats = (_get_json(f"{base}/api/statistics") or {}).get("data", {})
        records = (_get_json(f"{base}/api/records?limit=5") or {}).get("records", [])
        for record in records:
            for plate in record.get("ocr_results", []):
                key = f"{record.get('detection_id')}:{plate}"
                if key not in seen:
                    seen.add(key)
                    print(f"  plate {plate:<10} camera {record.get('camera_id')}")
        print(
            f"[{time.monotonic() - started:6.0f}s] detections stored: "
            f"{stats.get('total_detections', '?')}  health checks: "
            f"{stats.get('total_health_checks', '?')}  cameras online: "
            f"{stats.get('active_cameras', '?')}",
            flush=True,
        )
        time.sleep(2)
    return 0
