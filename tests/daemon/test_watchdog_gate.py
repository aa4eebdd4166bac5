"""WatchdogGate and WATCHDOG_USEC parsing: the rules behind "never lie about being alive"."""

from __future__ import annotations

import os
import time

import pytest

from lpr_agent.systemd import WatchdogGate, watchdog_interval


def test_gate_names_stale_stages_only_while_active() -> None:
    now = time.monotonic()
    gate = WatchdogGate(stall_after_s=5)
    ended = {"done": False}
    gate.add("pipeline", lambda: now - 1)
    gate.add("uplink", lambda: now - 10)
    gate.add("finished", lambda: now - 100, active=lambda: not ended["done"])
    assert gate.stuck(now) == ["uplink", "finished"]
    ended["done"] = True  # a source that ended on purpose is not stuck
    assert gate.stuck(now) == ["uplink"]
    gate.add("uplink", lambda: now)  # re-registering replaces (reload restarts a stage)
    assert gate.stuck(now) == []
    gate.remove("pipeline")
    assert sorted(s.name for s in gate.stages) == ["finished", "uplink"]


def test_gate_counts_unreadable_or_missing_heartbeat_as_stuck() -> None:
    def broken() -> float:
        raise RuntimeError("stats lock poisoned")

    gate = WatchdogGate(stall_after_s=5)
    gate.add("a", broken)
    gate.add("b", lambda: None)
    assert gate.stuck() == ["a", "b"]


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "1", None),  # meant for another process
        ("junk", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected
