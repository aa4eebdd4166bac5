"""SQLite persistence of the stub: detections, health messages, cameras, images.

Schema and read queries go through sqlite-utils. The two hot inserts
(detection, health) use prepared SQL on the same connection because
sqlite-utils' ``insert`` re-derives the statement (and inspects the table) on
every call, which costs more than the write itself at thousands of messages
per second.

Durability: WAL with ``synchronous=OFF``; messages that arrive together
are committed together (group commit, see ``write_batch``), and a message is
answered only after its commit. A committed WAL transaction survives a SIGKILL
of the stub (it is in the OS page cache); only a power loss or kernel crash
could lose the last few, which no test of this project simulates.

Images are stored decoded, as BLOBs in their own table, so listing records
never reads them; the list gives URLs to fetch them one by one.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

log = logging.getLogger(__name__)

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


def _safe_int(value: Any) -> int:
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
        return _dumps(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can carry lone surrogates ("\ud800"), which SQLite cannot bind.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


# default=str: legacy payloads are unvalidated; never fail a store on them.
# One encoder for all calls: json.dumps(...) with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


class Kind:
    DETECTION = "detection"
    HEALTH = "health"


# (kind, message, channel, de-duplicate by event_id)
WriteItem = tuple[str, dict[str, Any], str, bool]


@dataclass(frozen=True)
class Stored:
    """Outcome of storing one message."""

    id: str  # detection_id / health_id
    seq: int
    received_at: str
    duplicate: bool = False


class Storage:
    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (group commit).
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # synchronous=OFF: a commit is in the OS page cache when it returns,
        # which survives a SIGKILL of the stub (the failure its tests make);
        # only a kernel crash or power loss could lose it. NORMAL would add an
        # fsync at every WAL checkpoint, stalling the event loop under load.
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.db = sqlite_utils.Database(self.conn)
        self._create_schema()
        self._cameras: dict[str, dict[str, Any]] = {}
        self._load_cameras()
        # event_id -> its first stored message, for de-duplication without an
        # index or a SELECT per message (~250 bytes each: fine for a test server).
        self._pending_ids: list[tuple[str, str]] = []
        self._event_ids: dict[str, dict[str, Stored]] = {
            Kind.DETECTION: self._load_event_ids("records", "detection_id"),
            Kind.HEALTH: self._load_event_ids("health", "health_id"),
        }

    def _load_event_ids(self, table: str, id_column: str) -> dict[str, Stored]:
        known: dict[str, Stored] = {}
        rows = self.conn.execute(
            f"SELECT event_id, {id_column}, seq, received_at FROM {table} "
            "WHERE event_id IS NOT NULL ORDER BY seq"
        )
        for event_id, message_id, seq, received_at in rows:
            known.setdefault(event_id, Stored(message_id, seq, received_at, duplicate=True))
        return known

    # --- schema -------------------------------------------------------------------

    def _create_schema(self) -> None:
        # Few indexes on purpose: every index is one more page written per
        # message. Lists filter by a scan (fast at test sizes); only the
        # de-duplication and image look-ups need an index.
        db = self.db
        if "records" not in db.table_names():
            db["records"].create(
                {
                    "seq": int,
                    "detection_id": str,
                    "event_id": str,
                    "camera_id": str,
                    "checkpoint_id": str,
                    "timestamp": str,
                    "received_at": str,
                    "channel": str,
                    "vehicles_count": int,
                    "plates_count": int,
                    "ocr_results": str,
                    "payload": str,
                    "has_annotated": int,
                    "crops": int,
                },
                pk="seq",
            )
            db["records"].create_index(["detection_id"], unique=True)
        if "images" not in db.table_names():
            # id = records.seq * IMAGE_SLOTS + slot (0: annotated, 1+n: crop n),
            # so an image is found by its rowid, without an index of its own.
            db["images"].create({"id": int, "data": bytes}, pk="id")
        if "health" not in db.table_names():
            db["health"].create(
                {
                    "seq": int,
                    "health_id": str,
                    "event_id": str,
                    "camera_id": str,
                    "checkpoint_id": str,
                    "timestamp": str,
                    "received_at": str,
                    "channel": str,
                    "component": str,
                    "status": str,
                    "message": str,
                    "payload": str,
                },
                pk="seq",
            )
        if "cameras" not in db.table_names():
            # Registrations only; counts, last-seen and health are derived
            # from records/health (at start-up) and then kept in memory.
            db["cameras"].create(
                {
                    "camera_id": str,
                    "checkpoint_id": str,
                    "registered_at": str,
                    "registered_via": str,
                },
                pk="camera_id",
            )

    def _load_cameras(self) -> None:
        q = self.conn.execute
        for cam, chk, registered_at, via in q(
            "SELECT camera_id, checkpoint_id, registered_at, registered_via FROM cameras"
        ):
            self._camera(cam, chk).update(registered_at=registered_at, registered_via=via)
        # SQLite takes the bare columns from the row that has MAX(seq).
        for cam, chk, count, _seq, received_at in q(
            "SELECT camera_id, checkpoint_id, COUNT(*), MAX(seq), received_at FROM records "
            "GROUP BY camera_id"
        ):
            state = self._camera(cam, chk)
            state["detection_count"] = count
            state["last_seen"] = max(state["last_seen"] or "", received_at)
        for cam, chk, status, component, message, _seq, received_at in q(
            "SELECT camera_id, checkpoint_id, status, component, message, MAX(seq), received_at "
            "FROM health GROUP BY camera_id"
        ):
            state = self._camera(cam, chk)
            state.update(health_status=status, health_component=component, health_message=message)
            state["last_seen"] = max(state["last_seen"] or "", received_at)

    def _camera(self, camera_id: str, checkpoint_id: str) -> dict[str, Any]:
        state = self._cameras.get(camera_id)
        if state is None:
            state = {
                "camera_id": camera_id,
                "checkpoint_id": checkpoint_id,
                "registered_at": None,
                "registered_via": None,
                "last_seen": None,
                "detection_count": 0,
                "health_status": "unknown",
                "health_component": None,
                "health_message": None,
            }
            self._cameras[camera_id] = state
        return state

    # --- writes -------------------------------------------------------------------

    def find_detection(self, event_id: str) -> Stored | None:
        """The first stored detection with this ``event_id`` (``duplicate=True``)."""
        return self._event_ids[Kind.DETECTION].get(event_id)

    def find_health(self, event_id: str) -> Stored | None:
        return self._event_ids[Kind.HEALTH].get(event_id)

    def add_detection(self, data: dict[str, Any], channel: str) -> Stored:
        """Store one detection (already validated, or raw in legacy mode)."""
        return self._single(Kind.DETECTION, data, channel)

    def add_health(self, data: dict[str, Any], channel: str) -> Stored:
        return self._single(Kind.HEALTH, data, channel)

    def _single(self, kind: str, data: dict[str, Any], channel: str) -> Stored:
        result = self.write_batch([(kind, data, channel, False)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def write_batch(self, items: list[WriteItem]) -> list[Stored | Exception]:
        """Store many messages in one transaction (group commit).

        Each item is ``(kind, data, channel, dedup)``; with ``dedup`` a message
        whose ``event_id`` is already stored (earlier, or earlier in this very
        batch: the SELECT sees the transaction's own rows) is not stored again
        and the original id comes back with ``duplicate=True``. If the batch
        fails as a whole, it is retried item by item so that one bad message
        fails alone.
        """
        conn = self.conn
        self._pending_ids = []
        conn.execute("BEGIN")
        try:
            # One clock reading per transaction: its messages are received
            # (committed) together, and the reading is not free at this rate.
            now = utc_now()
            results: list[Stored | Exception] = [self._write(*item, now) for item in items]
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            self._forget_pending()
        else:
            for item, result in zip(items, results, strict=True):
                self._after_commit(item, result)
            return results
        results = []
        for item in items:
            self._pending_ids = []
            conn.execute("BEGIN")
            try:
                result: Stored | Exception = self._write(*item, utc_now())
                conn.execute("COMMIT")
                self._after_commit(item, result)
            except Exception as exc:
                conn.execute("ROLLBACK")
                self._forget_pending()
                log.exception("storing a %s failed", item[0])
                result = exc
            results.append(result)
        return results

    def _forget_pending(self) -> None:
        """A rolled-back transaction: its event_ids were not stored after all."""
        for kind, event_id in self._pending_ids:
            self._event_ids[kind].pop(event_id, None)
        self._pending_ids = []

    def _after_commit(self, item: WriteItem, result: Stored | Exception) -> None:
        """Keep the in-memory camera summary in step with what was committed."""
        if not isinstance(result, Stored) or result.duplicate:
            return
        kind, data, _channel, _dedup = item
        state = self._camera(text_of(data.get("camera_id")), text_of(data.get("checkpoint_id")))
        state["last_seen"] = result.received_at
        if kind == Kind.DETECTION:
            state["detection_count"] += 1
        else:
            state["health_status"] = text_of(data.get("status"))
            state["health_component"] = text_of(data.get("component"))
            state["health_message"] = text_of(data.get("message", ""))

    def _write(
        self, kind: str, data: dict[str, Any], channel: str, dedup: bool, received_at: str
    ) -> Stored:
        event_id = data.get("event_id")
        known = self._event_ids[kind]
        if dedup and isinstance(event_id, str):
            found = known.get(event_id)
            if found is not None:
                return found
        if kind == Kind.DETECTION:
            stored = self._insert_detection(data, channel, received_at)
        else:
            stored = self._insert_health(data, channel, received_at)
        if isinstance(event_id, str) and event_id not in known:
            self._pending_ids.append((kind, event_id))
            known[event_id] = Stored(stored.id, stored.seq, stored.received_at, duplicate=True)
        return stored

    def _insert_detection(self, data: dict[str, Any], channel: str, received_at: str) -> Stored:
        detection_id = time_ordered_uuid()
        payload = {k: v for k, v in data.items() if k not in IMAGE_FIELDS}
        annotated = decode_image(data.get("annotated_image"))
        crops_raw = data.get("cropped_plates")
        crops = [decode_image(c) for c in crops_raw] if isinstance(crops_raw, list) else []
        crops = crops[: IMAGE_SLOTS - 1]
        camera_id = text_of(data.get("camera_id"))
        checkpoint_id = text_of(data.get("checkpoint_id"))
        event_id = data.get("event_id")
        conn = self.conn
        cur = conn.execute(
            "INSERT INTO records (detection_id, event_id, camera_id, checkpoint_id, "
            "timestamp, received_at, channel, vehicles_count, plates_count, ocr_results, "
            "payload, has_annotated, crops) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                detection_id,
                event_id if isinstance(event_id, str) else None,
                camera_id,
                checkpoint_id,
                text_of(data.get("timestamp")),
                received_at,
                channel,
                _safe_int(data.get("vehicles_count", 0)),
                _safe_int(data.get("plates_count", 0)),
                _dumps(data.get("ocr_results", [])),
                _dumps(payload),
                1 if annotated is not None else 0,
                len(crops),
            ),
        )
        seq = cur.lastrowid
        assert seq is not None
        base = seq * IMAGE_SLOTS
        images = [(base + 1 + n, crop or b"") for n, crop in enumerate(crops)]
        if annotated is not None:
            images.insert(0, (base, annotated))
        # Typically one image (a plate crop): execute() costs less than executemany().
        if len(images) == 1:
            conn.execute("INSERT INTO images VALUES (?,?)", images[0])
        elif images:
            conn.executemany("INSERT INTO images VALUES (?,?)", images)
        return Stored(detection_id, seq, received_at)

    def _insert_health(self, data: dict[str, Any], channel: str, received_at: str) -> Stored:
        health_id = time_ordered_uuid()
        camera_id = text_of(data.get("camera_id"))
        checkpoint_id = text_of(data.get("checkpoint_id"))
        event_id = data.get("event_id")
        status = text_of(data.get("status"))
        component = text_of(data.get("component"))
        message = text_of(data.get("message", ""))
        cur = self.conn.execute(
            "INSERT INTO health (health_id, event_id, camera_id, checkpoint_id, timestamp, "
            "received_at, channel, component, status, message, payload) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                health_id,
                event_id if isinstance(event_id, str) else None,
                camera_id,
                checkpoint_id,
                text_of(data.get("timestamp")),
                received_at,
                channel,
                component,
                status,
                message,
                _dumps(data),
            ),
        )
        seq = cur.lastrowid
        assert seq is not None
        return Stored(health_id, seq, received_at)

    def register_camera(self, camera_id: str, checkpoint_id: str, via: str) -> str:
        now = utc_now()
        with self.conn:  # one transaction (the connection is in autocommit mode)
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT INTO cameras (camera_id, checkpoint_id, registered_at, registered_via) "
                "VALUES (?,?,?,?) ON CONFLICT(camera_id) DO UPDATE SET "
                "checkpoint_id=excluded.checkpoint_id, registered_at=excluded.registered_at, "
                "registered_via=excluded.registered_via",
                (camera_id, checkpoint_id, now, via),
            )
        state = self._camera(camera_id, checkpoint_id)
        state.update(
            checkpoint_id=checkpoint_id, registered_at=now, registered_via=via, last_seen=now
        )
        return now

    def clear(self) -> None:
        """Forget all stored data (fault/test mode only)."""
        with self.conn:
            self.conn.execute("BEGIN")
            for table in ("records", "images", "health", "cameras"):
                self.conn.execute(f"DELETE FROM {table}")
        self._cameras.clear()
        for known in self._event_ids.values():
            known.clear()

    # --- reads --------------------------------------------------------------------

    @staticmethod
    def _where(filters: dict[str, str | None]) -> tuple[str, list[str]]:
        clauses = [f"{name} = ?" for name, value in filters.items() if value is not None]
        params = [value for value in filters.values() if value is not None]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def records(
        self,
        limit: int,
        camera_id: str | None = None,
        checkpoint_id: str | None = None,
        images: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest ``limit`` records, oldest first (as the deployed servers), and the total."""
        where, params = self._where({"camera_id": camera_id, "checkpoint_id": checkpoint_id})
        total = self.conn.execute(f"SELECT COUNT(*) FROM records{where}", params).fetchone()[0]
        rows = self.conn.execute(
            f"SELECT seq, detection_id, event_id, camera_id, checkpoint_id, timestamp, "
            f"received_at, channel, vehicles_count, plates_count, ocr_results, payload, "
            f"has_annotated, crops FROM records{where} ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        out = []
        for row in reversed(rows):
            (
                seq,
                detection_id,
                event_id,
                cam,
                chk,
                ts,
                received_at,
                channel,
                vc,
                pc,
                ocr,
                payload,
                has_annotated,
                crops,
            ) = row
            record: dict[str, Any] = json.loads(payload)
            record.update(
                {
                    "seq": seq,
                    "detection_id": detection_id,
                    "event_id": event_id,
                    "camera_id": cam,
                    "checkpoint_id": chk,
                    "timestamp": ts,
                    "received_at": received_at,
                    "channel": channel,
                    "vehicles_count": vc,
                    "plates_count": pc,
                    "ocr_results": json.loads(ocr),
                    "cropped_plates_count": crops,
                    "annotated_image_url": (
                        f"/api/records/{detection_id}/image/annotated" if has_annotated else None
                    ),
                    "cropped_plate_urls": [
                        f"/api/records/{detection_id}/crops/{n}" for n in range(crops)
                    ],
                }
            )
            if images:
                self._inline_images(record)
            out.append(record)
        return out, total

    def _inline_images(self, record: dict[str, Any]) -> None:
        base = record["seq"] * IMAGE_SLOTS
        rows = self.conn.execute(
            "SELECT id, data FROM images WHERE id >= ? AND id < ? ORDER BY id",
            (base, base + IMAGE_SLOTS),
        ).fetchall()
        record["cropped_plates"] = []
        for image_id, data in rows:
            encoded = base64.b64encode(data).decode("ascii")
            if image_id == base:
                record["annotated_image"] = encoded
            else:
                record["cropped_plates"].append(encoded)

    def image(self, detection_id: str, kind: str, idx: int) -> bytes | None:
        row = self.conn.execute(
            "SELECT seq, has_annotated, crops FROM records WHERE detection_id = ?",
            (detection_id,),
        ).fetchone()
        if row is None:
            return None
        seq, has_annotated, crops = row
        if kind == "annotated":
            slot = 0 if has_annotated else None
        else:
            slot = idx + 1 if 0 <= idx < crops else None
        if slot is None:
            return None
        found = self.conn.execute(
            "SELECT data FROM images WHERE id = ?", (seq * IMAGE_SLOTS + slot,)
        ).fetchone()
        return found[0] if found else None

    def health_records(
        self, limit: int, camera_id: str | None = None, checkpoint_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = self._where({"camera_id": camera_id, "checkpoint_id": checkpoint_id})
        total = self.conn.execute(f"SELECT COUNT(*) FROM health{where}", params).fetchone()[0]
        rows = self.conn.execute(
            f"SELECT seq, health_id, event_id, received_at, channel, payload "
            f"FROM health{where} ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        out = []
        for seq, health_id, event_id, received_at, channel, payload in reversed(rows):
            record: dict[str, Any] = json.loads(payload)
            record.update(
                {
                    "seq": seq,
                    "health_id": health_id,
                    "event_id": event_id,
                    "received_at": received_at,
                    "channel": channel,
                }
            )
            out.append(record)
        return out, total

    def cameras(self) -> list[dict[str, Any]]:
        return [dict(self._cameras[key]) for key in sorted(self._cameras)]

    def timestamps(self) -> list[str]:
        """Every stored message timestamp (the legacy statistics parse them all)."""
        rows = self.conn.execute(
            "SELECT timestamp FROM records UNION ALL SELECT timestamp FROM health"
        ).fetchall()
        return [r[0] for r in rows]

    def counts(self, since: str) -> dict[str, Any]:
        q = self.conn.execute
        return {
            "total_detections": q("SELECT COUNT(*) FROM records").fetchone()[0],
            "today_detections": q(
                "SELECT COUNT(*) FROM records WHERE received_at >= ?", (since,)
            ).fetchone()[0],
            "total_health_checks": q("SELECT COUNT(*) FROM health").fetchone()[0],
            "today_health_checks": q(
                "SELECT COUNT(*) FROM health WHERE received_at >= ?", (since,)
            ).fetchone()[0],
            "unique_cameras": len(self._cameras),
            "last_detection_at": q("SELECT MAX(received_at) FROM records").fetchone()[0],
        }

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:  # pragma: no cover - closing is best effort
            log.exception("closing the stub database failed")
