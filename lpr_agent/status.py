"""``status.json``: what the running daemon tells ``lpr-agent status`` and monitoring.

The daemon rewrites the file atomically every ``[daemon] status_interval_s``
in its state directory (``write_status``); readers (``read_status``,
``inspect``) never see a half-written file. Everything in it is a snapshot as
of ``updated_at``: once the daemon has stopped, or died, the file stays
behind with its last values, so ``inspect`` decides first whether the daemon
is alive and the age of every value, and never presents old values as
current. Unknown keys are ignored, so an older ``lpr-agent status`` can read a
newer daemon's file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATUS_FILE = "status.json"
SCHEMA = 1
# A daemon refreshes the file every status_interval_s; after this many missed
# refreshes (and at least STALE_MIN_S) its values are no longer current.
STALE_INTERVALS = 5
STALE_MIN_S = 10.0

DaemonState = Literal["starting", "running", "stopping", "stopped"]
Running = Literal["running", "starting", "stuck", "stale", "not running"]


class DaemonStatus(BaseModel):
    """The content of status.json (schema 1). Stage sections are their ``stats()`` dicts."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = Field(default=SCHEMA, alias="schema")
    version: str
    pid: int
    state: DaemonState
    started_at: float  # wall clock (time.time())
    updated_at: float
    status_interval_s: float = 2.0
    config: str | None = None
    camera_id: str = ""
    checkpoint_id: str = ""
    status_line: str = ""
    stuck: list[str] = Field(default_factory=list)  # stages withholding the watchdog
    metrics_url: str | None = None  # where Prometheus scrapes the agent, if enabled
    pipeline: dict[str, Any] = Field(default_factory=dict)  # PipelineStats
    pipeline_ended: bool = False  # a finite source (file) reached its end
    spool: dict[str, Any] = Field(default_factory=dict)  # SpoolStats
    uplink: dict[str, Any] = Field(default_factory=dict)  # UplinkStats
    health: list[dict[str, Any]] = Field(default_factory=list)  # last HealthStatus round
    health_at: float | None = None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class StatusFileError(Exception):
    """status.json exists but cannot be read or is not a daemon status."""


def status_line(state: str, pipeline: Any, spool: Any, uplink: Any, stuck: list[str],
                now: float | None = None) -> str:
    """The one-line summary (systemd ``STATUS=``) from the stages' stats (or None)."""
    now = time.time() if now is None else now
    parts = [state, f"fps={pipeline.fps:.1f}" if pipeline is not None else "fps=-",
             f"spool={spool.items}" if spool is not None else "spool=-"]
    if uplink is None:
        parts.append("link=-")
    else:
        parts.append(f"link={uplink.channel}" + ("" if uplink.connected else "(down)"))
    last_ack = uplink.last_ack_at if uplink is not None else None
    parts.append(f"last_ack={now - last_ack:.0f}s ago" if last_ack else "last_ack=never")
    if stuck:
        parts.append(f"STUCK={','.join(stuck)}")
    return " ".join(parts)


def write_status(path: Path, status: DaemonStatus) -> None:
    """Atomic: write a temporary file beside it, then rename over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status.dump(), indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> DaemonStatus | None:
    """The daemon's last status, None if there is no file. Raises StatusFileError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StatusFileError(f"unreadable status file {path}: {exc}") from None
    try:
        return DaemonStatus.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StatusFileError(f"{path} is not an agent status file ({where}: "
                              f"{first['msg']})") from None


def pid_alive(pid: int, started_at: float | None = None) -> bool:
    """Is the daemon that wrote status.json still this pid? (Not a reused pid.)"""
    if pid <= 0:
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
    return not (started_at is not None and created > started_at + 1.0)


@dataclass
class StatusView:
    """A judged status: is the daemon running, and how old is what it last said."""

    running: Running
    reason: str  # one sentence: why running/not running
    state_dir: str
    status_file: str
    status_age_s: float | None = None  # age of status.json's values
    health_age_s: float | None = None
    daemon: DaemonStatus | None = None
    problem: str | None = None  # the status file is missing or unreadable
    spool: dict[str, Any] | None = None  # read from the spool file now: always current
    spool_problem: str | None = None
    readings: dict[str, Any] = field(default_factory=dict)  # where the readings are

    @property
    def current(self) -> bool:
        """Are the daemon's values current (not the last words of a stopped daemon)?"""
        return self.running in ("running", "starting", "stuck")

    @property
    def exit_code(self) -> int:
        """0 running, 3 not running (LSB status convention), 1 stuck or stale."""
        return {"running": 0, "starting": 0, "not running": 3}.get(self.running, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "running": self.running, "reason": self.reason, "current": self.current,
            "state_dir": self.state_dir, "status_file": self.status_file,
            "status_age_s": self.status_age_s, "health_age_s": self.health_age_s,
            "problem": self.problem, "spool": self.spool, "spool_problem": self.spool_problem,
            "readings": self.readings,
            "daemon": self.daemon.dump() if self.daemon is not None else None,
        }


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def judge(daemon: DaemonStatus, now: float, alive: bool) -> tuple[Running, str]:
    """(running, reason) from the daemon's last status and whether its pid lives."""
    age = round(max(0.0, now - daemon.updated_at), 1)  # as StatusView.status_age_s
    stale_after = max(STALE_MIN_S, STALE_INTERVALS * daemon.status_interval_s)
    if daemon.state == "stopped":
        return "not running", f"stopped {_ago(age)} ago"
    if not alive:
        return "not running", (f"pid {daemon.pid} is gone (it died or was killed "
                               f"{_ago(age)} ago or earlier, without stopping cleanly)")
    if age > stale_after:
        return "stale", (f"pid {daemon.pid} is alive but has not updated its status for "
                         f"{_ago(age)} (expected every {daemon.status_interval_s:g} s)")
    if daemon.stuck:
        return "stuck", f"stage(s) not turning: {', '.join(daemon.stuck)}"
    if daemon.state in ("starting", "stopping"):
        return "starting" if daemon.state == "starting" else "running", daemon.state
    return "running", f"pid {daemon.pid}, up {_ago(max(0.0, now - daemon.started_at))}"


def readings(spool: dict[str, Any] | None, uplink: dict[str, Any] | None) -> dict[str, Any]:
    """Where the readings are. The spool's numbers are current; the uplink's are the
    daemon's counters since it started. Nothing is ever lost by the uplink: a
    reading leaves the spool only when the server acknowledged it (delivered) or
    rejected it for good (dead letter); a resend is a retry, not a loss."""
    out: dict[str, Any] = {"lost": 0}
    if spool:
        depth = spool.get("depth") or {}
        out.update(waiting=spool.get("items"), waiting_detections=depth.get("detection"),
                   backing_off=spool.get("backing_off"), dead_letters=spool.get("dead_letters"),
                   dropped_by_spool_cap=(spool.get("drops") or {}).get("detections_dropped", 0))
    if uplink:
        out.update(in_flight=uplink.get("in_flight"), sent=uplink.get("sent"),
                   delivered=uplink.get("acked"), resent=uplink.get("retried"),
                   rejected=uplink.get("rejected"))
    return {k: v for k, v in out.items() if v is not None}


def _spool_now(config: Any) -> tuple[dict[str, Any] | None, str | None]:
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


def inspect(config: Any, now: float | None = None) -> StatusView:
    """Read the state directory of ``config`` (an AgentConfig) and judge it."""
    now = time.time() if now is None else now
    path = config.state_dir / STATUS_FILE
    view = StatusView(running="not running", reason="", state_dir=str(config.state_dir),
                      status_file=str(path))
    try:
        daemon = read_status(path)
    except StatusFileError as exc:
        daemon, view.problem = None, str(exc)
    if daemon is None:
        view.problem = view.problem or "no status file: the agent has not run with this state_dir"
        view.reason = "no status from a daemon"
    else:
        alive = pid_alive(daemon.pid, daemon.started_at)
        view.running, view.reason = judge(daemon, now, alive)
        view.daemon = daemon
        view.status_age_s = round(max(0.0, now - daemon.updated_at), 1)
        if daemon.health_at is not None:
            view.health_age_s = round(max(0.0, now - daemon.health_at), 1)
    view.spool, view.spool_problem = _spool_now(config)
    view.readings = readings(view.spool or (daemon.spool if daemon else None),
                             daemon.uplink if daemon else None)
    if not view.current:
        view.readings.pop("in_flight", None)  # a stopped daemon has nothing in flight
    return view
