"""SpoolOps: spool calls off the event loop, in order; a lease waits for the
writes submitted before it; acks group-committed."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from lpr_agent.uplink.spoolops import SpoolOps


class SlowSpool:
    """Records each call with its thread; every write takes 30 ms (an fsync)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, int]] = []
        self.lock = threading.Lock()

    def _note(self, name: str, arg: Any) -> None:
        with self.lock:
            self.calls.append((name, arg, threading.get_ident()))

    def _write(self, name: str, ids: Any) -> None:
        time.sleep(0.03)
        self._note(name, list(ids))

    def release(self, ids: Any) -> None:
        self._write("release", ids)

    def nack(self, ids: Any, error: str) -> None:
        self._write("nack", ids)

    def dead_letter(self, ids: Any, reason: str) -> None:
        self._write("dead_letter", ids)

    def ack(self, ids: Any) -> None:
        self._write("ack", ids)

    def lease(self, limit: int = 1, kinds: Any = None, lease_seconds: float = 1) -> list[Any]:
        self._note("lease", limit)
        return []

    def stats(self) -> Any:
        self._note("stats", None)
        return type("S", (), {"items": 42})()

    def add_listener(self, callback: Any) -> None:
        pass


def test_writes_run_off_the_loop_in_order_and_a_lease_waits_for_them():
    spool = SlowSpool()

    async def main() -> int:
        ops = SpoolOps(spool)
        t0 = time.monotonic()
        ops.release([1, 2])
        ops.nack([3], "HTTP 500")
        ops.dead_letter([4], "bad")
        ops.release([5])
        submitted_in = time.monotonic() - t0
        assert submitted_in < 0.01, "a write blocked the event loop"
        await ops.lease(10, None, 30.0)
        await ops.close()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert [(c[0], c[1]) for c in spool.calls] == [
        ("release", [1, 2]), ("nack", [3]), ("dead_letter", [4]), ("release", [5]),
        ("lease", 10)]
    assert all(c[2] != loop_thread for c in spool.calls)


def test_acks_are_group_committed_off_the_loop():
    spool = SlowSpool()

    async def main() -> None:
        ops = SpoolOps(spool)
        for i in range(50):
            ops.ack([i])
            await asyncio.sleep(0)
        await ops.close()

    asyncio.run(main())
    acks = [c[1] for c in spool.calls if c[0] == "ack"]
    assert sorted(i for batch in acks for i in batch) == list(range(50))
    assert len(acks) <= 2, f"{len(acks)} commits for 50 acks"


def test_backlog_is_refreshed_off_the_loop_at_most_once_per_interval():
    spool = SlowSpool()

    async def main() -> int | None:
        ops = SpoolOps(spool)
        for _ in range(20):
            ops.refresh_backlog(10.0)
            await asyncio.sleep(0.001)
        await ops.close()
        return ops.backlog

    assert asyncio.run(main()) == 42
    assert [c[0] for c in spool.calls] == ["stats"]
