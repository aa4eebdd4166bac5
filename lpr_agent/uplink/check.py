"""Connectivity check against an LPR server (``lpr-agent check``).

Read-only towards the server's data unless asked: by default it connects over
Socket.IO *without* ``camera_register`` (a registration shows up as a camera
on a live server's dashboard) and pings; ``register=True`` also registers the
camera, which tells the ack style. It never registers over REST (protocol.md
quirk 8).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lpr_agent.identity import CameraIdentity
from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.rest import RestLink
from lpr_agent.uplink.sio import SioConnectError, SioLink


@dataclass
class CheckStep:
    name: str
    ok: bool
    detail: str
    ms: float | None = None


@dataclass
class CheckReport:
    server_url: str
    steps: list[CheckStep] = field(default_factory=list)
    ack_style: str = "unknown"
    auth: str = "not required"  # "accepted" / "refused" / "not required" / "unknown"
    socketio_ok: bool = False
    rest_ok: bool = False

    @property
    def verdict(self) -> str:
        if self.auth == "refused":
            return "FAIL: the server refused our credentials (check [uplink] token)"
        if self.socketio_ok and self.rest_ok:
            return "OK: Socket.IO and REST both work"
        if self.rest_ok:
            return "DEGRADED: REST works, Socket.IO does not (the agent will deliver over REST)"
        if self.socketio_ok:
            return "DEGRADED: Socket.IO works, REST does not (no fallback)"
        return "FAIL: the server is not reachable"

    @property
    def exit_code(self) -> int:
        if self.auth == "refused" or not (self.socketio_ok or self.rest_ok):
            return 2
        return 0 if self.socketio_ok and self.rest_ok else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "server_url": self.server_url,
            "verdict": self.verdict,
            "socketio_ok": self.socketio_ok,
            "rest_ok": self.rest_ok,
            "ack_style": self.ack_style,
            "auth": self.auth,
            "steps": [s.__dict__ for s in self.steps],
        }


class _UnregisteredLink(SioLink):
    """A Socket.IO connection that skips ``camera_register`` (no camera appears)."""

    async def _register(self) -> None:
        return None


async def check_server(
    config: UplinkConfig, identity: CameraIdentity, *, register: bool = False
) -> CheckReport:
    report = CheckReport(server_url=config.server_url)
    rest_auth: bool | None = None
    sio_auth: bool | None = None

    # REST: GET /api/test
    rest = RestLink(config)
    t0 = time.perf_counter()
    try:
        status, body = await rest.get_json("/api/test")
        ms = (time.perf_counter() - t0) * 1000
        ok = status == 200 and isinstance(body, dict) and body.get("success") is True
        if status in (401, 403):
            rest_auth = False
        elif ok:
            rest_auth = True
        msg = body.get("message") if isinstance(body, dict) else str(body)[:80]
        report.steps.append(CheckStep("REST GET /api/test", ok, f"HTTP {status}: {msg}", ms))
        report.rest_ok = ok
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        report.steps.append(CheckStep("REST GET /api/test", False, _err(exc)))
    finally:
        await rest.close()

    # Socket.IO: connect (+ camera_register when asked: ack style) + ping/pong
    registration = {"camera_id": identity.camera_id, "checkpoint_id": identity.checkpoint_id}
    link = SioLink(config, registration) if register else _UnregisteredLink(config, registration)
    step = "Socket.IO connect + camera_register" if register else "Socket.IO connect"
    t0 = time.perf_counter()
    try:
        await link.connect()
        ms = (time.perf_counter() - t0) * 1000
        sio_auth = True
        if register:
            report.ack_style = link.ack_style
            style = ("acks carry the outcome (pipelined)" if link.ack_style == "outcome"
                     else "empty acks, outcome in events (deployed server; one at a time)")
            detail = f"registered {identity.camera_id}; {style}"
        else:
            detail = "connected; not registered (--register also tests camera_register)"
        report.steps.append(CheckStep(step, True, detail, ms))
        if link.server_hello is not None:
            report.steps.append(CheckStep("Socket.IO legacy 'connect' event", True,
                                          "tolerated (deployed-server quirk 5)"))
        t0 = time.perf_counter()
        try:
            pong = await link.ping(config.ack_timeout_s)
            ms = (time.perf_counter() - t0) * 1000
            ok = isinstance(pong, dict) and pong.get("success") is True
            detail = pong.get("message", pong) if isinstance(pong, dict) else pong
            report.steps.append(CheckStep("Socket.IO ping/pong", ok, f"{detail!r:.80}", ms))
            report.socketio_ok = ok
        except (TimeoutError, Exception) as exc:
            report.steps.append(CheckStep("Socket.IO ping/pong", False, _err(exc)))
    except SioConnectError as exc:
        if exc.auth:
            sio_auth = False
        report.steps.append(CheckStep(step, False, str(exc)))
    finally:
        await link.close()

    if rest_auth is False or sio_auth is False:
        report.auth = "refused"
    elif config.token:
        report.auth = "accepted" if (rest_auth or sio_auth) else "unknown"
    else:
        report.auth = "not required" if (rest_auth or sio_auth) else "unknown"
    return report


def _err(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:200]
