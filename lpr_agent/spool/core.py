"""The state every part of the Spool shares: the connection, the lock, the
transaction helper, the id and seq counters, and the in-memory leases.

``writer``, ``reader``, ``acks`` and ``maintenance`` are mixins over this
class; ``spool.Spool`` puts them together. They share one connection and one
lock because SQLite serialises writers per file anyway (see the package
docstring).
"""

from __future__ import annotations

import abc
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from lpr_agent.spool import ledger
from lpr_agent.spool.config import SpoolConfig
from lpr_agent.spool.file import acquire_writer_lock
from lpr_agent.spool.leases import Leases

log = logging.getLogger(__name__)


class SpoolCore(abc.ABC):
    """Shared state and transactions. Use ``Spool.open()``."""

    # Ids reserved per ledger write (a class attribute so that tests can make
    # blocks small and hit their boundaries often).
    id_block = ledger.ID_BLOCK

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: SpoolConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.path = Path(config.path)
        self._conn = conn
        # sqlite-utils for the reading/listing side (CLI); the hot paths use
        # the raw connection with prepared statements.
        self.db = sqlite_utils.Database(conn)
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._durable_sync = config.synchronous
        self._sync_now = config.synchronous
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self._leases = Leases()
        # stats() reads through its own connection and lock, so that the event
        # loop asking for them never waits for a put's or an ack's fsync.
        self._stats_lock = threading.Lock()
        self._stats_conn: sqlite3.Connection | None = None
        # Earliest wait_until of a backing-off item: lease() looks for due
        # items only from then on, so its usual path does no write at all.
        self._next_due = 0.0
        # Cheap upper bounds of the depth, so put() needs no SELECT to notice a
        # cap being crossed; maintain() replaces them with the exact figures.
        self._approx_items = 0
        self._approx_bytes = 0
        self._next_maintenance = 0.0
        self._next_disk_check = 0.0
        # Payload bytes shed for the current disk shortage (see maintenance).
        self._disk_shed = 0
        # The block of ids being handed out, [next, limit); see the package docstring.
        self._next_id = self._id_limit = 0
        # lane -> next seq; read from the ledger at the first put (see ledger.next_seqs).
        self._next_seq: dict[int, int] | None = None
        self._writer_fd: int | None = None
        # Detections below this id have had their images dropped already.
        self._images_watermark = 0
        self.free_disk_bytes: int | None = None
        self.recovered_from: Path | None = None

    # --- transactions -------------------------------------------------------------

    def _set_sync(self, level: str) -> None:
        if self._sync_now != level:
            self._conn.execute(f"PRAGMA synchronous = {level}")
            self._sync_now = level

    @contextmanager
    def _txn(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """A write transaction. Caller holds ``self._lock``.

        Non-durable transactions (making due items ready, degradation, vacuum,
        id blocks) commit without an fsync: losing one in a power cut only
        brings back a dropped image or an item, or hands out ids again that no
        durable commit used; the next durable commit's fsync covers the WAL
        frames before it anyway. They leave the connection at NORMAL: whatever
        commits durably next must set its level itself (``_set_sync``).
        """
        self._check_open()
        self._set_sync(self._durable_sync if durable else "NORMAL")
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("spool is closed")

    def _bump(self, name: str, delta: int) -> None:
        ledger.bump(self._conn, name, delta)

    # --- ids and seqs (caller holds the lock) -------------------------------------

    def _take_ids(self, n: int) -> int:
        """Reserve ``n`` consecutive ids; returns the first.

        A new block is a non-durable commit (every put using these ids commits
        after it, and that commit's fsync covers it): it leaves the connection
        at NORMAL, so the caller sets the durable level after this.
        """
        if self._writer_fd is None:
            self._writer_fd = acquire_writer_lock(self.path, self.config.busy_timeout_s)
        if self._next_id + n > self._id_limit:
            with self._txn(durable=False) as conn:
                self._next_id, self._id_limit = ledger.reserve_ids(conn, n, self.id_block)
        first = self._next_id
        self._next_id += n
        return first

    def _seqs(self) -> dict[int, int]:
        if self._next_seq is None:
            self._next_seq = ledger.next_seqs(self._conn)
        return self._next_seq

    # --- hooks the mixins provide to each other -----------------------------------

    @abc.abstractmethod
    def maintain(self, *, force_disk_check: bool = False, emergency: bool = False) -> None:
        """Caps, degradation, vacuum (``maintenance.Maintenance``)."""

    def _maintain_quietly(self) -> None:
        # The put/ack has committed: a failure of the housekeeping after it
        # must not make the caller believe the put/ack failed (and retry it).
        try:
            self.maintain()
        except Exception:
            log.exception("spool: maintenance failed (will retry)")

    @abc.abstractmethod
    def _move_to_dead(self, ids: list[int], reason: str, now: float) -> int:
        """Turn ``ids`` into dead letters (``acks.Acks``)."""

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Close; this instance's leases end with it (the items are ready). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._leases.clear()
            # The reader first: the last connection to close checkpoints the
            # WAL into the file and removes it, and that must be the writer.
            with self._stats_lock:
                if self._stats_conn is not None:
                    self._stats_conn.close()
                    self._stats_conn = None
            self._conn.close()
            if self._writer_fd is not None:
                os.close(self._writer_fd)  # releases the flock
                self._writer_fd = None
