"""The spool's SQLite schema.

One table ``items`` holds everything not yet acknowledged. An item is either

* ready (or leased: leases live in the memory of the Spool that took them):
  ``wait_until IS NULL``, partial index ``items_ready(lane, id)``;
* backing off after a nack: ``wait_until`` = next attempt, partial index
  ``items_waiting(wait_until)``.

So making due rows ready again is an index range scan, and ``lease`` reads the
ready index in order: no sort, no scan over waiting rows, whatever the depth.

``lane`` is the lease order (0 health, 1 registration, 2 detection). ``id``
is assigned by the ``Spool`` from blocks of ids reserved in ``lane_stats``
row -3 (column ``items`` = first id not reserved yet), not SQLite's
max(rowid)+1, so an id is never reused: a late ack of an item that was dropped
meanwhile must not delete a newer item that got the same id. (AUTOINCREMENT
would do the same at the price of one more page written per put; a block
costs one small write per 1000 puts.) Only one ``Spool`` at a time puts into
a file (an flock on ``<file>.writer``), so ids are committed in increasing
order, which the fold below relies on.

``lane_stats`` (items, bytes, waiting per lane; lane -1 = dead letters) and
``counters`` are updated in the same transaction as every change, once per
statement rather than per row, so ``stats()`` reads a handful of rows instead
of counting. Puts are the exception, because a durable put must stay one
INSERT: items with ``id`` above the watermark (``lane_stats`` row -2, column
``items``) are not in ``lane_stats`` yet; readers add that short tail (a rowid
range scan), and ``maintain()`` folds it in about once a second. Every other
change adjusts ``lane_stats`` only for rows at or below the watermark.
"""

from __future__ import annotations

APPLICATION_ID = 0x4C505253  # "LPRS": marks a file as an lpr-agent spool
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id          INTEGER PRIMARY KEY,
    lane        INTEGER NOT NULL,
    event_id    TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    payload     TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    component   TEXT,
    has_images  INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    wait_until  REAL
);
CREATE INDEX IF NOT EXISTS items_ready ON items(lane, id) WHERE wait_until IS NULL;
CREATE INDEX IF NOT EXISTS items_waiting ON items(wait_until) WHERE wait_until IS NOT NULL;

CREATE TABLE IF NOT EXISTS dead (
    id          INTEGER PRIMARY KEY,
    lane        INTEGER NOT NULL,
    event_id    TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    payload     TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    component   TEXT,
    has_images  INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    reason      TEXT    NOT NULL,
    dead_at     REAL    NOT NULL
);

CREATE TABLE IF NOT EXISTS lane_stats (
    lane    INTEGER PRIMARY KEY,
    items   INTEGER NOT NULL DEFAULT 0,
    bytes   INTEGER NOT NULL DEFAULT 0,
    waiting INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO lane_stats(lane) VALUES (0), (1), (2), (-1), (-2), (-3);

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
) WITHOUT ROWID;
"""
