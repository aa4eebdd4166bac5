"""``lpr-agent status``: is the daemon running, and where are the readings?

Thin: ``lpr_agent.status.inspect`` reads and judges the state directory; this
module only prints. Every value from status.json carries its age unless the
daemon is running (then it is at most a few seconds old); the spool figures
are read from the spool file itself and are always current.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from lpr_agent.cli._common import add_config_argument, config_or_exit, examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="is the agent running? link, spool, where the readings are, last health",
        description="Read the agent's state directory (status.json written by the daemon, and "
        "the spool itself) and print a summary. Exit status 0 if the daemon is running, 3 if "
        "it is not, 1 if it looks stuck or has stopped updating its status.",
        **examples("lpr-agent status",
                   "lpr-agent status --json | jq .readings",
                   "lpr-agent status -c /etc/lpr-agent/agent.toml"),
    )
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lpr_agent.status import inspect

    view = inspect(config_or_exit(args))
    if args.json:
        print(json.dumps(view.as_dict(), indent=2, default=str))
    else:
        for line in render(view):
            print(line)
    return view.exit_code


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.0f} s ago"


def size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def render(view: Any) -> list[str]:
    """The human summary of a ``StatusView``: a list of lines."""
    d = view.daemon
    head = {"running": "running", "starting": "starting", "stuck": "STUCK",
            "stale": "NOT RESPONDING", "not running": "NOT RUNNING"}[view.running]
    out = [f"lpr-agent: {head} — {view.reason}"]
    if view.problem:
        out.append(f"  {view.problem}")
    # Values from status.json: "now" only while the daemon is running.
    as_of = "" if view.current else f" (as of {ago(view.status_age_s)}, when it last ran)"
    if d is not None:
        out.append(f"  camera {d.camera_id or '-'}  checkpoint {d.checkpoint_id or '-'}  "
                   f"version {d.version}  state dir {view.state_dir}")
        if d.metrics_url and view.current:
            out.append(f"  metrics {d.metrics_url}")
    out += _readings(view)
    if d is not None and d.uplink:
        out += _link(d.uplink, as_of, view.current)
    if d is not None and d.pipeline:
        p = d.pipeline
        out.append(f"camera{as_of}: {p.get('source_state')}  {p.get('fps', 0):g} fps "
                   f"processed, {p.get('frames', 0)} frames, {p.get('frames_dropped', 0)} "
                   "dropped (newer frame arrived first)")
    if view.spool is not None:
        s = view.spool
        parts = [f"{size(s.get('bytes'))} waiting", f"file {size(s.get('file_bytes'))}"]
        if s.get("oldest_age_s") is not None:
            parts.append(f"oldest reading waiting {ago(s['oldest_age_s']).removesuffix(' ago')}")
        if s.get("free_disk_bytes") is not None:
            parts.append(f"{size(s['free_disk_bytes'])} free on disk")
        out.append("spool file (now): " + ", ".join(parts))
    elif view.spool_problem:
        out.append(f"spool: {view.spool_problem}")
    if d is not None and d.health:
        out.append(f"last health report ({ago(view.health_age_s)}):")
        for h in d.health:
            out.append(f"  {h.get('component', '?'):<9} {h.get('status', '?'):<8} "
                       f"{h.get('message', '')}")
    return out


def _readings(view: Any) -> list[str]:
    r = view.readings
    if set(r) <= {"lost"}:
        return []  # neither a spool nor a daemon's counters: nothing to account for
    out = ["readings:"]
    if "waiting" in r:
        out.append(f"  in the spool now      {r['waiting']} waiting "
                   f"({r.get('waiting_detections', 0)} detections), "
                   f"{r.get('backing_off', 0)} backing off after a server error"
                   + (f", {r['in_flight']} in flight" if r.get("in_flight") else ""))
        out.append(f"  dead letters          {r.get('dead_letters', 0)} (rejected by the "
                   "server; kept: lpr-agent spool list --dead)")
    if "delivered" in r:
        since = "since the agent started" if view.current else "during its last run"
        out.append(f"  delivered             {r['delivered']} {since}")
        out.append(f"  resent                {r.get('resent', 0)} (after a link failure or "
                   "server error: sent again, not lost)")
    out.append("  lost                  0 (a reading leaves the spool only when the server "
               "acknowledges it or rejects it)")
    if r.get("dropped_by_spool_cap"):
        out.append(f"  dropped by spool cap  {r['dropped_by_spool_cap']} (the spool was full; "
                   "see [spool] max_items / max_bytes)")
    return out


def _link(u: dict[str, Any], as_of: str, current: bool) -> list[str]:
    verb = "is" if current else "was"
    state = "connected" if u.get("connected") else (
        "REST (no connection to keep)" if u.get("channel") == "rest" else "down")
    out = [f"link{as_of}: {verb} {u.get('channel')} {state}, ack style {u.get('ack_style')}"]
    now = time.time()
    last_ack = u.get("last_ack_at")
    out.append(f"  last ack {ago(None if last_ack is None else now - last_ack)}")
    err, err_at = u.get("last_error"), u.get("last_error_at")
    if err:
        old = err_at is not None and last_ack is not None and last_ack > err_at
        out.append(f"  last error {ago(None if err_at is None else now - err_at)}: {err}"
                   + ("  (recovered since)" if old else ""))
    return out
