"""Values as the stub stores them: ids, clock readings, images, text columns.

Pure functions with no I/O, shared by the storage writer and the service's
validation (which decodes each image once and hands the bytes on).
"""

from __future__ import annotations

import binascii
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

IMAGE_FIELDS = ("annotated_image", "cropped_plates")
IMAGE_SLOTS = 1024  # images per record: the annotated frame + up to 1023 crops


def time_ordered_uuid() -> str:
    """A UUIDv7-style id (RFC 9562 layout): unix ms first, then random bits.

    Consecutive ids sort together, so the unique index on them grows at its
    end instead of dirtying a random page per message. Still an ordinary
    UUID string for clients.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    # Formatted directly: building a uuid.UUID only to str() it costs more
    # than the rest of this function (one id per stored message).
    hex_ = (
        f"{ms & 0xFFFF_FFFF_FFFF:012x}7{(rand >> 64) & 0xFFF:03x}"
        f"{0x8000_0000_0000_0000 | (rand & 0x3FFF_FFFF_FFFF_FFFF):016x}"
    )
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def utc_of(value: Any) -> str | None:
    """A timestamp normalised to UTC ISO 8601 with ms (sortable as text), or None.

    A timestamp without an offset is taken as UTC (legacy mode stores those).
    """
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError):  # year 1 minus an offset, and the like
        return None


MAX_PLATES_INDEXED = 16  # per record: more OCR lines than this are junk, not plates


def normalise_plate(text: Any) -> str:
    """Plate text as searched: upper case, letters and digits only ("" if none)."""
    if not isinstance(text, str):
        return ""
    return "".join(ch for ch in text[:64].upper() if ch.isalnum())


def plate_keys(ocr_results: Any) -> list[str]:
    """The distinct searchable plate texts of a record's ``ocr_results``."""
    if not isinstance(ocr_results, list):
        return []
    keys = {normalise_plate(t) for t in ocr_results[:MAX_PLATES_INDEXED]}
    keys.discard("")
    return sorted(keys)


def valid_seq(value: Any) -> int:
    """The camera's ``seq`` if it is a usable one (int 1..2^53), else 0 ("none").

    The default mode has validated it already; legacy mode stores raw input.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**53:
        return value
    return 0


class DecodedImage:
    """An image the validator has already decoded, so that storing it does not
    decode it a second time (a plate crop takes as long to decode as to store)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def predecode_image(value: Any) -> DecodedImage | None:
    """``value`` decoded if it is a well-formed base64 image, else None.

    None leaves the value for the validator to judge (and word the error):
    only images that would pass validation are decoded here.
    """
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("data:"):
        _, comma, payload = value.partition(",")
        if not comma:
            return None
    else:
        payload = value
    try:
        return DecodedImage(binascii.a2b_base64(payload, strict_mode=True))
    except (binascii.Error, ValueError):
        return None


def decode_image(value: Any) -> bytes | None:
    """Base64 (optionally a ``data:`` URL) → bytes; keep undecodable text as-is.

    The legacy mode does not validate images, so whatever arrives is kept
    rather than lost.
    """
    if isinstance(value, DecodedImage):
        return value.data
    if not isinstance(value, str) or not value:
        return None
    payload = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        return value.encode("utf-8", "replace")


def safe_int(value: Any) -> int:
    """Counts from unvalidated (legacy) payloads: never let a bad one fail the insert."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**63:
        return int(value)
    return 0


def text_of(value: Any) -> str:
    """A TEXT column value from anything a client sent (legacy mode stores raw input)."""
    if not isinstance(value, str):
        return dumps(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can carry lone surrogates ("\ud800"), which SQLite cannot bind.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


# default=str: legacy payloads are unvalidated; never fail a store on them.
# One encoder for all calls: json.dumps(...) with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def predecode_images(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what to validate, what to store) for a detection: two copies of ``data``.

    Validating a base64 image means decoding it, and storing it means decoding
    it again; so each image that decodes cleanly is decoded once, here: the
    copy to store carries the bytes, the copy to validate an empty string
    (which passes where the image would). An image that does not decode stays
    in both, for the validator to reject with its usual message.
    """
    probe = dict(data)
    stored = dict(data)
    annotated = predecode_image(data.get("annotated_image"))
    if annotated is not None:
        probe["annotated_image"] = ""
        stored["annotated_image"] = annotated
    crops = data.get("cropped_plates")
    if isinstance(crops, list) and crops:
        probe_crops: list[Any] = []
        stored_crops: list[Any] = []
        for crop in crops:
            decoded = predecode_image(crop)
            probe_crops.append(crop if decoded is None else "")
            stored_crops.append(crop if decoded is None else decoded)
        probe["cropped_plates"] = probe_crops
        stored["cropped_plates"] = stored_crops
    return probe, stored
