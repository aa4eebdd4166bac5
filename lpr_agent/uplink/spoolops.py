"""The uplink's spool calls, off the event loop and in order.

A spool write is a durable SQLite commit (an fsync with ``synchronous=FULL``,
milliseconds on an SD card) and takes the spool's lock, which the detector
thread's puts hold too: on the event loop it would stall every ack and send
meanwhile. So:

* **acks** gather for ``_ACK_GATHER_S`` and commit together in a worker thread
  (group commit). Acked items stay leased until then, so they are never sent
  twice; an ack commit needs no ordering with the other calls (it touches
  only items no one else holds).
* **release / nack / dead_letter** run in a worker thread one after another
  in submission order, and every **lease** waits for those submitted before
  it: a released item must be ready again before the next lease, or that
  lease would skip it and send younger items first.
* ``spool.stats()`` (for the uplink's stats) is refreshed in a worker thread
  at most once per ``refresh_s``; ``backlog`` is the last value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

log = logging.getLogger(__name__)

_ACK_GATHER_S = 0.02  # acks gather this long before one spool commit


class SpoolLike(Protocol):
    """The part of ``lpr_agent.spool.Spool`` the uplink uses."""

    def lease(
        self, limit: int = ..., kinds: Any = ..., lease_seconds: float = ...
    ) -> list[Any]: ...
    def ack(self, ids: Any) -> None: ...
    def nack(self, ids: Any, error: str) -> None: ...
    def dead_letter(self, ids: Any, reason: str) -> None: ...
    def release(self, ids: Any) -> None: ...
    def add_listener(self, callback: Any) -> None: ...


class SpoolOps:
    """Ordered, off-loop spool calls for one uplink run (one event loop)."""

    def __init__(self, spool: SpoolLike) -> None:
        self.spool = spool
        self.backlog: int | None = None
        self._ack_pending: list[int] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._tail: asyncio.Task[None] | None = None  # the last ordered write
        self._stats_task: asyncio.Task[None] | None = None
        self._stats_at = 0.0

    # --- acks (group commit) ---------------------------------------------------------

    def ack(self, ids: list[int]) -> None:
        self._ack_pending.extend(ids)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        while self._ack_pending:
            # Let acks gather for a few ms: every hand-off to the worker
            # thread costs a GIL round trip that slows the sending side.
            await asyncio.sleep(_ACK_GATHER_S)
            ids, self._ack_pending = self._ack_pending, []
            if not ids:
                break  # a lease took them along
            try:
                await asyncio.to_thread(self.spool.ack, ids)
            except Exception:
                # The items stay leased and come back when the lease expires:
                # at worst a duplicate the server deduplicates.
                log.exception("uplink: spool.ack of %d item(s) failed", len(ids))

    # --- ordered writes and leases ----------------------------------------------------

    def release(self, ids: Collection[int]) -> None:
        if ids:
            self._submit("release", self.spool.release, list(ids))

    def nack(self, ids: Collection[int], error: str) -> None:
        if ids:
            self._submit("nack", self.spool.nack, list(ids), error)

    def dead_letter(self, ids: Collection[int], reason: str) -> None:
        if ids:
            self._submit("dead_letter", self.spool.dead_letter, list(ids), reason)

    def _submit(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        self._tail = asyncio.get_running_loop().create_task(
            self._run_after(self._tail, what, fn, args))

    @staticmethod
    async def _run_after(prev: asyncio.Task[None] | None, what: str, fn: Callable[..., None],
                         args: tuple[Any, ...]) -> None:
        # (prev is a frame local, released when this finishes: finished tasks
        # do not chain up for the life of the uplink.)
        if prev is not None:
            await _quietly(prev)
            prev = None
        try:
            await asyncio.to_thread(fn, *args)
        except Exception:
            # A failed release or nack leaves the items leased: they come
            # back when the lease expires, so nothing is lost.
            log.exception("uplink: spool.%s failed", what)

    async def written(self) -> None:
        """Wait until every write submitted so far has landed."""
        tail = self._tail
        if tail is not None:
            await _quietly(tail)
            if self._tail is tail:
                self._tail = None

    async def lease(self, limit: int, kinds: Any, lease_seconds: float) -> list[Any]:
        """``spool.lease`` in a worker thread, after the writes submitted before it.

        Acks waiting for their group commit ride along in the same hop: every
        hand-off to a worker thread stalls the event loop for a GIL round
        trip (measured: about a tenth of the loop's time in a REST drain)."""
        await self.written()
        acks, self._ack_pending = self._ack_pending, []
        return await asyncio.to_thread(self._ack_and_lease, acks, limit, kinds, lease_seconds)

    def _ack_and_lease(self, acks: list[int], limit: int, kinds: Any,
                       lease_seconds: float) -> list[Any]:
        if acks:
            try:
                self.spool.ack(acks)
            except Exception:
                log.exception("uplink: spool.ack of %d item(s) failed", len(acks))
        return self.spool.lease(limit=limit, kinds=kinds, lease_seconds=lease_seconds)

    # --- stats -------------------------------------------------------------------------

    def refresh_backlog(self, every_s: float) -> None:
        now = time.monotonic()
        if now - self._stats_at < every_s:
            return
        if self._stats_task is not None and not self._stats_task.done():
            return
        stats = getattr(self.spool, "stats", None)
        if stats is None:
            return
        self._stats_at = now

        async def run() -> None:
            # Stats must never raise into the uplink, even on a closed spool.
            with contextlib.suppress(Exception):
                self.backlog = (await asyncio.to_thread(stats)).items

        self._stats_task = asyncio.get_running_loop().create_task(run())

    # --- shutdown -----------------------------------------------------------------------

    async def close(self) -> None:
        await self.written()
        if self._ack_task is not None:
            await _quietly(self._ack_task)
        if self._stats_task is not None:
            await _quietly(self._stats_task)


async def _quietly(task: asyncio.Task[None]) -> None:
    # Waits without raising the task's own error (each task logs its own),
    # while a cancellation of the waiter still propagates.
    await asyncio.wait((task,))
