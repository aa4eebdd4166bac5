"""Fixtures for uplink tests: a real stub process, a real spool, a running Uplink."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lpr_agent.config import CameraIdentity
from lpr_agent.spool import Kind, Spool, SpoolConfig
from lpr_agent.uplink import Uplink, UplinkConfig, UplinkStats
from tests.helpers.payloads import detection, health
from tests.helpers.stub_process import StubProcess

CAMERA = "camera_uplink"


def new_detection(seq: int, camera_id: str = CAMERA, **extra: Any) -> dict[str, Any]:
    return detection(camera_id, event_id=str(uuid.uuid4()), ocr_results=[f"SEQ{seq:06d}"],
                     **extra)


def new_health(seq: int, camera_id: str = CAMERA) -> dict[str, Any]:
    return health(camera_id, event_id=str(uuid.uuid4()), message=f"seq {seq}")


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    # NORMAL: the tests are about delivery, not about power-loss durability;
    # FULL fsyncs would only slow them down on a shared machine.
    s = Spool.open(SpoolConfig(path=tmp_path / "spool.db", synchronous="NORMAL",
                               backoff_base_s=0.2, backoff_cap_s=2.0))
    yield s
    s.close()


def fast_config(url: str, **overrides: Any) -> UplinkConfig:
    base: dict[str, Any] = dict(
        server_url=url, ack_timeout_s=1.5, connect_timeout_s=2.0, rest_timeout_s=2.0,
        retry_initial_s=0.2, retry_max_s=2.0, sio_probe_max_s=0.5, poll_interval_s=0.2,
    )
    base.update(overrides)
    return UplinkConfig(**base)


class RunningUplink:
    """An Uplink running in its own event loop thread (as in the daemon)."""

    def __init__(self, config: UplinkConfig, spool: Spool, camera_id: str = CAMERA) -> None:
        self.uplink = Uplink(config, CameraIdentity(camera_id=camera_id), spool)
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            await self.uplink.run(self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self.loop.close()

    def start(self) -> RunningUplink:
        self.thread.start()
        deadline = time.monotonic() + 5
        while self.stop_event is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stats(self) -> UplinkStats:
        return self.uplink.stats()

    def stop(self, timeout: float = 10.0) -> float:
        """Stop; returns how long the uplink took to return."""
        t0 = time.monotonic()
        if self.stop_event is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "uplink did not stop"
        if self.error is not None:
            raise self.error
        return time.monotonic() - t0


@pytest.fixture
def run_uplink(spool: Spool) -> Iterator[Callable[..., RunningUplink]]:
    started: list[RunningUplink] = []

    def start(config: UplinkConfig, **kw: Any) -> RunningUplink:
        r = RunningUplink(config, spool, **kw).start()
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.stop()


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubProcess]:
    with StubProcess(tmp_path / "stub.db", "--faults") as s:
        yield s


def wait_until(cond: Callable[[], bool], timeout: float, what: str = "condition",
               interval: float = 0.1) -> float:
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic() - t0
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def spool_empty(spool: Spool) -> bool:
    return spool.stats().items == 0


def put_detections(spool: Spool, n: int, start: int = 0, **extra: Any) -> list[str]:
    items = [new_detection(start + i, **extra) for i in range(n)]
    spool.put_many([(Kind.DETECTION, p) for p in items])
    return [p["event_id"] for p in items]


def assert_exactly_once(records: list[dict[str, Any]], event_ids: list[str]) -> None:
    stored = [r.get("event_id") for r in records]
    missing = set(event_ids) - set(stored)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}"
    counts: dict[str, int] = {}
    for e in stored:
        counts[e] = counts.get(e, 0) + 1
    dups = {e: c for e, c in counts.items() if c > 1 and e in set(event_ids)}
    assert not dups, f"{len(dups)} events stored more than once"
