"""Exact order checks shared by the uplink tests and the daemon soak.

Two orders exist at an extension server (the stub):

* **arrival** (``stub.records()``): the order messages were stored in. After a
  temporary failure the agent goes stop-and-wait, so a reading that never
  failed is never overtaken, and readings that failed are resent in creation
  order. Only readings already in flight when a failure came back (which the
  client cannot recall) may arrive before an older, failed one.
* **creation** (``stub.records(camera_id=...)``): listed by the reading's
  ``seq``, which restores creation order exactly, whatever the arrival order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# The uplink's DEBUG line for every outcome that is not an ack (applier.py).
FAILED_LINE = re.compile(
    r"uplink: (?:release|nack|dead_letter) ([0-9a-f-]{36}) over \w+: (\w+)")


def retried_event_ids(lines: Iterable[str]) -> set[str]:
    """event_ids whose first failure was a temporary server error (5xx): not
    stored then, so stored only by a resend. (A reading whose first failure
    was a dead link may have been stored already, at its place in the order,
    whatever its resends are answered.)"""
    first: dict[str, str] = {}
    for line in lines:
        m = FAILED_LINE.search(line)
        if m:
            first.setdefault(m.group(1), m.group(2))
    return {e for e, verdict in first.items() if verdict == "retry"}


def first_difference(expected: list[str], got: list[str]) -> str:
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"order differs at #{i} of {len(expected)}: expected {a}, got {b}"
    return f"lengths differ: expected {len(expected)}, got {len(got)}"


def assert_listing_in_creation_order(listed: list[dict[str, Any]], created: list[str]) -> None:
    """The camera's listing (by ``seq``) is exactly the creation order, and the
    ``seq`` values are gap-free and increasing."""
    got = [r.get("event_id") for r in listed]
    assert got == created, first_difference(created, got)
    seqs = [r.get("seq") for r in listed]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"seq not gap-free: {seqs[:10]}"


def assert_arrival_stop_and_wait(arrived: list[str], created: list[str],
                                 retried: set[str]) -> None:
    """Arrival order as stop-and-wait guarantees it, exactly: readings that
    never failed arrive in creation order among themselves, readings that
    failed arrive in creation order among themselves, and a reading that
    never failed is overtaken by nothing."""
    position = {e: i for i, e in enumerate(created)}
    clean = [e for e in arrived if e not in retried]
    clean_created = [e for e in created if e not in retried]
    assert clean == clean_created, "never-failed readings: " + first_difference(
        clean_created, clean)
    failed = [position[e] for e in arrived if e in retried]
    assert failed == sorted(failed), f"failed readings out of order (creation #): {failed}"
    # Nothing overtakes a reading that never failed: everything that arrived
    # before it is older.
    newest = -1
    for k, e in enumerate(arrived):
        p = position[e]
        assert e in retried or p > newest, (
            f"reading #{p} (never failed) arrived #{k}, after younger reading #{newest}")
        newest = max(newest, p)
