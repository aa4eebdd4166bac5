"""SQLite persistence of the stub: detections, health messages, cameras, images.

The hot inserts use prepared SQL on one connection; the schema and its
indexes are in ``schema.py``, the read queries in ``queries.py``.

Durability: WAL with ``synchronous=OFF``; messages that arrive together
are committed together (group commit, see ``write_batch``), and a message is
answered only after its commit. A committed WAL transaction survives a SIGKILL
of the stub (it is in the OS page cache); only a power loss or kernel crash
could lose the last few, which no test of this project simulates.

Idempotency is the UNIQUE index on ``event_id`` (one per kind): a repeat is
found by an index look-up inside the writing transaction, which holds the
database's write lock (``BEGIN IMMEDIATE``), so two stub processes sharing
the file cannot both store the same event. Nothing about stored messages is
kept in memory: the per-camera summary is a table updated in the same
transaction.

Images are stored decoded, as BLOBs in their own table, so listing records
never reads them; the list gives URLs to fetch them one by one.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpr_agent.protocol import Kind
from server_stub import schema
from server_stub.codec import (
    IMAGE_FIELDS,
    IMAGE_SLOTS,
    decode_image,
    dumps,
    plate_keys,
    safe_int,
    text_of,
    time_ordered_uuid,
    utc_now,
    utc_of,
    valid_seq,
)
from server_stub.queries import StorageReads

log = logging.getLogger(__name__)

# (kind, message, channel, de-duplicate by event_id)
WriteItem = tuple[Kind, dict[str, Any], str, bool]
TABLES = {Kind.DETECTION: ("records", "detection_id"), Kind.HEALTH: ("health", "health_id")}


@dataclass(frozen=True)
class Stored:
    """Outcome of storing one message."""

    id: str  # detection_id / health_id
    arrival_seq: int
    received_at: str
    seq: int = 0  # the camera's sequence number; 0 = it sent none
    duplicate: bool = False


@dataclass
class _CameraDelta:
    """What one transaction changes in a camera's summary row."""

    checkpoint_id: str
    last_seen: str
    detections: int = 0
    health: tuple[str, str, str] | None = None  # status, component, message
    last_seq: dict[Kind, int] = field(default_factory=lambda: {Kind.DETECTION: 0, Kind.HEALTH: 0})
    new_seqs: dict[Kind, int] = field(default_factory=lambda: {Kind.DETECTION: 0, Kind.HEALTH: 0})


class Storage(StorageReads):
    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (group commit).
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        # First: worker processes starting together wait for each other's
        # schema set-up instead of failing with "database is locked".
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute("PRAGMA journal_mode=WAL")
        # synchronous=OFF: a commit is in the OS page cache when it returns,
        # which survives a SIGKILL of the stub (the failure its tests make);
        # only a kernel crash or power loss could lose it. NORMAL would add an
        # fsync at every WAL checkpoint, stalling the event loop under load.
        self.conn.execute("PRAGMA synchronous=OFF")
        schema.ensure(self.conn)
        self.duplicates = 0  # repeats answered from the event_id index (metrics)

    # --- writes -------------------------------------------------------------------

    def write_batch(self, items: list[WriteItem]) -> list[Stored | Exception]:
        """Store many messages in one transaction (group commit).

        Each item is ``(kind, data, channel, dedup)``; with ``dedup`` a message
        whose ``event_id`` is already stored (earlier, or earlier in this very
        batch: the look-up sees the transaction's own rows) is not stored
        again and the original id comes back with ``duplicate=True``. If the
        batch fails as a whole, it is retried item by item so that one bad
        message fails alone.
        """
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # One clock reading per transaction: its messages are received
            # (committed) together, and the reading is not free at this rate.
            now = utc_now()
            deltas: dict[str, _CameraDelta] = {}
            results: list[Stored | Exception] = [self._write(*item, now, deltas) for item in items]
            self._update_cameras(deltas)
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
        else:
            return results
        results = []
        for item in items:
            conn.execute("BEGIN IMMEDIATE")
            try:
                deltas = {}
                result: Stored | Exception = self._write(*item, utc_now(), deltas)
                self._update_cameras(deltas)
                conn.execute("COMMIT")
            except Exception as exc:
                conn.execute("ROLLBACK")
                log.exception("storing a %s failed", item[0])
                result = exc
            results.append(result)
        return results

    def _write(
        self,
        kind: Kind,
        data: dict[str, Any],
        channel: str,
        dedup: bool,
        received_at: str,
        deltas: dict[str, _CameraDelta],
    ) -> Stored:
        table, id_column = TABLES[kind]
        event_id = data.get("event_id")
        if not isinstance(event_id, str):
            event_id = None
        camera_id = text_of(data.get("camera_id"))
        seq = valid_seq(data.get("seq"))
        # A seq this camera has sent before (a legacy repeat, or a camera
        # whose spool was reset) is not one more reading that arrived.
        new_seq = seq > 0 and (
            self.conn.execute(
                f"SELECT 1 FROM {table} WHERE camera_id = ? AND seq = ? LIMIT 1", (camera_id, seq)
            ).fetchone()
            is None
        )
        insert = self._insert_detection if kind == Kind.DETECTION else self._insert_health
        # Insert first and look only on a conflict: a repeat is the rare case,
        # and the look-up would cost as much as the insert.
        stored = insert(data, event_id, seq, channel, received_at)
        if stored is None:  # this event_id is stored already
            if dedup:
                self.duplicates += 1
                found = self.conn.execute(
                    f"SELECT {id_column}, arrival_seq, received_at, seq FROM {table} "
                    "WHERE event_id = ?",
                    (event_id,),
                ).fetchone()
                return Stored(*found, duplicate=True)
            # Legacy mode stores every send; the index keeps the first.
            stored = insert(data, None, seq, channel, received_at)
            assert stored is not None
        delta = deltas.get(camera_id)
        if delta is None:
            checkpoint_id = text_of(data.get("checkpoint_id"))
            delta = deltas[camera_id] = _CameraDelta(checkpoint_id, received_at)
        if kind == Kind.DETECTION:
            delta.detections += 1
        else:
            delta.health = (
                text_of(data.get("status")),
                text_of(data.get("component")),
                text_of(data.get("message", "")),
            )
        delta.last_seq[kind] = max(delta.last_seq[kind], seq)
        delta.new_seqs[kind] += new_seq
        return stored

    def _insert_detection(
        self, data: dict[str, Any], event_id: str | None, seq: int, channel: str, received_at: str
    ) -> Stored | None:
        """None: ``event_id`` is stored already (nothing was written)."""
        detection_id = time_ordered_uuid()
        payload = {k: v for k, v in data.items() if k not in IMAGE_FIELDS}
        annotated = decode_image(data.get("annotated_image"))
        crops_raw = data.get("cropped_plates")
        crops = [decode_image(c) for c in crops_raw] if isinstance(crops_raw, list) else []
        crops = crops[: IMAGE_SLOTS - 1]
        timestamp = data.get("timestamp")
        ocr = data.get("ocr_results", [])
        conn = self.conn
        cur = conn.execute(
            "INSERT INTO records (detection_id, event_id, seq, camera_id, checkpoint_id, "
            "timestamp, at, received_at, channel, vehicles_count, plates_count, ocr_results, "
            "payload, has_annotated, crops) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(event_id) DO NOTHING",
            (
                detection_id,
                event_id,
                seq,
                text_of(data.get("camera_id")),
                text_of(data.get("checkpoint_id")),
                text_of(timestamp),
                utc_of(timestamp),
                received_at,
                channel,
                safe_int(data.get("vehicles_count", 0)),
                safe_int(data.get("plates_count", 0)),
                dumps(ocr),
                dumps(payload),
                1 if annotated is not None else 0,
                len(crops),
            ),
        )
        if cur.rowcount == 0:
            return None
        arrival = cur.lastrowid
        assert arrival is not None
        base = arrival * IMAGE_SLOTS
        images = [(base + 1 + n, crop or b"") for n, crop in enumerate(crops)]
        if annotated is not None:
            images.insert(0, (base, annotated))
        # Typically one image (a plate crop): execute() costs less than executemany().
        if len(images) == 1:
            conn.execute("INSERT INTO images VALUES (?,?)", images[0])
        elif images:
            conn.executemany("INSERT INTO images VALUES (?,?)", images)
        plates = plate_keys(ocr)
        if len(plates) == 1:
            conn.execute("INSERT INTO plates VALUES (?,?)", (plates[0], arrival))
        elif plates:
            conn.executemany("INSERT INTO plates VALUES (?,?)", [(p, arrival) for p in plates])
        return Stored(detection_id, arrival, received_at, seq)

    def _insert_health(
        self, data: dict[str, Any], event_id: str | None, seq: int, channel: str, received_at: str
    ) -> Stored | None:
        health_id = time_ordered_uuid()
        timestamp = data.get("timestamp")
        cur = self.conn.execute(
            "INSERT INTO health (health_id, event_id, seq, camera_id, checkpoint_id, timestamp, "
            "at, received_at, channel, component, status, message, payload) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(event_id) DO NOTHING",
            (
                health_id,
                event_id,
                seq,
                text_of(data.get("camera_id")),
                text_of(data.get("checkpoint_id")),
                text_of(timestamp),
                utc_of(timestamp),
                received_at,
                channel,
                text_of(data.get("component")),
                text_of(data.get("status")),
                text_of(data.get("message", "")),
                dumps(data),
            ),
        )
        if cur.rowcount == 0:
            return None
        arrival = cur.lastrowid
        assert arrival is not None
        return Stored(health_id, arrival, received_at, seq)

    def _update_cameras(self, deltas: dict[str, _CameraDelta]) -> None:
        """One UPSERT per camera per transaction, however many messages it sent."""
        for camera_id, d in deltas.items():
            status, component, message = d.health or ("unknown", None, None)
            self.conn.execute(
                "INSERT INTO cameras (camera_id, checkpoint_id, last_seen, detection_count, "
                "health_status, health_component, health_message, detection_last_seq, "
                "detection_seqs, health_last_seq, health_seqs) "
                "VALUES (:cam, :chk, :seen, :n, :status, :component, :message, :dls, :dn, "
                ":hls, :hn) "
                "ON CONFLICT(camera_id) DO UPDATE SET last_seen = excluded.last_seen, "
                "detection_count = detection_count + excluded.detection_count, "
                "health_status = CASE WHEN :h THEN excluded.health_status ELSE health_status END, "
                "health_component = CASE WHEN :h THEN excluded.health_component "
                "ELSE health_component END, "
                "health_message = CASE WHEN :h THEN excluded.health_message "
                "ELSE health_message END, "
                "detection_last_seq = MAX(detection_last_seq, excluded.detection_last_seq), "
                "detection_seqs = detection_seqs + excluded.detection_seqs, "
                "health_last_seq = MAX(health_last_seq, excluded.health_last_seq), "
                "health_seqs = health_seqs + excluded.health_seqs",
                {
                    "cam": camera_id,
                    "chk": d.checkpoint_id,
                    "seen": d.last_seen,
                    "n": d.detections,
                    "status": status,
                    "component": component,
                    "message": message,
                    "h": d.health is not None,
                    "dls": d.last_seq[Kind.DETECTION],
                    "dn": d.new_seqs[Kind.DETECTION],
                    "hls": d.last_seq[Kind.HEALTH],
                    "hn": d.new_seqs[Kind.HEALTH],
                },
            )

    def register_camera(self, camera_id: str, checkpoint_id: str, via: str) -> str:
        now = utc_now()
        with self.conn:  # one transaction (the connection is in autocommit mode)
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO cameras (camera_id, checkpoint_id, registered_at, registered_via, "
                "last_seen) VALUES (?,?,?,?,?) ON CONFLICT(camera_id) DO UPDATE SET "
                "checkpoint_id=excluded.checkpoint_id, registered_at=excluded.registered_at, "
                "registered_via=excluded.registered_via, last_seen=excluded.last_seen",
                (camera_id, checkpoint_id, now, via, now),
            )
        return now

    def clear(self) -> None:
        """Forget all stored data (fault/test mode only)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            for table in ("records", "images", "plates", "health", "cameras"):
                self.conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:  # pragma: no cover - closing is best effort
            log.exception("closing the stub database failed")
