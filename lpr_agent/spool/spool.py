"""Durable local SQLite spool: every reading waits here until the server acked it.

Why our own schema rather than a queue library: persist-queue keeps acked rows
and retries a failed item at the head forever; litequeue runs
``synchronous=NORMAL`` and sorts the whole queue on every pop. See ``_schema``
for the table layout and why each index exists.

Leases live in the memory of the ``Spool`` instance that took them, not in
the file: a lease is the promise of one running process, so when that process
dies its leases vanish with it (nothing to reclaim, nothing to expire on
disk), and taking or releasing a lease costs no write at all. The price: only
one consumer per spool file (the daemon's uplink); another process (the CLI)
sees leased items as ready and does not count them as in flight.

Concurrency: one SQLite connection per ``Spool`` guarded by a lock. Writers in
SQLite are serialised anyway (one WAL write lock per file), so a connection per
thread would not let two puts commit at once, and a Python lock hands over
faster than SQLite's busy-sleep. Other processes (the CLI, a restarted daemon)
open their own ``Spool``; ``busy_timeout`` makes them wait for each other and
every multi-statement write starts with ``BEGIN IMMEDIATE`` so that a reader
never has to upgrade to a writer mid-transaction (which would fail with BUSY).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import random
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlite_utils

from lpr_agent.spool._schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION
from lpr_agent.spool.config import SpoolConfig

log = logging.getLogger(__name__)

__all__ = [
    "DROP_REASONS",
    "DeadLetter",
    "Kind",
    "Spool",
    "SpoolCorruptError",
    "SpoolItem",
    "SpoolStats",
]


class Kind(StrEnum):
    DETECTION = "detection"
    HEALTH = "health"
    REGISTRATION = "registration"


# Lease order: lower lane first. Health is small and says whether the camera
# works, so it never waits behind a detection backlog.
LANES: dict[Kind, int] = {Kind.HEALTH: 0, Kind.REGISTRATION: 1, Kind.DETECTION: 2}
KIND_OF_LANE: dict[int, Kind] = {lane: kind for kind, lane in LANES.items()}
_DEAD_LANE = -1  # lane_stats row of the dead letters
_WM_LANE = -2  # lane_stats row whose ``items`` is the fold watermark (see _schema)
_IDS_LANE = -3  # lane_stats row whose ``items`` is the first id not reserved yet
_ID_BLOCK = 1000

# Drop reasons (counters ``drop:<reason>``), in degradation order.
DROP_IMAGES = "images_dropped"
DROP_HEALTH = "health_coalesced"
DROP_DETECTIONS = "detections_dropped"
DROP_REASONS = (DROP_IMAGES, DROP_HEALTH, DROP_DETECTIONS)

_IMAGE_FIELDS = ("annotated_image", "cropped_plates")
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_FULL = 13
_DEGRADE_BATCH = 200
_VACUUM_PAGES_PER_RUN = 4096  # bounds the time one maintenance run spends moving pages

_ITEM_COLUMNS = "id, lane, event_id, created_at, payload, attempts, last_error, wait_until, size"
_INSERT = (
    "INSERT INTO items (id, lane, event_id, created_at, payload, size, component, has_images) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_BUMP_LANE = (
    "UPDATE lane_stats SET items = items + ?, bytes = bytes + ?, waiting = waiting + ? "
    "WHERE lane = ?"
)
_IDS = "SELECT value FROM json_each(?)"
_READY_ROWS = {
    "ASC": f"SELECT {_ITEM_COLUMNS} FROM items WHERE lane = ? AND wait_until IS NULL "
    "ORDER BY id LIMIT ?",
    "DESC": f"SELECT {_ITEM_COLUMNS} FROM items WHERE lane = ? AND wait_until IS NULL "
    "ORDER BY id DESC LIMIT ?",
}
_READY_IDS = {
    "ASC": "SELECT id FROM items WHERE lane = ? AND wait_until IS NULL ORDER BY id LIMIT ?",
    "DESC": "SELECT id FROM items WHERE lane = ? AND wait_until IS NULL ORDER BY id DESC LIMIT ?",
}
_ROWS_BY_ID = f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({_IDS})"
_DELETE_IDS = f"DELETE FROM items WHERE id IN ({_IDS})"
_ACK = (
    f"DELETE FROM items WHERE id IN ({_IDS}) RETURNING id, lane, size, wait_until IS NOT NULL"
)


class SpoolCorruptError(Exception):
    """The spool file failed its integrity check and ``recover=False`` was asked for."""


@dataclass(frozen=True)
class SpoolItem:
    id: int
    event_id: str
    kind: Kind
    created_at: float
    payload: dict[str, Any]
    attempts: int
    last_error: str | None = None
    # Set while backing off after a nack: the time of the next attempt.
    next_attempt_at: float | None = None
    # Leased by this Spool instance (leases are not visible to other processes).
    leased: bool = False
    size: int = 0


_new_object = object.__new__


def _make_item(
    item_id: int, event_id: str, kind: Kind, created_at: float, payload: dict[str, Any],
    attempts: int, last_error: str | None, next_attempt_at: float | None, leased: bool,
    size: int,
) -> SpoolItem:
    """``SpoolItem(...)`` at a third of the cost: a frozen dataclass's __init__
    goes through object.__setattr__ per field, which for a lease of 100 items
    costs as much as the SQL. Same object, same immutability afterwards."""
    item = _new_object(SpoolItem)
    item.__dict__.update(
        id=item_id, event_id=event_id, kind=kind, created_at=created_at, payload=payload,
        attempts=attempts, last_error=last_error, next_attempt_at=next_attempt_at,
        leased=leased, size=size,
    )
    return item


@dataclass(frozen=True)
class DeadLetter:
    id: int
    event_id: str
    kind: Kind
    created_at: float
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    reason: str
    dead_at: float


@dataclass(frozen=True)
class SpoolStats:
    depth: dict[str, int]  # items per kind (ready + leased + backing off)
    items: int
    bytes: int  # payload bytes (JSON text), what max_bytes caps
    oldest_age_s: float | None
    ready: int  # neither leased (by this instance) nor backing off
    in_flight: int  # leased by this Spool instance
    backing_off: int  # nacked, waiting for their next attempt
    dead_letters: int
    dead_bytes: int
    drops: dict[str, int]  # by reason, since the spool file was created
    counters: dict[str, int] = field(default_factory=dict)  # every other event counter
    file_bytes: int = 0  # database pages in use + free (without the WAL)
    free_disk_bytes: int | None = None  # at the last disk check

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return not isinstance(exc, sqlite3.OperationalError)


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}-{uuid.uuid4().hex[:6]}")
    path.rename(aside)
    # Keep the WAL with the main file: it is part of the evidence. The shm is
    # only an index of the WAL and would confuse the fresh database.
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        wal.rename(aside.with_name(aside.name + "-wal"))
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    return aside


_TAIL = (
    "SELECT lane, count(*), coalesce(sum(size), 0), coalesce(sum(wait_until IS NOT NULL), 0), "
    "max(id) FROM items WHERE id > ? GROUP BY lane"
)


class _Deltas:
    """Changes to ``lane_stats``, summed per lane and written once per statement.

    Rows above the fold watermark are not in ``lane_stats`` yet, so changes to
    them are left out (the fold counts them as they are then).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.wm = conn.execute(
            "SELECT items FROM lane_stats WHERE lane = ?", (_WM_LANE,)
        ).fetchone()[0]
        self.lanes: dict[int, list[int]] = {}

    def add(
        self, lane: int, items: int, nbytes: int, waiting: int = 0, item_id: int | None = None
    ) -> None:
        if item_id is not None and item_id > self.wm:
            return
        d = self.lanes.setdefault(lane, [0, 0, 0])
        d[0] += items
        d[1] += nbytes
        d[2] += waiting

    def write(self, conn: sqlite3.Connection) -> None:
        for lane, (items, nbytes, waiting) in self.lanes.items():
            if items or nbytes or waiting:
                conn.execute(_BUMP_LANE, (items, nbytes, waiting, lane))
        self.lanes.clear()


class Spool:
    """The durable queue between the detector and the uplink. Thread-safe."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: SpoolConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        # Use Spool.open(); this only wires an already prepared connection.
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
        # id -> (lease expiry, lane, size); see the module docstring.
        self._leases: dict[int, tuple[float, int, int]] = {}
        self._leases_min_expiry = math.inf
        # Earliest wait_until of a backing-off item: lease() looks for due
        # items only from then on, so its usual path does no write at all.
        self._next_due = 0.0
        # Cheap upper bounds of the depth, so put() needs no SELECT to notice a
        # cap being crossed; maintain() replaces them with the exact figures.
        self._approx_items = 0
        self._approx_bytes = 0
        self._next_maintenance = 0.0
        self._next_disk_check = 0.0
        # The block of ids being handed out, [next, limit); see _schema on why.
        self._next_id = self._id_limit = 0
        self._writer_fd: int | None = None
        # Detections below this id have had their images dropped already.
        self._images_watermark = 0
        self.free_disk_bytes: int | None = None
        self.recovered_from: Path | None = None

    # --- opening ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        config: SpoolConfig,
        *,
        recover: bool = True,
        create: bool = True,
        maintain: bool | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> Spool:
        """Open (creating if needed) the spool file and check it.

        A file that fails ``PRAGMA quick_check`` (or is not an lpr-agent spool)
        is renamed to ``<name>.corrupt-<time>-<id>`` (kept for forensics), a
        fresh spool is created, the event is logged and counted
        (``counters["corrupt_recoveries"]``, ``spool.recovered_from``): the
        agent never wedges on a bad file. With ``recover=False`` (the CLI, which
        must not pull the file from under a running daemon)
        ``SpoolCorruptError`` is raised instead. ``create=False`` raises
        ``FileNotFoundError`` for a missing file; ``maintain=False`` never
        degrades, folds or vacuums (for guests such as the CLI; the default is
        ``recover``, i.e. guests that do not recover do not maintain either).
        """
        path = Path(config.path)
        if not create and not path.exists():
            raise FileNotFoundError(f"no spool at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        recovered_from: Path | None = None
        try:
            conn = cls._connect(path, config)
        except SpoolCorruptError as exc:
            if not recover:
                raise
            aside = _move_aside(path)
            log.error("spool %s is corrupt (%s); moved aside to %s, starting a fresh spool",
                      path, exc, aside)
            recovered_from = aside
            conn = cls._connect(path, config)
        spool = cls(conn, config, clock=clock, rng=rng)
        if recovered_from is not None:
            spool.recovered_from = recovered_from
            with spool._lock, spool._txn(durable=True):
                spool._bump("corrupt_recoveries", 1)
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_corrupt_file', ?)",
                    (str(recovered_from),),
                )
        spool._next_due = spool._min_wait_until()
        if recover if maintain is None else maintain:
            spool.maintain()
        else:
            # A guest (the CLI): leave caps and file space to the daemon.
            spool._next_maintenance = math.inf
        return spool

    @staticmethod
    def _connect(path: Path, config: SpoolConfig) -> sqlite3.Connection:
        existed = path.exists() and path.stat().st_size > 0
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_s * 1000)}")
            if existed:
                rows = conn.execute("PRAGMA quick_check").fetchall()
                if rows != [("ok",)]:
                    raise SpoolCorruptError(
                        "quick_check: " + "; ".join(str(r[0]) for r in rows[:5])
                    )
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                has_tables = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                ).fetchone()[0]
                if has_tables and app_id != APPLICATION_ID:
                    raise SpoolCorruptError(f"not an lpr-agent spool (application_id {app_id})")
            else:
                # Must precede the first table: lets maintain() give freed pages back.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {path} to WAL (got {mode})")
            conn.execute(f"PRAGMA synchronous = {config.synchronous}")
            # After a big backlog drained and was checkpointed, truncate the WAL
            # instead of keeping it at its high-water size.
            conn.execute("PRAGMA journal_size_limit = 8388608")
            conn.execute("PRAGMA temp_store = MEMORY")
            # Debian's SQLite zero-fills every deleted byte (SECURE_DELETE on by
            # default): acking a detection with a 60 KB image then costs ~300 us
            # of CPU instead of ~20. With the WAL, full zeroing promises less than
            # it seems anyway (the WAL keeps copies of the pages until it is
            # reused); freed pages are zeroed when written again or given back by
            # the incremental vacuum.
            conn.execute("PRAGMA secure_delete = FAST")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except SpoolCorruptError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _is_corruption(exc):
                raise SpoolCorruptError(str(exc)) from exc
            raise
        return conn

    # --- transactions -------------------------------------------------------------

    def _set_sync(self, level: str) -> None:
        if self._sync_now != level:
            self._conn.execute(f"PRAGMA synchronous = {level}")
            self._sync_now = level

    @contextmanager
    def _txn(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """A write transaction. Caller holds ``self._lock``.

        Non-durable transactions (making due items ready, degradation, vacuum)
        commit without an fsync: losing one in a power cut only brings back a
        dropped image or an item, and the next durable commit's fsync covers
        the WAL frames before it anyway.
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
        if delta:
            self._conn.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, delta),
            )

    # --- put ----------------------------------------------------------------------

    @staticmethod
    def _row(kind: Kind | str, payload: dict[str, Any], now: float) -> list[Any]:
        """The INSERT parameters, id (first) left to fill in."""
        if not isinstance(kind, Kind):
            kind = Kind(kind)
        event_id = payload.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("payload['event_id'] is required (a UUID string)")
        text = _ENCODER.encode(payload)
        component = None
        has_images = 0
        if kind is Kind.HEALTH:
            component = str(payload.get("component", ""))
        elif kind is Kind.DETECTION and (
            payload.get("annotated_image") or payload.get("cropped_plates")
        ):
            has_images = 1
        return [0, LANES[kind], event_id, now, text, len(text), component, has_images]

    def _take_ids(self, n: int) -> int:
        """Reserve ``n`` consecutive ids; returns the first. Caller holds the lock."""
        if self._writer_fd is None:
            self._acquire_writer()
        if self._next_id + n > self._id_limit:
            # A new block. Non-durable is enough: every put using these ids
            # commits later, and its fsync covers this write too.
            with self._txn(durable=False) as conn:
                floor = conn.execute(
                    "SELECT max((SELECT items FROM lane_stats WHERE lane = ?), "
                    "(SELECT items FROM lane_stats WHERE lane = ?) + 1, "
                    "coalesce((SELECT max(id) FROM items), 0) + 1, "
                    "coalesce((SELECT max(id) FROM dead), 0) + 1)",
                    (_IDS_LANE, _WM_LANE),
                ).fetchone()[0]
                limit = floor + max(_ID_BLOCK, n)
                conn.execute(
                    "UPDATE lane_stats SET items = ? WHERE lane = ?", (limit, _IDS_LANE)
                )
            self._next_id, self._id_limit = floor, limit
        first = self._next_id
        self._next_id += n
        return first

    def _acquire_writer(self) -> None:
        """Become the one Spool that puts into this file (see _schema: id order)."""
        fd = os.open(self.path.with_name(self.path.name + ".writer"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.config.busy_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or (
                    time.monotonic() > deadline
                ):
                    os.close(fd)
                    raise RuntimeError(
                        f"another Spool (process) is putting into {self.path}; a spool "
                        "file has one producer"
                    ) from exc
                time.sleep(0.01)
        self._writer_fd = fd

    def put(self, kind: Kind | str, payload: dict[str, Any]) -> int:
        """Spool one item; it is durable (per ``synchronous``) when this returns."""
        row = self._row(kind, payload, self._clock())
        with self._lock:
            if self._closed:
                raise RuntimeError("spool is closed")
            if self._sync_now != self._durable_sync:
                self._set_sync(self._durable_sync)
            row[0] = self._take_ids(1)
            try:
                # One statement outside BEGIN is its own transaction, committed
                # (and fsynced under FULL) before execute() returns; lane_stats
                # catches up at the next fold.
                self._conn.execute(_INSERT, row)
            except sqlite3.OperationalError as exc:
                self._on_full(exc)
                self._conn.execute(_INSERT, row)
        self._after_put(1, row[5])
        return int(row[0])

    def put_many(self, items: Iterable[tuple[Kind | str, dict[str, Any]]]) -> list[int]:
        """Spool a batch in one transaction; all or nothing. Returns the ids in order."""
        now = self._clock()
        rows = [self._row(kind, payload, now) for kind, payload in items]
        if not rows:
            return []
        with self._lock:
            first = self._take_ids(len(rows))
            for i, row in enumerate(rows):
                row[0] = first + i
            try:
                with self._txn(durable=True) as conn:
                    conn.executemany(_INSERT, rows)
            except sqlite3.OperationalError as exc:
                self._on_full(exc)
                with self._txn(durable=True) as conn:
                    conn.executemany(_INSERT, rows)
        self._after_put(len(rows), sum(r[5] for r in rows))
        return [r[0] for r in rows]

    def _on_full(self, exc: sqlite3.OperationalError) -> None:
        """The disk (or the file's limit) is full: degrade now, then the caller retries
        once. Anything else is re-raised."""
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) != _SQLITE_FULL:
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

    def _maintain_quietly(self) -> None:
        # The put/ack has committed: a failure of the housekeeping after it
        # must not make the caller believe the put/ack failed (and retry it).
        try:
            self.maintain()
        except Exception:
            log.exception("spool: maintenance failed (will retry)")

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs in the putting thread after every committed put."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.remove(callback)

    # --- lease / ack / nack -------------------------------------------------------

    def lease(
        self,
        limit: int = 100,
        kinds: Collection[Kind | str] | None = None,
        lease_seconds: float = 30.0,
    ) -> list[SpoolItem]:
        """Take up to ``limit`` ready items, not leased already, for ``lease_seconds``.

        Order: health newest-first, then registrations, then detections, each
        of the last two FIFO by creation. An item neither acked, nacked,
        dead-lettered nor released before its lease expires becomes ready again.
        """
        if limit <= 0:
            return []
        lanes = (0, 1, 2) if kinds is None else sorted({LANES[Kind(k)] for k in kinds})
        now = self._clock()
        until = now + lease_seconds
        rows: list[Any] = []
        with self._lock:
            self._check_open()
            conn = self._conn
            if now >= self._next_due:
                self._promote_due(now)
            if self._leases and now >= self._leases_min_expiry:
                self._expire_leases(now)
            leases = self._leases
            for lane in lanes:
                need = limit - len(rows)
                if need <= 0:
                    break
                order = "DESC" if lane == 0 else "ASC"
                held = sum(1 for v in leases.values() if v[1] == lane) if leases else 0
                if not held:
                    rows.extend(conn.execute(_READY_ROWS[order], (lane, need)).fetchall())
                    continue
                # Skip the items we hold: read ids from the (covering) ready
                # index first and fetch only the rows we take.
                ids = [
                    r[0]
                    for r in conn.execute(_READY_IDS[order], (lane, need + held))
                    if r[0] not in leases
                ][:need]
                if ids:
                    got = {r[0]: r for r in conn.execute(_ROWS_BY_ID, (_ids_json(ids),))}
                    rows.extend(got[i] for i in ids if i in got)
            for r in rows:
                leases[r[0]] = (until, r[1], r[8])
            if rows:
                self._leases_min_expiry = min(self._leases_min_expiry, until)
        loads = json.loads
        return [
            _make_item(r[0], r[2], KIND_OF_LANE[r[1]], r[3], loads(r[4]), r[5], r[6], None,
                       True, r[8])
            for r in rows
        ]

    def _promote_due(self, now: float) -> None:
        """Backing-off items whose next attempt is due become ready."""
        with self._txn(durable=False) as conn:
            deltas = _Deltas(conn)
            for item_id, lane in conn.execute(
                "UPDATE items SET wait_until = NULL WHERE wait_until <= ? RETURNING id, lane",
                (now,),
            ).fetchall():
                deltas.add(lane, 0, 0, -1, item_id)
            deltas.write(conn)
        self._next_due = self._min_wait_until()

    def _min_wait_until(self) -> float:
        row = self._conn.execute(
            "SELECT min(wait_until) FROM items WHERE wait_until IS NOT NULL"
        ).fetchone()
        return math.inf if row[0] is None else float(row[0])

    def _expire_leases(self, now: float) -> None:
        expired = [i for i, v in self._leases.items() if v[0] <= now]
        for i in expired:
            del self._leases[i]
        self._leases_min_expiry = min((v[0] for v in self._leases.values()), default=math.inf)
        if expired:
            log.info("spool: %d lease(s) expired; the items are ready again", len(expired))

    def _forget_leases(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._leases.pop(i, None)
        if not self._leases:
            self._leases_min_expiry = math.inf

    def ack(self, ids: Iterable[int]) -> None:
        """The server has the items: delete them (durably)."""
        id_list = list(dict.fromkeys(int(i) for i in ids))
        if not id_list:
            return
        ids_json = json.dumps(id_list)
        leases = self._leases
        with self._lock, self._txn(durable=True) as conn:
            deltas = _Deltas(conn)
            known = [leases.get(i) for i in id_list]
            fast = False
            if all(known):
                # Usual case: items we leased. Their lane and size are known,
                # and they are ready (not backing off), so the DELETE need not
                # return rows, unless one is gone already (then it must).
                conn.execute("SAVEPOINT ack")
                deleted = conn.execute(_DELETE_IDS, (ids_json,)).rowcount
                fast = deleted == len(id_list)
                if fast:
                    for item_id, lease in zip(id_list, known, strict=True):
                        assert lease is not None
                        deltas.add(lease[1], -1, -lease[2], 0, item_id)
                else:
                    conn.execute("ROLLBACK TO ack")
                conn.execute("RELEASE ack")
            if not fast:
                for item_id, lane, size, waiting in conn.execute(_ACK, (ids_json,)).fetchall():
                    deltas.add(lane, -1, -size, -waiting, item_id)
            deltas.write(conn)
            self._forget_leases(id_list)
        if time.monotonic() >= self._next_maintenance:
            self._maintain_quietly()

    def release(self, ids: Iterable[int]) -> None:
        """Give leased items back (ready now) without counting an attempt."""
        with self._lock:
            self._forget_leases(int(i) for i in ids)

    def backoff_delay(self, attempts: int) -> float:
        """Full-jitter exponential backoff after the ``attempts``-th failure."""
        exponent = min(max(attempts - 1, 0), 60)
        ceiling = min(self.config.backoff_cap_s, self.config.backoff_base_s * 2.0**exponent)
        return self._rng.uniform(0.0, ceiling)

    def nack(self, ids: Iterable[int], error: str) -> None:
        """Delivery failed (transient): count the attempt, retry after a backoff.

        Only these items wait; the ones behind them stay ready, so a failing
        item never blocks the queue. With ``max_attempts`` set, an item that
        reaches it becomes a dead letter.
        """
        id_list = [int(i) for i in ids]
        if not id_list:
            return
        now = self._clock()
        max_attempts = self.config.max_attempts
        exhausted: list[int] = []
        with self._lock, self._txn(durable=True) as conn:
            rows = conn.execute(
                f"SELECT id, lane, attempts, wait_until IS NOT NULL FROM items "
                f"WHERE id IN ({_IDS}) ORDER BY id",
                (json.dumps(id_list),),
            ).fetchall()
            deltas = _Deltas(conn)
            updates = []
            for item_id, lane, attempts, waiting in rows:
                attempts += 1
                if max_attempts and attempts >= max_attempts:
                    exhausted.append(item_id)
                due = now + self.backoff_delay(attempts)
                self._next_due = min(self._next_due, due)
                updates.append((attempts, error, due, item_id))
                deltas.add(lane, 0, 0, 1 - waiting, item_id)
            conn.executemany(
                "UPDATE items SET attempts = ?, last_error = ?, wait_until = ? WHERE id = ?",
                updates,
            )
            deltas.write(conn)
            if exhausted:
                self._move_to_dead(
                    exhausted, f"gave up after {max_attempts} attempts: {error}", now
                )
            self._forget_leases(id_list)
        if exhausted:
            log.warning("spool: %d item(s) reached max_attempts=%d and became dead letters",
                        len(exhausted), max_attempts)

    # --- dead letters -------------------------------------------------------------

    def dead_letter(self, ids: Iterable[int], reason: str) -> None:
        """The server rejected the items as invalid: keep them aside, counted."""
        id_list = sorted({int(i) for i in ids})
        if not id_list:
            return
        with self._lock, self._txn(durable=True):
            moved = self._move_to_dead(id_list, reason, self._clock())
            self._forget_leases(id_list)
        if moved:
            log.warning("spool: %d item(s) moved to dead letters: %s", moved, reason)

    def _move_to_dead(self, ids: list[int], reason: str, now: float) -> int:
        conn = self._conn
        ids_json = _ids_json(ids)
        deltas = _Deltas(conn)
        # A requeued item that dies again replaces its old dead-letter row.
        for (size,) in conn.execute(
            f"DELETE FROM dead WHERE id IN ({_IDS}) AND id IN (SELECT id FROM items) "
            "RETURNING size",
            (ids_json,),
        ).fetchall():
            deltas.add(_DEAD_LANE, -1, -size)
        conn.execute(
            "INSERT INTO dead (id, lane, event_id, created_at, payload, size, component, "
            "has_images, attempts, last_error, reason, dead_at) "
            "SELECT id, lane, event_id, created_at, payload, size, component, has_images, "
            f"attempts, last_error, ?, ? FROM items WHERE id IN ({_IDS})",
            (reason, now, ids_json),
        )
        moved = 0
        for item_id, lane, size, waiting in conn.execute(_ACK, (ids_json,)).fetchall():
            deltas.add(lane, -1, -size, -waiting, item_id)
            deltas.add(_DEAD_LANE, 1, size)
            moved += 1
        deltas.write(conn)
        self._bump("dead_lettered", moved)
        return moved

    def list_dead(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        rows = self._read(
            "SELECT id, lane, event_id, created_at, payload, attempts, last_error, reason, "
            "dead_at FROM dead ORDER BY id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [_dead_from_row(r) for r in rows]

    def get_dead(self, item_id: int) -> DeadLetter | None:
        rows = self._read(
            "SELECT id, lane, event_id, created_at, payload, attempts, last_error, reason, "
            "dead_at FROM dead WHERE id = ?",
            (item_id,),
        )
        return _dead_from_row(rows[0]) if rows else None

    def requeue_dead(self, ids: Iterable[int] | None = None) -> int:
        """Move dead letters (all, or ``ids``) back to the queue, attempts reset.

        They keep their id, so they go back to their place in creation order.
        """
        where, params = ("", ()) if ids is None else (f" WHERE id IN ({_IDS})", (_ids_json(ids),))
        with self._lock, self._txn(durable=True) as conn:
            deltas = _Deltas(conn)
            n = 0
            for item_id, lane, size in conn.execute(
                f"SELECT id, lane, size FROM dead{where}", params
            ).fetchall():
                deltas.add(lane, 1, size, 0, item_id)
                deltas.add(_DEAD_LANE, -1, -size)
                n += 1
            conn.execute(
                "INSERT INTO items (id, lane, event_id, created_at, payload, size, component, "
                "has_images, attempts, last_error) "
                "SELECT id, lane, event_id, created_at, payload, size, component, has_images, "
                f"0, 'requeued after: ' || reason FROM dead{where}",
                params,
            )
            conn.execute(f"DELETE FROM dead{where}", params)
            deltas.write(conn)
            self._bump("requeued", n)
        if n:
            log.info("spool: requeued %d dead letter(s)", n)
        return n

    def purge_dead(self, ids: Iterable[int] | None = None) -> int:
        """Delete dead letters for good (an operator's decision; counted and logged)."""
        where, params = ("", ()) if ids is None else (f" WHERE id IN ({_IDS})", (_ids_json(ids),))
        with self._lock, self._txn(durable=True) as conn:
            deltas = _Deltas(conn)
            rows = conn.execute(f"DELETE FROM dead{where} RETURNING size", params).fetchall()
            for (size,) in rows:
                deltas.add(_DEAD_LANE, -1, -size)
            deltas.write(conn)
            self._bump("dead_purged", len(rows))
        if rows:
            log.warning("spool: purged %d dead letter(s)", len(rows))
        return len(rows)

    # --- reading ------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    def _item(self, r: Any) -> SpoolItem:
        return _make_item(r[0], r[2], KIND_OF_LANE[r[1]], r[3], json.loads(r[4]), r[5], r[6],
                          r[7], r[0] in self._leases, r[8])

    def get(self, item_id: int) -> SpoolItem | None:
        rows = self._read(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
        return self._item(rows[0]) if rows else None

    def list_items(
        self, limit: int = 100, offset: int = 0, kind: Kind | str | None = None
    ) -> list[SpoolItem]:
        """Items in id (creation) order, whatever their state."""
        where, params = ("", ()) if kind is None else (" WHERE lane = ?", (LANES[Kind(kind)],))
        rows = self._read(
            f"SELECT {_ITEM_COLUMNS} FROM items{where} ORDER BY id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [self._item(r) for r in rows]

    def stats(self) -> SpoolStats:
        """A handful of single-row reads: cheap enough to call every second."""
        now = self._clock()
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN")  # one snapshot for all the reads below
            try:
                lanes, wm = self._lane_rows(conn)
                tail = conn.execute(_TAIL, (wm,)).fetchall()
                counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
                oldest = conn.execute(
                    "SELECT created_at FROM items ORDER BY id LIMIT 1"
                ).fetchone()
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            finally:
                conn.execute("COMMIT")
            in_flight = sum(1 for v in self._leases.values() if v[0] > now)
        depth = {kind.value: 0 for kind in Kind}
        items = nbytes = waiting = dead = dead_bytes = 0
        for lane, n, b, wa in [*lanes, *(t[:4] for t in tail)]:
            if lane == _DEAD_LANE:
                dead, dead_bytes = n, b
                continue
            depth[KIND_OF_LANE[lane].value] += n
            items += n
            nbytes += b
            waiting += wa
        drops = {reason: counters.pop(f"drop:{reason}", 0) for reason in DROP_REASONS}
        return SpoolStats(
            depth=depth,
            items=items,
            bytes=nbytes,
            oldest_age_s=None if oldest is None else max(0.0, now - oldest[0]),
            ready=max(0, items - waiting - in_flight),
            in_flight=in_flight,
            backing_off=waiting,
            dead_letters=dead,
            dead_bytes=dead_bytes,
            drops=drops,
            counters=counters,
            file_bytes=pages * page_size,
            free_disk_bytes=self.free_disk_bytes,
        )

    @staticmethod
    def _lane_rows(conn: sqlite3.Connection) -> tuple[list[Any], int]:
        """(lane, items, bytes, waiting) rows of lane_stats, and the fold watermark."""
        rows = conn.execute("SELECT lane, items, bytes, waiting FROM lane_stats").fetchall()
        wm = next(r[1] for r in rows if r[0] == _WM_LANE)
        return [r for r in rows if r[0] >= _DEAD_LANE], wm

    def _fold(self) -> None:
        """Count the puts since the last fold into ``lane_stats``. Caller holds the lock."""
        with self._txn(durable=False) as conn:
            _, wm = self._lane_rows(conn)
            new_wm = wm
            for lane, n, b, w, top in conn.execute(_TAIL, (wm,)).fetchall():
                conn.execute(_BUMP_LANE, (n, b, w, lane))
                new_wm = max(new_wm, top)
            if new_wm != wm:
                conn.execute("UPDATE lane_stats SET items = ? WHERE lane = ?", (new_wm, _WM_LANE))

    def check_counts(self) -> dict[int, tuple[tuple[int, ...], tuple[int, int, int]]]:
        """Recount ``lane_stats`` the slow way; returns the lanes that disagree."""
        with self._lock:
            self._check_open()
            conn = self._conn
            lanes, wm = self._lane_rows(conn)
            kept = {r[0]: list(r[1:]) for r in lanes}
            for lane, n, b, w, _ in conn.execute(_TAIL, (wm,)).fetchall():
                kept[lane] = [kept[lane][0] + n, kept[lane][1] + b, kept[lane][2] + w]
            real = {lane: (0, 0, 0) for lane in kept}
            for lane, n, b, w in conn.execute(
                "SELECT lane, count(*), coalesce(sum(size), 0), "
                "coalesce(sum(wait_until IS NOT NULL), 0) FROM items GROUP BY lane"
            ):
                real[lane] = (n, b, w)
            n, b = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM dead").fetchone()
            real[_DEAD_LANE] = (n, b, 0)
        return {
            lane: (tuple(kept[lane]), real[lane])
            for lane in kept
            if tuple(kept[lane]) != real[lane]
        }

    # --- caps, degradation, file space --------------------------------------------

    def maintain(self, *, force_disk_check: bool = False, emergency: bool = False) -> None:
        """Enforce the caps and the free-disk threshold, coalesce health, reclaim space.

        Called (rate-limited) from put/ack; cheap when there is nothing to do.
        """
        cfg = self.config
        with self._lock:
            if self._closed:
                return
            mono = time.monotonic()
            self._next_maintenance = mono + cfg.maintenance_interval_s
            disk_deficit = 0
            if cfg.min_free_disk_bytes and (force_disk_check or mono >= self._next_disk_check):
                self._next_disk_check = mono + cfg.disk_check_interval_s
                try:
                    self.free_disk_bytes = shutil.disk_usage(self.path.parent).free
                except OSError as exc:
                    log.warning("spool: cannot read free disk space: %s", exc)
                else:
                    disk_deficit = max(0, cfg.min_free_disk_bytes - self.free_disk_bytes)
            self._fold()
            items, nbytes, health = self._totals()
            goal_items, goal_bytes = items, nbytes
            if items > cfg.max_items:
                goal_items = int(cfg.max_items * cfg.degrade_to)
            if nbytes > cfg.max_bytes:
                goal_bytes = int(cfg.max_bytes * cfg.degrade_to)
            if emergency:
                # A write failed for lack of space: shed a tenth whatever the caps say.
                goal_bytes = min(goal_bytes, int(nbytes * 0.9))
            if disk_deficit:
                # Spool bytes only come back to the filesystem through the
                # vacuum below, at roughly the rate payload bytes are freed.
                goal_bytes = min(goal_bytes, max(0, nbytes - disk_deficit))
                log.warning("spool: free disk %s B below min_free_disk_bytes=%d",
                            self.free_disk_bytes, cfg.min_free_disk_bytes)
            if goal_items < items or goal_bytes < nbytes:
                items, nbytes = self._degrade(items, nbytes, goal_items, goal_bytes)
            elif health > cfg.max_health_items:
                self._coalesce_health()
                items, nbytes, _ = self._totals()
            self._approx_items, self._approx_bytes = items, nbytes
            self._reclaim_space(force=bool(disk_deficit) or emergency)

    def _totals(self) -> tuple[int, int, int]:
        """(items, bytes, health items), exact. Caller holds the lock."""
        lanes, wm = self._lane_rows(self._conn)
        tail = self._conn.execute(_TAIL, (wm,)).fetchall()
        items = nbytes = health = 0
        for lane, n, b, _w in [*lanes, *(t[:4] for t in tail)]:
            if lane < 0:
                continue
            items += n
            nbytes += b
            if lane == 0:
                health += n
        return items, nbytes, health

    def _degrade(
        self, items: int, nbytes: int, goal_items: int, goal_bytes: int
    ) -> tuple[int, int]:
        """Shed load in the documented order until under both goals."""
        log.warning("spool over its caps (%d items, %d B; goal %d items, %d B): degrading",
                    items, nbytes, goal_items, goal_bytes)
        # 1. Images of the oldest detections (plate text and boxes stay). Only
        #    the byte goal benefits.
        dropped = 0
        while nbytes > goal_bytes:
            n = self._drop_images_batch(nbytes - goal_bytes)
            if not n:
                break
            dropped += n
            items, nbytes, _ = self._totals()
        if dropped:
            log.warning("spool: dropped the images of the %d oldest detections", dropped)
        # 2. Old health snapshots: keep the newest few per component.
        if items > goal_items or nbytes > goal_bytes:
            self._coalesce_health()
            items, nbytes, _ = self._totals()
        # 3. The oldest detections themselves.
        dropped = 0
        while items > goal_items or nbytes > goal_bytes:
            oldest = self._conn.execute(
                "SELECT id, size FROM items WHERE lane = ? ORDER BY id LIMIT ?",
                (LANES[Kind.DETECTION], 10 * _DEGRADE_BATCH),
            ).fetchall()
            # Exactly as many as both goals need (not a fixed batch: a few big
            # items may be all that has to go).
            need_items = max(0, items - goal_items)
            excess, need_bytes = nbytes - goal_bytes, 0
            while excess > 0 and need_bytes < len(oldest):
                excess -= oldest[need_bytes][1]
                need_bytes += 1
            victims = [r[0] for r in oldest[: max(need_items, need_bytes)]]
            if not victims:
                break
            n = self._delete_counted(
                f"DELETE FROM items WHERE id IN ({_IDS}) "
                "RETURNING id, lane, size, wait_until IS NOT NULL",
                (_ids_json(victims),),
                DROP_DETECTIONS,
            )
            dropped += n
            items, nbytes, _ = self._totals()
        if dropped:
            log.warning("spool: dropped the %d oldest detections", dropped)
        if items > goal_items or nbytes > goal_bytes:
            log.error("spool still over its caps after degrading (%d items, %d B)",
                      items, nbytes)
        return items, nbytes

    def _delete_counted(self, sql: str, params: tuple[Any, ...], reason: str) -> int:
        with self._txn(durable=False) as conn:
            deltas = _Deltas(conn)
            rows = conn.execute(sql, params).fetchall()
            for item_id, lane, size, waiting in rows:
                deltas.add(lane, -1, -size, -waiting, item_id)
            deltas.write(conn)
            self._bump(f"drop:{reason}", len(rows))
        self._forget_leases(r[0] for r in rows)
        return len(rows)

    def _drop_images_batch(self, excess: int) -> int:
        """Strip the images of the oldest detections until ``excess`` bytes are saved."""
        with self._txn(durable=False) as conn:
            rows = conn.execute(
                "SELECT id, payload, size FROM items WHERE id >= ? AND has_images = 1 "
                "ORDER BY id LIMIT ?",
                (self._images_watermark, _DEGRADE_BATCH),
            ).fetchall()
            deltas = _Deltas(conn)
            updates = []
            for item_id, text, size in rows:
                if excess <= 0:
                    break
                payload = json.loads(text)
                for key in _IMAGE_FIELDS:
                    payload.pop(key, None)
                # Tell the server (and the operator) that there were images.
                payload["images_dropped"] = True
                new = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
                updates.append((new, len(new), item_id))
                deltas.add(LANES[Kind.DETECTION], 0, len(new) - size, 0, item_id)
                excess -= size - len(new)
            conn.executemany(
                "UPDATE items SET payload = ?, size = ?, has_images = 0 WHERE id = ?", updates
            )
            for _, size, item_id in updates:  # ack() relies on the leased size
                lease = self._leases.get(item_id)
                if lease is not None:
                    self._leases[item_id] = (lease[0], lease[1], size)
            deltas.write(conn)
            self._bump(f"drop:{DROP_IMAGES}", len(updates))
        if updates:
            self._images_watermark = updates[-1][2] + 1
        return len(updates)

    def _coalesce_health(self) -> int:
        keep = self.config.health_keep_per_component
        n = self._delete_counted(
            "DELETE FROM items WHERE lane = 0 AND id IN ("
            " SELECT id FROM (SELECT id, row_number() OVER ("
            "  PARTITION BY component ORDER BY id DESC) AS rn FROM items WHERE lane = 0)"
            " WHERE rn > ?) RETURNING id, lane, size, wait_until IS NOT NULL",
            (keep,),
            DROP_HEALTH,
        )
        if n:
            log.warning("spool: coalesced %d old health snapshot(s) (kept the newest %d "
                        "per component)", n, keep)
        return n

    def _reclaim_space(self, *, force: bool = False) -> None:
        conn = self._conn
        free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        if not free_pages or (
            free_pages * page_size < self.config.vacuum_min_free_bytes and not force
        ):
            return
        self._set_sync("NORMAL")
        # incremental_vacuum moves pages from the end of the file into the free
        # slots and truncates; bounded per run to keep put latency low.
        # (executescript: through execute() the pragma frees a single page.)
        conn.executescript(f"PRAGMA incremental_vacuum({_VACUUM_PAGES_PER_RUN});")
        # The file only shrinks when the WAL is checkpointed into it.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        log.info("spool: gave %d free page(s) back to the filesystem",
                 min(free_pages, _VACUUM_PAGES_PER_RUN))

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Close; this instance's leases end with it (the items are ready). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._leases.clear()
            self._conn.close()
            if self._writer_fd is not None:
                os.close(self._writer_fd)  # releases the flock
                self._writer_fd = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ids_json(ids: Iterable[int]) -> str:
    return json.dumps([int(i) for i in ids])


def _split_sql(script: str) -> list[str]:
    """The statements of a script, for running them inside our own transaction."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if not line.strip() or line.strip().startswith("--"):
            continue
        current.append(line)
        joined = "\n".join(current)
        if line.rstrip().endswith(";") and sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements


def _dead_from_row(r: Any) -> DeadLetter:
    return DeadLetter(
        id=r[0], kind=KIND_OF_LANE[r[1]], event_id=r[2], created_at=r[3],
        payload=json.loads(r[4]), attempts=r[5], last_error=r[6], reason=r[7], dead_at=r[8],
    )
