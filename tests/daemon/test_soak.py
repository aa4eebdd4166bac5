"""End-to-end soak: agent + stub + synthetic camera while the server misbehaves.

On a fixed schedule the stub is restarted, frozen (SIGSTOP) and made to answer
500. At the end the camera is switched off with a SIGHUP reload, the agent
drains, and every reading the agent spooled (ground truth: its DEBUG line
``spooled detection event_id=...``, written once ``spool.put`` returned) must
be at the stub exactly once and in the order it was spooled (exactly: see
``tests/uplink/order.py``); the agent's RSS
may not have grown more than 5 % from after warm-up to the end.

CI size: 60 s; ``LPR_SOAK_SCALE=10`` makes it 10 minutes.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import time
from pathlib import Path

import psutil
import pytest

from tests.daemon.agent_process import AgentProcess
from tests.daemon.test_agent import config_text
from tests.helpers.stub_process import StubProcess
from tests.uplink.order import (
    assert_arrival_stop_and_wait,
    assert_listing_in_creation_order,
    retried_event_ids,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SCALE = float(os.environ.get("LPR_SOAK_SCALE", "1"))
FAILS_PER_FAULT = 8  # HTTP 500s injected in a row per "500" fault
DURATION = 60.0 * SCALE
SPOOLED = re.compile(r"spooled detection event_id=([0-9a-f-]{36})")
SOURCE = "synthetic:?fps=4&cars=3&speed=1.5&width=640&height=360&seed=77"


def test_soak_with_server_restarts_freezes_and_500s(tmp_path: Path) -> None:
    with StubProcess(tmp_path / "stub.db", "--faults") as stub:
        cfg = config_text(
            tmp_path, stub.url, source=SOURCE,
            extra="[logging]\nlevel = \"DEBUG\"\n[detector]\ntrack_timeout_s = 0.5\n",
        )
        with AgentProcess(tmp_path, cfg, watchdog_usec=None) as agent:
            agent.wait_message("READY=1", 60)
            proc = psutil.Process(agent.proc.pid)
            rss: list[tuple[float, int]] = []
            faults_done: list[str] = []
            t0 = time.monotonic()
            schedule = ["restart", "freeze", "500", "kill-restart"]
            next_fault = t0 + 5
            step = 0
            while (now := time.monotonic()) - t0 < DURATION:
                rss.append((now - t0, proc.memory_info().rss))
                assert agent.proc.poll() is None, agent.log()[-3000:]
                if now >= next_fault:
                    kind = schedule[step % len(schedule)]
                    step += 1
                    if kind == "restart":
                        stub.restart()
                    elif kind == "kill-restart":
                        stub.restart(kill=True)
                    elif kind == "freeze":
                        stub.freeze()
                        time.sleep(min(6.0, DURATION / 10))
                        stub.thaw()
                    else:
                        stub.faults(fail_next=FAILS_PER_FAULT, fail_status=500)
                    faults_done.append(kind)
                    next_fault = time.monotonic() + 7
                time.sleep(1.0)
            stub.reset_faults()

            # Camera off (reload), then let the agent drain to the stub.
            agent.config_path.write_text(cfg.replace(SOURCE, str(tmp_path / "off.avi")))
            t_hup = time.monotonic()
            agent.signal(signal.SIGHUP)
            agent.wait_message("READY=1", 60, since=t_hup)
            log_path = agent.log_path

            def undelivered() -> set[str]:
                spooled = set(SPOOLED.findall(log_path.read_text(errors="replace")))
                return spooled - {r.get("event_id") for r in stub.records()}

            agent.wait_for(lambda: not undelivered(), 300, "all spooled readings at the stub")
            agent.signal(signal.SIGTERM)
            assert agent.wait_exit(30) == 0

        spooled = SPOOLED.findall(log_path.read_text(errors="replace"))
        stored = [r.get("event_id") for r in stub.records() if r.get("camera_id") == "cam_t"]
        listed = stub.records(camera_id="cam_t")
        assert set(faults_done) >= {"restart", "freeze", "500"}, faults_done
        assert len(spooled) >= DURATION / 10, f"only {len(spooled)} readings in {DURATION}s"
        # exactly once
        assert len(stored) == len(set(stored)), "a reading was stored twice"
        assert set(stored) == set(spooled), (
            f"lost: {len(set(spooled) - set(stored))}, unknown: {len(set(stored) - set(spooled))}"
        )
        # Exact order, no tolerance. Arrival: stop-and-wait after every
        # failure, so a reading that never got a 5xx is overtaken by nothing
        # (only readings already in flight when a 5xx came back can pass the
        # failed one). The camera's listing by seq: creation order itself.
        log_lines = log_path.read_text(errors="replace").splitlines()
        assert_arrival_stop_and_wait(stored, spooled, retried_event_ids(log_lines))
        assert_listing_in_creation_order(listed, spooled)

        # memory: after warm-up (first third) to the end, at most 5 % growth
        warm = [r for t, r in rss if DURATION / 3 <= t < DURATION / 3 + max(5, DURATION / 10)]
        end = [r for t, r in rss if t >= DURATION - max(5, DURATION / 10)]
        base, last = statistics.median(warm), statistics.median(end)
        series = " ".join(f"{t:.0f}s:{r / 2**20:.0f}" for t, r in rss[::5])
        assert last <= base * 1.05, (
            f"RSS grew {100 * (last / base - 1):.1f} % ({base} -> {last}); MiB over time: "
            f"{series}; faults {faults_done}")

