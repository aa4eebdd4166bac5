"""The leases of one Spool instance: in memory only, behind their own small lock.

A lease is the promise of one running process, so it lives in that process's
memory (see the package docstring). It has its own lock, taken only for
dictionary operations, so that ``release()`` and ``stats()`` from the event
loop never wait for a put's or an ack's fsync, which holds the Spool's lock.
Lock order: the Spool's lock, then this one (never the other way round).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)


class Leases:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id -> (lease expiry, lane, size)
        self._held: dict[int, tuple[float, int, int]] = {}
        self._min_expiry = math.inf

    def __bool__(self) -> bool:
        return bool(self._held)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self._held

    def get(self, item_id: int) -> tuple[float, int, int] | None:
        return self._held.get(item_id)

    def held_in_lane(self, lane: int) -> int:
        if not self._held:
            return 0
        with self._lock:
            return sum(1 for v in self._held.values() if v[1] == lane)

    def held_ids(self) -> set[int]:
        with self._lock:
            return set(self._held)

    def take(self, rows: Iterable[tuple[int, int, int]], until: float) -> None:
        """Lease ``(id, lane, size)`` rows until ``until``."""
        with self._lock:
            held = self._held
            for item_id, lane, size in rows:
                held[item_id] = (until, lane, size)
            if held:
                self._min_expiry = min(self._min_expiry, until)

    def resize(self, item_id: int, size: int) -> None:
        """An item's payload shrank (images dropped): ack() relies on the leased size."""
        with self._lock:
            lease = self._held.get(item_id)
            if lease is not None:
                self._held[item_id] = (lease[0], lease[1], size)

    def forget(self, ids: Iterable[int]) -> None:
        with self._lock:
            for i in ids:
                self._held.pop(i, None)
            if not self._held:
                self._min_expiry = math.inf

    def expire(self, now: float) -> None:
        if not self._held or now < self._min_expiry:
            return
        with self._lock:
            expired = [i for i, v in self._held.items() if v[0] <= now]
            for i in expired:
                del self._held[i]
            self._min_expiry = min((v[0] for v in self._held.values()), default=math.inf)
        if expired:
            log.info("spool: %d lease(s) expired; the items are ready again", len(expired))

    def in_flight(self, now: float) -> int:
        with self._lock:
            return sum(1 for v in self._held.values() if v[0] > now)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._min_expiry = math.inf
