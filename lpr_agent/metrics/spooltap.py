"""A see-through wrapper of the spool that tells the metrics what the uplink delivered.

The uplink's contract with the spool (docs/architecture.md) is lease → ack /
nack / release / dead_letter. Watching that contract from outside counts the
readings delivered per kind and their put → ack latency without any hook in
the uplink: an id that is leased and then acked was delivered; its
``created_at`` is the put time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


class DeliveryTap:
    """Delegates everything to ``spool``; calls ``delivered(item)`` for each acked item."""

    def __init__(self, spool: Any, delivered: Callable[[Any], None]) -> None:
        self._spool = spool
        self._delivered = delivered
        self._leased: dict[int, Any] = {}  # id -> SpoolItem, while leased
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)

    def lease(self, *args: Any, **kwargs: Any) -> Any:
        items = self._spool.lease(*args, **kwargs)
        with self._lock:
            for item in items:
                self._leased[item.id] = item
        return items

    def ack(self, ids: Iterable[int], *args: Any, **kwargs: Any) -> Any:
        ids = list(ids)
        result = self._spool.ack(ids, *args, **kwargs)
        with self._lock:
            items = [item for i in ids if (item := self._leased.pop(i, None)) is not None]
        for item in items:  # after the ack is durable: counted once it really left
            self._delivered(item)
        return result

    def _forget(self, ids: Iterable[int]) -> list[int]:
        ids = list(ids)
        with self._lock:
            for i in ids:
                self._leased.pop(i, None)
        return ids

    def nack(self, ids: Iterable[int], *args: Any, **kwargs: Any) -> Any:
        return self._spool.nack(self._forget(ids), *args, **kwargs)

    def release(self, ids: Iterable[int], *args: Any, **kwargs: Any) -> Any:
        return self._spool.release(self._forget(ids), *args, **kwargs)

    def dead_letter(self, ids: Iterable[int], *args: Any, **kwargs: Any) -> Any:
        return self._spool.dead_letter(self._forget(ids), *args, **kwargs)
