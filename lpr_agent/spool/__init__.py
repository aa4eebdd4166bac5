"""Durable local SQLite spool between the detector and the uplink.

Promise: a reading, once ``put`` returned, stays in the file until the server
acknowledged it (``ack``), an operator purged it as a dead letter, or the
spool shed it to stay within its caps or the disk (counted, never silent).

Parts (each module one job; ``spool.Spool`` is the façade):

* ``file``        create 0600/0700, connect (WAL), quick_check, move a corrupt
                  file aside, prune old copies, the writer flock
* ``salvage``     copy the readable rows of a corrupt file into the fresh one
* ``ledger``      ids, per-lane counts, per-kind ``seq`` high-water, counters
* ``core``        shared state, the lock, transactions, id/seq hand-out
* ``writer``      put / put_many
* ``reader``      lease, get/list, stats (own read connection)
* ``leases``      in-memory leases behind their own small lock
* ``acks``        ack, release, nack (backoff), dead letters
* ``maintenance`` caps, degradation, disk pressure, vacuum
* ``records``     SpoolItem, DeadLetter, SpoolStats, SalvageRecord (no I/O)

Invariants (tests in ``tests/spool`` check each):

1. Durability: with ``synchronous=FULL`` every commit that makes a put, ack,
   nack or dead letter visible is fsynced before the call returns. Every
   durable commit sets the connection's sync level itself, right before it
   commits: non-durable transactions (id blocks, making due items ready,
   degradation, vacuum) leave it at NORMAL. (Issue 10: the first put of each
   id block used to commit under NORMAL.)
2. Ids: increasing in commit order, never reused (blocks of ``ID_BLOCK`` ids
   reserved in ``lane_stats`` row -3; one producer per file, an ``flock`` on
   ``<file>.writer``), so a late ack can never delete a newer item.
3. Counts: ``lane_stats`` holds exact per-lane counts of every row at or below
   the fold watermark (row -2); rows above it are the tail of recent puts,
   which readers add (a rowid range scan) and ``maintain`` folds in. A put
   stays one INSERT.
4. Rows leave ``items`` (ack, dead letter, degradation) only at or below the
   watermark: a transaction that deletes a row above it folds first.
5. ``seq``: detections and health get a per-kind number, 1, 2, 3, ... in put
   order, written into the stored JSON in the same INSERT. ``seqs`` holds the
   highest ``seq`` at or below the watermark; by (4) every row above it is
   still in the table, so ``max(seqs, tail)`` + 1 is the next number, across
   restarts, without a second write per put. A reading dropped by degradation
   leaves a gap the server can see; with ``synchronous=NORMAL`` a power cut
   can take back the last puts, and their numbers are handed out again.
6. Leases live in the memory of the ``Spool`` that took them: one consumer per
   file; a dead process's leases die with it.
7. A corrupt file is never used and never deleted unread: it is moved aside,
   its readable rows copied into a fresh file (``salvage``), the loss counted
   and reported until acknowledged; old copies are kept within a budget.

Importing this package is cheap: the names below load their modules on first
use (``lpr_agent.spool.config`` must not pull in sqlite_utils, which imports
numpy, because the config loader imports it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lpr_agent.spool.config import SpoolConfig
    from lpr_agent.spool.records import (
        DROP_REASONS,
        DeadLetter,
        Kind,
        SalvageRecord,
        SpoolCorruptError,
        SpoolItem,
        SpoolStats,
    )
    from lpr_agent.spool.spool import Spool

_WHERE = {
    "DROP_REASONS": "records",
    "DeadLetter": "records",
    "Kind": "records",
    "SalvageRecord": "records",
    "Spool": "spool",
    "SpoolConfig": "config",
    "SpoolCorruptError": "records",
    "SpoolItem": "records",
    "SpoolStats": "records",
}

__all__ = [
    "DROP_REASONS",
    "DeadLetter",
    "Kind",
    "SalvageRecord",
    "Spool",
    "SpoolConfig",
    "SpoolCorruptError",
    "SpoolItem",
    "SpoolStats",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
