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

``lane_stats`` (items, bytes, waiting per lane; lane -1 = dead letters), ``seqs`` and
``counters`` are updated in the same transaction as every change, once per
statement rather than per row, so ``stats()`` reads a handful of rows instead
of counting. Puts are the exception, because a durable put must stay one
INSERT: items with ``id`` above the watermark (``lane_stats`` row -2, column
``items``) are not in ``lane_stats`` yet; readers add that short tail (a rowid
range scan), and ``maintain()`` folds it in about once a second. Every other
change adjusts ``lane_stats`` only for rows at or below the watermark, and a
transaction that deletes a row above it folds first (so ``seqs``, written by
the fold, covers every row that is gone). ``seqs``, ``drop_events`` and
``salvages`` came with version 2; ``CREATE TABLE IF NOT EXISTS`` adds them to a
version 1 file at open.
"""

from __future__ import annotations

APPLICATION_ID = 0x4C505253  # "LPRS": marks a file as an lpr-agent spool
SCHEMA_VERSION = 2  # 2: seqs, drop_events, salvages (added by CREATE IF NOT EXISTS)

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

-- Highest ``seq`` put per reading lane, at or below the fold watermark (see
-- ledger.next_seqs); rows above it carry theirs in the payload.
CREATE TABLE IF NOT EXISTS seqs (
    lane INTEGER PRIMARY KEY,
    last INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO seqs(lane) VALUES (0), (2);

-- One row per degradation step that dropped something, kept for
-- ``drop_window_s``: what stats().drops_recent counts.
CREATE TABLE IF NOT EXISTS drop_events (
    at     REAL    NOT NULL,
    reason TEXT    NOT NULL,
    n      INTEGER NOT NULL
);

-- Corrupt files found at open and what was copied out of them; health
-- reports an error while one is not acknowledged.
CREATE TABLE IF NOT EXISTS salvages (
    id           INTEGER PRIMARY KEY,
    at           REAL    NOT NULL,
    moved_to     TEXT    NOT NULL,
    recovered    INTEGER NOT NULL,
    lost         INTEGER NOT NULL,
    error        TEXT    NOT NULL,
    acknowledged REAL
);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
) WITHOUT ROWID;
"""
