"""``lpr-agent status``: what the daemon is doing, read from its state directory."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from lpr_agent.cli._common import add_config_argument, config_or_exit

STALE_AFTER_S = 30.0  # status.json is refreshed every few seconds by a running daemon


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the agent's state: link, spool, last health (works while it runs)",
        description="Read the agent's state directory (status.json written by the daemon, and "
        "the spool itself) and print a summary. Exit status 0 if the daemon is running and "
        "not stuck, 3 if it is not running, 1 if it looks stuck or its status is stale.",
    )
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=_status)


def _pid_alive(pid: Any, started_at: Any = None) -> bool:
    """Is the daemon that wrote status.json still this pid? (Not a reused pid.)"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by the service user
    try:
        import psutil

        created = psutil.Process(pid).create_time()
    except Exception:
        return True  # hidden by ProtectProc=invisible for this user: trust kill(0)
    # The daemon records started_at after its process was created; a process
    # created later is another program that got the same pid.
    return not (isinstance(started_at, int | float) and created > started_at + 1.0)


def _spool_stats(config: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not config.spool.path.exists():
        return None, f"no spool at {config.spool.path}"
    try:
        from lpr_agent.spool import Spool

        # recover=False/create=False: never move a file aside or create one under
        # a running daemon; this is a read-only look.
        spool = Spool.open(config.spool, recover=False, create=False)
        try:
            return spool.stats().as_dict(), None
        finally:
            spool.close()
    except Exception as exc:  # report, never crash the status command
        return None, f"cannot read spool: {exc}"


def collect(config: Any) -> dict[str, Any]:
    path = config.state_dir / "status.json"
    out: dict[str, Any] = {"state_dir": str(config.state_dir), "status_file": str(path)}
    try:
        daemon = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        daemon = None
        out["problem"] = "no status file: the agent has not run with this state_dir"
    except (OSError, ValueError) as exc:
        daemon = None
        out["problem"] = f"unreadable status file: {exc}"
    alive = bool(daemon) and _pid_alive(daemon.get("pid"), daemon.get("started_at"))
    age = time.time() - float(daemon.get("updated_at", 0)) if daemon else None
    if daemon is None or not alive or daemon.get("state") == "stopped":
        running = "not running"
    elif daemon.get("stuck"):
        running = "stuck"
    elif age is not None and age > STALE_AFTER_S:
        running = "stale"
    else:
        running = "running"
    out.update(running=running, status_age_s=None if age is None else round(age, 1),
               daemon=daemon)
    spool, problem = _spool_stats(config)
    out["spool"] = spool
    if problem:
        out["spool_problem"] = problem
    return out


def _status(args: argparse.Namespace) -> int:
    config = config_or_exit(args)
    info = collect(config)
    code = {"running": 0, "not running": 3}.get(info["running"], 1)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return code
    daemon = info.get("daemon") or {}
    print(f"lpr-agent: {info['running']}"
          + (f" (pid {daemon.get('pid')}, {daemon.get('state')})" if daemon else ""))
    if info.get("problem"):
        print(f"  {info['problem']}")
    if daemon:
        print(f"  {daemon.get('status_line', '')}")
        print(f"  camera {daemon.get('camera_id')} checkpoint {daemon.get('checkpoint_id')}, "
              f"status written {info['status_age_s']}s ago")
        uplink = daemon.get("uplink") or {}
        if uplink:
            keys = ("channel", "connected", "sent", "acked", "retried", "rejected",
                    "last_error")
            print("  uplink: " + " ".join(f"{k}={uplink.get(k)}" for k in keys if k in uplink))
    spool = info.get("spool")
    if spool is not None:
        print("  spool: " + " ".join(f"{k}={v}" for k, v in spool.items()))
    elif info.get("spool_problem"):
        print(f"  spool: {info['spool_problem']}")
    health = daemon.get("health") or []
    if health:
        at = daemon.get("health_at")
        when = f" ({time.time() - at:.0f}s ago)" if at else ""
        print(f"  last health{when}:")
        for h in health:
            print(f"    {h.get('component'):<9} {h.get('status'):<8} {h.get('message')}")
    sys.stdout.flush()
    return code
