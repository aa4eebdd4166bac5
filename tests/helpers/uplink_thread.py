"""The real ``Uplink`` in its own event loop thread, as in the daemon.

For benchmarks and synchronous tests that put into the spool from the main
thread while the uplink drains it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from lpr_agent.identity import CameraIdentity
from lpr_agent.spool import Spool
from lpr_agent.uplink import Uplink, UplinkConfig


class UplinkThread:
    def __init__(self, config: UplinkConfig, spool: Spool, camera_id: str = "camera_bench",
                 uplink_class: type[Uplink] | None = None) -> None:
        cls = uplink_class or Uplink
        self.uplink = cls(config, CameraIdentity(camera_id=camera_id), spool)
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.stop_event = asyncio.Event()
            await self.uplink.run(self.stop_event)

        self.loop.run_until_complete(main())
        self.loop.close()

    def start(self) -> UplinkThread:
        self.thread.start()
        while self.stop_event is None:
            time.sleep(0.001)
        return self

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(15)


def wait_for(cond: Any, timeout: float, step: float = 0.002) -> float:
    """Poll ``cond`` until true; returns ``time.perf_counter()`` at that moment."""
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(step)
    return time.perf_counter()
