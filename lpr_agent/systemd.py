"""systemd integration: sd_notify messages and the watchdog gate.

``Notifier`` wraps the ``sdnotify`` package (a no-op outside systemd, when
``NOTIFY_SOCKET`` is unset). ``WatchdogGate`` decides whether ``WATCHDOG=1`` may
be sent: only while every running stage's loop has turned recently. A ping
timer alone would keep a daemon whose worker is stuck "alive" forever — the
OpenALPR failure mode this project exists to avoid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    """Thread-safe sd_notify sender. Every method is a no-op without systemd."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self._lock = threading.Lock()
        self.last_status = ""

    def send(self, *lines: str) -> None:
        if self._notifier is None:
            return
        with self._lock:
            self._notifier.notify("\n".join(lines))

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets newer systemd (Type=notify-reload) match the reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.last_status = text
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more start/stop time from now (slow model load)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


async def extended_start(
    notifier: Notifier, work: Callable[[], None], limit: float, what: str, step: float = 10.0
) -> None:
    """Run slow start-up ``work`` (a model load) in a thread, asking systemd for more
    start time (and pinging the watchdog) while it runs, up to ``limit`` seconds;
    raises TimeoutError beyond that."""
    t0 = time.monotonic()
    task = asyncio.ensure_future(asyncio.to_thread(work))
    while True:
        notifier.extend_timeout(min(step * 3, limit))
        notifier.watchdog()
        done, _ = await asyncio.wait({task}, timeout=step)
        if done:
            task.result()
            log.info("%s loaded", what, extra={"seconds": round(time.monotonic() - t0, 1)})
            return
        if time.monotonic() - t0 > limit:
            raise TimeoutError(f"{what} did not load within {limit:g}s")
        log.info("still loading %s", what, extra={"seconds": round(time.monotonic() - t0)})


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None if not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (we were exec'd by a wrapper)
    try:
        return max(0.05, int(usec) / 1_000_000 / 2)
    except ValueError:
        return None


@dataclass
class _Stage:
    name: str
    heartbeat: Callable[[], float | None]  # time.monotonic() of the last loop turn
    active: Callable[[], bool]  # False once the stage ended on purpose (not stuck)


@dataclass
class WatchdogGate:
    """Healthy while every active stage's heartbeat is younger than ``stall_after_s``."""

    stall_after_s: float
    stages: list[_Stage] = field(default_factory=list)

    def add(
        self,
        name: str,
        heartbeat: Callable[[], float | None],
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.stages = [s for s in self.stages if s.name != name]
        self.stages.append(_Stage(name, heartbeat, active))

    def remove(self, name: str) -> None:
        self.stages = [s for s in self.stages if s.name != name]

    def stuck(self, now: float | None = None) -> list[str]:
        """Names of active stages whose loop has not turned for ``stall_after_s``."""
        now = time.monotonic() if now is None else now
        out = []
        for stage in self.stages:
            try:
                if not stage.active():
                    continue
                beat = stage.heartbeat()
            except Exception as exc:  # a broken accessor must not look healthy
                log.error("watchdog heartbeat unreadable", extra={"stage": stage.name,
                                                                  "error": exc})
                out.append(stage.name)
                continue
            if beat is None or now - beat > self.stall_after_s:
                out.append(stage.name)
        return out
