"""The lease-ahead buffer: spool items leased and not sent yet, in sending order.

A lease is a write transaction that reads whole payloads, so it runs in a
worker thread (``SpoolOps.lease``) a batch ahead while the pipe keeps moving.
Invariant: the buffer holds health first, then everything else in creation
order, and nothing older than it is ready in the spool — whenever an older
item goes back to the spool (a release), the buffer goes back too and a
lease still running is handed back when it lands (``generation``), so the
next lease returns everything in creation order again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from lpr_agent.protocol import Kind
from lpr_agent.uplink.config import UplinkConfig
from lpr_agent.uplink.spoolops import SpoolOps
from lpr_agent.uplink.stats import RateLimitedLog

log = logging.getLogger(__name__)
_rlog = RateLimitedLog(log)

_AHEAD_BYTES = 8 << 20  # bound of the lease-ahead buffer (60 KB images: ~140 items)


class Feed:
    def __init__(self, ops: SpoolOps, lease_seconds: float, batch: int, poll_interval_s: float,
                 wake: Callable[[], None], note_error: Callable[[str], None],
                 on_batch: Callable[[list[Any], bool], None]) -> None:
        self.ops = ops
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.poll_interval_s = poll_interval_s
        self.wake = wake
        self.note_error = note_error
        # Called with each batch that joins the buffer, and whether the
        # buffer was empty before (the batch then starts at the spool's head).
        self.on_batch = on_batch
        self.buffer: deque[Any] = deque()
        self.puts = 0  # spool puts seen by the listener (racy increments: only "changed?")
        self._puts_seen = 0  # puts when the last lease started
        self._task: asyncio.Task[list[Any]] | None = None
        self._generation = 0
        self._dry = False  # the last lease came back short: the spool had no more ready
        self._dry_at = 0.0

    @property
    def dry(self) -> bool:
        return self._dry

    @property
    def task(self) -> asyncio.Task[list[Any]] | None:
        return self._task

    def top_up(self, ahead: int, kinds: tuple[Kind, ...]) -> None:
        """Start a lease when fewer than half of ``ahead`` items are buffered."""
        if self._task is not None:
            return
        buffer = self.buffer
        new_puts = self.puts != self._puts_seen
        # Refill at half: bigger, fewer leases (each one is a hop to a worker
        # thread, which stalls the event loop for a GIL hand-off).
        low = len(buffer) < ahead // 2
        # After a lease came back short the spool has nothing more that is
        # ready: ask again only after a put or a poll interval (items backing
        # off become ready by time alone).
        dry = self._dry and time.monotonic() - self._dry_at < self.poll_interval_s
        if (low and (not dry or new_puts)) or (new_puts and buffer):
            # The second case: something new while the buffer is full of
            # detections. The spool leases health first, so a new health
            # snapshot goes to the front instead of waiting behind them.
            self._puts_seen = self.puts
            self._start(max(ahead - len(buffer), 1), kinds)

    def _start(self, limit: int, kinds: tuple[Kind, ...]) -> None:
        generation = self._generation
        puts_before = self.puts
        task = asyncio.get_running_loop().create_task(
            self.ops.lease(limit, kinds, self.lease_seconds))
        self._task = task

        def landed(t: asyncio.Task[list[Any]]) -> None:
            self._task = None
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self.note_error(f"spool.lease failed: {exc!r}")
                _rlog(logging.ERROR, "lease", "uplink: spool.lease failed: %r", exc)
                return
            self._landed(t.result(), limit, generation, puts_before)

        task.add_done_callback(landed)

    def _landed(self, items: list[Any], limit: int, generation: int, puts_before: int) -> None:
        self._dry = len(items) < limit
        if self._dry:
            self._dry_at = time.monotonic()
        if not items:
            if self.puts != puts_before:
                # Something was put while this lease ran (its wake-up was
                # spent on a turn that could not start another lease).
                self.wake()
            return
        if generation != self._generation:
            # Leased before a release of older items: hand these back too.
            self.ops.release([it.id for it in items])
            return
        items = creation_order(items)
        self.on_batch(items, not self.buffer)
        self.buffer.extendleft(reversed([it for it in items if it.kind == Kind.HEALTH]))
        self.buffer.extend(it for it in items if it.kind != Kind.HEALTH)
        self.wake()

    def give_back(self, also: list[int] | None = None) -> None:
        """Hand the buffer (and ``also``) back to the spool, and any lease
        still running when it lands: something older is ready again."""
        self._generation += 1
        self._dry = False  # released items are ready again at once
        ids = list(also or ())
        ids.extend(it.id for it in self.buffer)
        self.buffer.clear()
        self.ops.release(ids)


def creation_order(items: list[Any]) -> list[Any]:
    """Health first (the spool leases it first, newest first, so a fresh snapshot
    is never stuck behind a backlog), but within the batch each kind goes out
    in creation order so that a replay reaches the server in order."""
    return sorted(items, key=lambda it: (it.kind != Kind.HEALTH, it.id))


def lease_ahead(channel: str, window: int, config: UplinkConfig, typical_size: float,
                rest_rtt_s: float | None, sio_rate: float | None) -> int:
    """Items to lease ahead: two windows or ``batch``; over REST with several
    requests in flight four times that (every lease is a hop to a worker
    thread, which stalls the event loop: measured, fewer hops drain REST
    faster). Never more than the link sends in half a lease — else a slow
    link's leases expire and those items go out twice — nor about 8 MB."""
    if window <= 1:
        return 4
    ahead = max(config.batch, 2 * window)
    half_lease = config.lease_seconds / 2
    size = max(typical_size, 1.0)
    if channel == "rest":
        ahead *= 4
        if rest_rtt_s:
            ahead = min(ahead, int(config.rest_concurrency * half_lease / rest_rtt_s))
    else:
        # Before the first ack the rate is unknown: assume the floor a slow
        # link is allowed (the first lease is small; the next one, after an
        # ack, is sized to the measured rate).
        rate = sio_rate or config.link_min_rate_kbps * 125.0  # kbit/s -> bytes/s
        ahead = min(ahead, int(rate * half_lease / size))
    return max(4, min(ahead, int(_AHEAD_BYTES / size)))
