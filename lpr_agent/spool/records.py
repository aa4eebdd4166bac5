"""What the spool hands out: items, dead letters, stats, and the lane layout.

No I/O here: these are the values the other spool modules pass around.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from lpr_agent.protocol import Kind

__all__ = [
    "DROP_REASONS",
    "DeadLetter",
    "Kind",
    "SalvageRecord",
    "SpoolCorruptError",
    "SpoolItem",
    "SpoolStats",
]

# Lease order: lower lane first. Health is small and says whether the camera
# works, so it never waits behind a detection backlog.
LANES: dict[Kind, int] = {Kind.HEALTH: 0, Kind.REGISTRATION: 1, Kind.DETECTION: 2}
KIND_OF_LANE: dict[int, Kind] = {lane: kind for kind, lane in LANES.items()}
# Kinds whose readings carry a per-kind ``seq`` (registrations are not readings).
SEQ_LANES = (LANES[Kind.HEALTH], LANES[Kind.DETECTION])

# Drop reasons (counters ``drop:<reason>``), in degradation order.
DROP_IMAGES = "images_dropped"
DROP_HEALTH = "health_coalesced"
DROP_DETECTIONS = "detections_dropped"
DROP_REASONS = (DROP_IMAGES, DROP_HEALTH, DROP_DETECTIONS)


class SpoolCorruptError(Exception):
    """The spool file failed its integrity check and ``recover=False`` was asked for."""


@dataclass(frozen=True)
class SpoolItem:
    id: int
    event_id: str
    kind: Kind
    created_at: float
    # The JSON text exactly as stored (with ``seq``): what the uplink sends,
    # so a send needs no decode/encode round trip.
    payload_json: str
    attempts: int
    last_error: str | None = None
    # Set while backing off after a nack: the time of the next attempt.
    next_attempt_at: float | None = None
    # Leased by this Spool instance (leases are not visible to other processes).
    leased: bool = False
    size: int = 0

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The stored JSON decoded, on first use (then cached): most sends never need it."""
        return json.loads(self.payload_json)  # type: ignore[no-any-return]


_new_object = object.__new__


def make_item(
    item_id: int, event_id: str, kind: Kind, created_at: float, payload_json: str,
    attempts: int, last_error: str | None, next_attempt_at: float | None, leased: bool,
    size: int,
) -> SpoolItem:
    """``SpoolItem(...)`` at a third of the cost: a frozen dataclass's __init__
    goes through object.__setattr__ per field, which for a lease of 100 items
    costs as much as the SQL. Same object, same immutability afterwards."""
    item = _new_object(SpoolItem)
    item.__dict__.update(
        id=item_id, event_id=event_id, kind=kind, created_at=created_at,
        payload_json=payload_json, attempts=attempts, last_error=last_error,
        next_attempt_at=next_attempt_at, leased=leased, size=size,
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


def dead_from_row(r: Any) -> DeadLetter:
    return DeadLetter(
        id=r[0], kind=KIND_OF_LANE[r[1]], event_id=r[2], created_at=r[3],
        payload=json.loads(r[4]), attempts=r[5], last_error=r[6], reason=r[7], dead_at=r[8],
    )


@dataclass(frozen=True)
class SalvageRecord:
    """A corrupt spool file found at open, and what could be copied out of it."""

    at: float  # when (unix time)
    moved_to: str  # where the corrupt file was moved ("" if it was deleted: over budget)
    recovered: int  # rows copied into the fresh spool (items and dead letters)
    lost: int  # rows known to have been in the file that could not be read (estimate)
    error: str  # what the integrity check said
    acknowledged: bool = False  # an operator ran ``lpr-agent spool ack-salvage``


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
    drops: dict[str, int]  # by reason, since the spool file was created (lifetime totals)
    counters: dict[str, int] = field(default_factory=dict)  # every other event counter
    file_bytes: int = 0  # database pages in use + free (without the WAL)
    free_disk_bytes: int | None = None  # at the last disk check
    # Drops by reason within the last ``drops_window_s`` seconds ([spool]
    # drop_window_s; kept in the file, so a restart does not forget them), and
    # when the last drop of each reason happened (unix time).
    drops_recent: dict[str, int] = field(default_factory=dict)
    drops_window_s: float = 0.0
    last_drop_at: dict[str, float] = field(default_factory=dict)
    # The next ``seq`` each kind of reading will get (detection, health).
    next_seq: dict[str, int] = field(default_factory=dict)
    # Corrupt files salvaged and not yet acknowledged by an operator (newest last).
    salvages: list[SalvageRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
