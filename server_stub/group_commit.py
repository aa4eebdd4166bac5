"""Group commit: the writes that arrive together share one SQLite transaction.

Under load many handlers are ready in the same loop iteration; committing them
together costs about as much as committing one. Each caller is answered only
after the commit that holds its message.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from lpr_agent.protocol import Kind
from server_stub.storage import Storage, Stored, WriteItem

log = logging.getLogger(__name__)

# Group-commit linger when busy (tuning knob for benchmarks; 0 = never linger).
FLUSH_DELAY_S = float(os.environ.get("LPR_STUB_FLUSH_DELAY_MS", "1")) / 1000
BUSY_WINDOW_S = 0.005
# A commit waits at most this many extra loop turns for messages still arriving.
MAX_DEFERS = 8
MAX_BATCH = 256


class GroupCommitter:
    """Collects the writes that arrive together and commits them as one transaction.

    Under load many handlers are ready in the same loop iteration; one SQLite
    transaction for all of them costs about as much as one for a single
    message. Each caller still gets its reply only after the commit, so an
    acknowledged message survives a SIGKILL of the stub.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.pending: list[tuple[WriteItem, asyncio.Future[Stored]]] = []
        self.batches = 0
        self.largest_batch = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = 0.0
        self._joined = 0
        self._defers = 0

    async def write(
        self, kind: Kind, data: dict[str, Any], channel: str, dedup: bool, linger: bool
    ) -> Stored:
        """Store one message in the next group commit; returns once it is committed.

        ``linger``: the caller's client pipelines (a Socket.IO connection with
        many messages in flight), so a busy stub may hold the commit back a
        moment to gather more of them.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        if not self.pending:
            if linger and FLUSH_DELAY_S > 0 and loop.time() - self._last_flush < BUSY_WINDOW_S:
                # Busy: Socket.IO events arrive one per loop turn, so a short
                # linger lets a pipelining client's burst share one commit.
                self._timer = loop.call_later(FLUSH_DELAY_S, self._flush)
            else:
                # Idle, or an HTTP request: commit as soon as a loop turn adds
                # nothing to the batch. An HTTP client sends its next request
                # on a connection only once answered, so a timed linger would
                # leave the stub idle, waiting for requests that cannot come
                # before it answers; the requests already being read still
                # join, so a busy stub gets big batches all the same.
                self._timer = None
                self._joined = 0
                self._defers = 0
                loop.call_soon(self._flush_when_quiet)
        else:
            self._joined += 1
        self.pending.append(((kind, data, channel, dedup), future))
        if len(self.pending) >= MAX_BATCH and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            loop.call_soon(self._flush)
        return await future

    def _flush_when_quiet(self) -> None:
        """Flush, unless messages joined during the last loop turn: then more
        are probably on their way through the handlers; look again next turn."""
        if self._joined and self._defers < MAX_DEFERS and len(self.pending) < MAX_BATCH:
            self._joined = 0
            self._defers += 1
            asyncio.get_running_loop().call_soon(self._flush_when_quiet)
            return
        self._flush()

    def _flush(self) -> None:
        self._timer = None
        self._last_flush = asyncio.get_running_loop().time()
        batch, self.pending = self.pending, []
        if not batch:
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            results = self.storage.write_batch([item for item, _ in batch])
        except Exception as exc:  # e.g. the disk is full: fail every caller
            log.exception("group commit of %d messages failed", len(batch))
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the caller went away (cancelled)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
