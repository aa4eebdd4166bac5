"""Query-string parameters of the record lists, checked: ``RecordQuery`` or 400.

Caps bound what one request can make the stub build in memory: at most
``MAX_LIMIT`` records per page, ``MAX_LIMIT_IMAGES`` when images are inlined
(a detection with its images can be a megabyte). Larger sets are read page
by page with the cursor.
"""

from __future__ import annotations

from collections.abc import Mapping

from server_stub.codec import normalise_plate, utc_of
from server_stub.queries import RecordQuery
from server_stub.service import BadRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_LIMIT_IMAGES = 100
MAX_CURSOR = 2**63 - 1


def list_query(params: Mapping[str, str], detections: bool = True) -> RecordQuery:
    """``detections``: the parameters of /api/records (images, plate), else of
    /api/health_records."""
    if not detections and ("plate" in params or "images" in params):
        raise BadRequest("plate and images apply to /api/records only")
    images = params.get("images", "0").lower() in ("1", "true", "yes")
    cap = MAX_LIMIT_IMAGES if images else MAX_LIMIT
    limit = _int(params, "limit", DEFAULT_LIMIT, 0, cap) or 0
    after = _int(params, "after", None, 0, MAX_CURSOR)
    before = _int(params, "before", None, 0, MAX_CURSOR)
    if after is not None and before is not None:
        raise BadRequest("give either after or before, not both")
    plate = None
    if "plate" in params:
        plate = normalise_plate(params["plate"])
        if not plate:
            raise BadRequest("plate must contain at least one letter or digit")
    return RecordQuery(
        limit=limit,
        camera_id=params.get("camera_id"),
        checkpoint_id=params.get("checkpoint_id"),
        plate=plate,
        since=_time(params, "since"),
        until=_time(params, "until"),
        after=after,
        before=before,
        images=images,
    )


def _int(
    params: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        detail = " with images=1" if name == "limit" and high == MAX_LIMIT_IMAGES else ""
        raise BadRequest(f"{name} must be between {low} and {high}{detail}")
    return value


def _time(params: Mapping[str, str], name: str) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    value = utc_of(raw)
    if value is None:
        raise BadRequest(f"{name} must be an ISO 8601 time, e.g. 2024-12-19T10:00:00Z")
    return value
