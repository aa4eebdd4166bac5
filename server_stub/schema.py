"""The stub's SQLite schema, its indexes, and the upgrade of older files.

Every list filter of ``/api/records`` is served by an index (the tests assert
it with ``EXPLAIN QUERY PLAN``), and idempotency is answered by a UNIQUE
index on ``event_id`` per kind, so nothing grows in memory with the data and
several stub processes can share one file (WAL) without storing an event
twice.

Column meanings: ``arrival_seq`` is the order of arrival at this stub
(strictly increasing, the rowid); ``seq`` is the camera's own per-kind
sequence number (protocol extension), 0 when the client sent none (deployed
clients do not); ``at`` is ``timestamp`` normalised to UTC (NULL if it does
not parse), for time-range filters.
"""

from __future__ import annotations

import json
import logging
import sqlite3

from server_stub.codec import plate_keys, utc_of

log = logging.getLogger(__name__)

VERSION = 2

TABLES = """
CREATE TABLE IF NOT EXISTS records (
    arrival_seq INTEGER PRIMARY KEY,
    detection_id TEXT NOT NULL,
    event_id TEXT,
    seq INTEGER NOT NULL DEFAULT 0,
    camera_id TEXT, checkpoint_id TEXT, timestamp TEXT, at TEXT,
    received_at TEXT, channel TEXT,
    vehicles_count INTEGER, plates_count INTEGER, ocr_results TEXT, payload TEXT,
    has_annotated INTEGER, crops INTEGER
);
-- id = records.arrival_seq * IMAGE_SLOTS + slot (0: annotated, 1+n: crop n),
-- so an image is found by its rowid, without an index of its own.
CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, data BLOB);
-- One row per plate text of a record (normalised: upper case, letters and
-- digits only), so that a plate prefix search is an index range.
CREATE TABLE IF NOT EXISTS plates (
    plate TEXT NOT NULL, arrival_seq INTEGER NOT NULL, PRIMARY KEY (plate, arrival_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (
    arrival_seq INTEGER PRIMARY KEY,
    health_id TEXT NOT NULL,
    event_id TEXT,
    seq INTEGER NOT NULL DEFAULT 0,
    camera_id TEXT, checkpoint_id TEXT, timestamp TEXT, at TEXT,
    received_at TEXT, channel TEXT, component TEXT, status TEXT, message TEXT, payload TEXT
);
-- One row per camera: its registration and a summary kept up to date in the
-- same transaction as each stored message (so /api/cameras reads no records).
CREATE TABLE IF NOT EXISTS cameras (
    camera_id TEXT PRIMARY KEY,
    checkpoint_id TEXT,
    registered_at TEXT,
    registered_via TEXT,
    last_seen TEXT,
    detection_count INTEGER NOT NULL DEFAULT 0,
    health_status TEXT NOT NULL DEFAULT 'unknown',
    health_component TEXT,
    health_message TEXT,
    detection_last_seq INTEGER NOT NULL DEFAULT 0,
    detection_seqs INTEGER NOT NULL DEFAULT 0,
    health_last_seq INTEGER NOT NULL DEFAULT 0,
    health_seqs INTEGER NOT NULL DEFAULT 0
);
"""

INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS records_detection_id ON records (detection_id);
CREATE UNIQUE INDEX IF NOT EXISTS records_event_id ON records (event_id);
CREATE INDEX IF NOT EXISTS records_camera ON records (camera_id, seq, arrival_seq);
CREATE INDEX IF NOT EXISTS records_checkpoint ON records (checkpoint_id, arrival_seq);
CREATE INDEX IF NOT EXISTS records_at ON records (at, arrival_seq);
CREATE UNIQUE INDEX IF NOT EXISTS health_event_id ON health (event_id);
CREATE INDEX IF NOT EXISTS health_camera ON health (camera_id, seq, arrival_seq);
CREATE INDEX IF NOT EXISTS health_checkpoint ON health (checkpoint_id, arrival_seq);
CREATE INDEX IF NOT EXISTS health_at ON health (at, arrival_seq);
"""


def ensure(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema (one transaction, idempotent)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_records = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'"
        ).fetchone()
        if has_records and version < VERSION:
            _upgrade_v1(conn)
        for statement in _statements(TABLES + INDEXES):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _upgrade_v1(conn: sqlite3.Connection) -> None:
    """A file of the first stub: ``seq`` meant arrival order, no summary table.

    Renames ``seq`` to ``arrival_seq``, adds the new columns, fills the plate
    and camera tables, and keeps only the first row of each ``event_id`` in
    the (now unique) index column: later copies were stored by legacy mode,
    which keeps every send.
    """
    log.info("upgrading the stub database to schema version %d", VERSION)
    conn.execute("DROP INDEX IF EXISTS idx_records_detection_id")  # now records_detection_id
    for table in ("records", "health"):
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN seq TO arrival_seq")
        conn.execute(f"ALTER TABLE {table} ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"ALTER TABLE {table} ADD COLUMN at TEXT")
        conn.execute(
            f"UPDATE {table} SET event_id = NULL WHERE event_id IS NOT NULL AND arrival_seq > "
            f"(SELECT MIN(arrival_seq) FROM {table} t WHERE t.event_id = {table}.event_id)"
        )
    registrations = conn.execute(
        "SELECT camera_id, checkpoint_id, registered_at, registered_via FROM cameras"
    ).fetchall()
    conn.execute("DROP TABLE cameras")
    for statement in _statements(TABLES):
        conn.execute(statement)
    _fill_derived(conn)
    conn.executemany(
        "INSERT INTO cameras (camera_id, checkpoint_id, registered_at, registered_via, last_seen) "
        "VALUES (?,?,?,?,?)",
        [(*row, row[2]) for row in registrations],
    )
    # Counts and latest health from the stored messages (bare columns come
    # from the row holding MAX(arrival_seq)).
    conn.execute(
        "INSERT INTO cameras (camera_id, checkpoint_id, last_seen, detection_count) "
        "SELECT camera_id, checkpoint_id, MAX(received_at), COUNT(*) FROM records "
        "GROUP BY camera_id ON CONFLICT(camera_id) DO UPDATE SET "
        "detection_count = excluded.detection_count, "
        "last_seen = MAX(IFNULL(last_seen, ''), excluded.last_seen)"
    )
    conn.execute(
        "INSERT INTO cameras (camera_id, checkpoint_id, last_seen, health_status, "
        "health_component, health_message) "
        "SELECT camera_id, checkpoint_id, received_at, status, component, message FROM "
        "(SELECT *, MAX(arrival_seq) FROM health GROUP BY camera_id) WHERE true "
        "ON CONFLICT(camera_id) DO UPDATE SET health_status = excluded.health_status, "
        "health_component = excluded.health_component, "
        "health_message = excluded.health_message, "
        "last_seen = MAX(IFNULL(last_seen, ''), excluded.last_seen)"
    )


def _fill_derived(conn: sqlite3.Connection) -> None:
    """``at`` of both tables and the plate rows, computed as new writes do."""
    for table in ("records", "health"):
        rows = conn.execute(f"SELECT arrival_seq, timestamp FROM {table}").fetchall()
        conn.executemany(
            f"UPDATE {table} SET at = ? WHERE arrival_seq = ?",
            [(utc_of(ts), arrival) for arrival, ts in rows],
        )
    plates = []
    for arrival, ocr in conn.execute("SELECT arrival_seq, ocr_results FROM records").fetchall():
        try:
            texts = json.loads(ocr or "[]")
        except ValueError:
            continue
        plates += [(key, arrival) for key in plate_keys(texts)]
    conn.executemany("INSERT OR IGNORE INTO plates VALUES (?, ?)", plates)
