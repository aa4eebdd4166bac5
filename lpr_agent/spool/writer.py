"""Putting readings into the spool: ids, ``seq``, one durable INSERT per put."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

from lpr_agent.protocol import Kind
from lpr_agent.spool.core import SpoolCore
from lpr_agent.spool.file import SQLITE_FULL
from lpr_agent.spool.records import LANES, SEQ_LANES

log = logging.getLogger(__name__)

INSERT = (
    "INSERT INTO items (id, lane, event_id, created_at, payload, size, component, has_images) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _row(kind: Kind | str, payload: dict[str, Any], now: float) -> list[Any]:
    """The INSERT parameters, id (first) left to fill in; ``seq`` not in the text yet."""
    if not isinstance(kind, Kind):
        kind = Kind(kind)
    event_id = payload.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("payload['event_id'] is required (a UUID string)")
    lane = LANES[kind]
    if lane in SEQ_LANES:
        # The spool numbers readings; a caller's "seq" would be a second key.
        payload.pop("seq", None)
    text = _ENCODER.encode(payload)
    component = None
    has_images = 0
    if kind is Kind.HEALTH:
        component = str(payload.get("component", ""))
    elif kind is Kind.DETECTION and (
        payload.get("annotated_image") or payload.get("cropped_plates")
    ):
        has_images = 1
    return [0, lane, event_id, now, text, len(text), component, has_images]


def _with_seq(row: list[Any], seq: int) -> None:
    # Encoded outside the lock without seq; the number is appended under it
    # (the text always ends with "}" after at least event_id).
    text = f'{row[4][:-1]},"seq":{seq}}}'
    row[4] = text
    row[5] = len(text)


class WriterMixin(SpoolCore):
    def put(self, kind: Kind | str, payload: dict[str, Any]) -> int:
        """Spool one item; it is durable (per ``synchronous``) when this returns.

        Returns the item id. Detections and health get the next ``seq`` of
        their kind, written into the stored JSON and into ``payload`` too.
        """
        row = _row(kind, payload, self._clock())
        lane = row[1]
        with self._lock:
            self._check_open()
            row[0] = self._take_ids(1)
            seq = 0
            if lane in SEQ_LANES:
                seqs = self._seqs()
                seq = seqs[lane]
                _with_seq(row, seq)
            self._insert_durably(row)
            if seq:
                seqs[lane] = seq + 1
                payload["seq"] = seq
        self._after_put(1, row[5])
        return int(row[0])

    def _insert_durably(self, row: list[Any]) -> None:
        """One statement outside BEGIN is its own transaction, committed (and
        fsynced under FULL) before execute() returns; lane_stats catches up at
        the next fold. The level is set right before each attempt: an id
        block or the degradation before a retry commits at NORMAL."""
        self._set_sync(self._durable_sync)
        try:
            self._conn.execute(INSERT, row)
        except sqlite3.OperationalError as exc:
            self._on_full(exc)
            self._set_sync(self._durable_sync)
            self._conn.execute(INSERT, row)

    def put_many(self, items: Iterable[tuple[Kind | str, dict[str, Any]]]) -> list[int]:
        """Spool a batch in one transaction; all or nothing. Returns the ids in order."""
        now = self._clock()
        pairs = list(items)
        rows = [_row(kind, payload, now) for kind, payload in pairs]
        if not rows:
            return []
        with self._lock:
            self._check_open()
            first = self._take_ids(len(rows))
            seqs = self._seqs()
            taken = dict(seqs)  # committed to ``seqs`` only with the rows
            for i, row in enumerate(rows):
                row[0] = first + i
                lane = row[1]
                if lane in SEQ_LANES:  # inlined _with_seq: this loop is the batch's hot path
                    seq = taken[lane]
                    taken[lane] = seq + 1
                    text = f'{row[4][:-1]},"seq":{seq}}}'
                    row[4] = text
                    row[5] = len(text)
                    # Set before the commit: on failure the caller gets the
                    # exception, and a retry replaces the number anyway.
                    pairs[i][1]["seq"] = seq
            try:
                with self._txn(durable=True) as conn:
                    conn.executemany(INSERT, rows)
            except sqlite3.OperationalError as exc:
                self._on_full(exc)
                with self._txn(durable=True) as conn:
                    conn.executemany(INSERT, rows)
            seqs.update(taken)
        self._after_put(len(rows), sum(r[5] for r in rows))
        return [r[0] for r in rows]

    def _on_full(self, exc: sqlite3.OperationalError) -> None:
        """The disk (or the file's limit) is full: degrade now, then the caller retries
        once. Anything else is re-raised."""
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) != SQLITE_FULL:
            raise exc
        log.error("spool: %s while putting; degrading now and retrying once", exc)
        self.maintain(force_disk_check=True, emergency=True)

    def _after_put(self, n: int, nbytes: int) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:
                log.exception("spool listener %r failed", callback)
        self._approx_items += n
        self._approx_bytes += nbytes
        if (
            self._approx_items > self.config.max_items
            or self._approx_bytes > self.config.max_bytes
            or time.monotonic() >= self._next_maintenance
        ):
            self._maintain_quietly()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs in the putting thread after every committed put."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.remove(callback)
