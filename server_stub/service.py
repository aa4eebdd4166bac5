"""The stub's service layer: validate, store, reply, broadcast.

Transport-free on purpose: the Socket.IO namespace (``sio_namespace.py``) and
the REST handlers (``rest.py``) both call it with plain dicts, so each rule of
the protocol (and each legacy quirk) is written once. Nothing here sees an
aiohttp request or a Socket.IO sid; broadcasts go through a ``Broadcaster``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from lpr_agent.protocol import (
    CameraRegistration,
    DetectionResult,
    HealthStatus,
    Kind,
    now_timestamp,
    parse_inbound,
)
from server_stub.codec import predecode_images, text_of
from server_stub.config import StubConfig
from server_stub.connections import Connections
from server_stub.faults import Faults
from server_stub.group_commit import GroupCommitter
from server_stub.storage import Storage, Stored

log = logging.getLogger(__name__)

DASHBOARD_ROOM = "dashboard"
HEALTH_ROOM = "health_monitoring"


class BadRequest(Exception):
    """A client error: answered with 400 (REST) or an ``error`` event (Socket.IO)."""


class Broadcaster(Protocol):
    """Where broadcasts go (the Socket.IO server, in ``sio_namespace.py``)."""

    def has_listeners(self, room: str) -> bool: ...

    def emit(self, event: str, data: dict[str, Any], room: str) -> Awaitable[None]: ...


Validator = Callable[[Any], dict[str, Any]]
ReplyBuilder = Callable[[dict[str, Any], Stored, bool], dict[str, Any]]


class StubService:
    """State and rules shared by every transport (one per stub process)."""

    def __init__(self, config: StubConfig, broadcaster: Broadcaster) -> None:
        self.config = config
        self.legacy = config.legacy
        self.faults = Faults(config.faults)
        self.storage = Storage(config.db)
        self.writer = GroupCommitter(self.storage)
        self.connections = Connections()
        self.broadcaster = broadcaster
        # Legacy quirk 8: cameras registered over REST, until restart.
        self.rest_registered: set[str] = set()
        # Which process answers, when several share the port (workers.py).
        self.worker = os.getpid() if config.reuse_port else None

    def close(self) -> None:
        self.storage.close()

    # --- validation ------------------------------------------------------------------

    def reply_timestamp(self) -> str:
        # The reference server answers with naive local times; the stub's own
        # mode uses the offset form every client can parse.
        return datetime.now().isoformat() if self.legacy else now_timestamp()

    @staticmethod
    def require_fields(data: Any, names: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BadRequest("Message body must be a JSON object")
        for name in names:
            if data.get(name) in (None, ""):
                raise BadRequest(f"Missing required field: {name}")
        return data

    def validate_detection(self, data: Any) -> dict[str, Any]:
        if self.legacy:
            # The reference server only checks presence of the required fields.
            return self.require_fields(data, ("type", "camera_id", "checkpoint_id", "timestamp"))
        probe, stored = predecode_images(data) if isinstance(data, dict) else (data, data)
        try:
            msg = parse_inbound(DetectionResult, probe)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        # Counts feed SQL columns: keep the validated (coerced) values.
        stored["vehicles_count"] = msg.vehicles_count
        stored["plates_count"] = msg.plates_count
        return stored

    def validate_health(self, data: Any) -> dict[str, Any]:
        if self.legacy:
            return self.require_fields(
                data, ("type", "camera_id", "checkpoint_id", "timestamp", "component", "status")
            )
        try:
            parse_inbound(HealthStatus, data)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return dict(data)

    def validate_registration(self, data: Any) -> dict[str, Any]:
        if self.legacy:
            data = self.require_fields(data, ("camera_id", "checkpoint_id"))
            # Unvalidated ids are used as keys below: make them strings.
            return {
                **data,
                "camera_id": text_of(data["camera_id"]),
                "checkpoint_id": text_of(data["checkpoint_id"]),
            }
        try:
            parse_inbound(CameraRegistration, data)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return data

    def validator(self, kind: Kind) -> Validator:
        return self.validate_detection if kind == Kind.DETECTION else self.validate_health

    # --- storing and answering --------------------------------------------------------

    async def store(self, kind: Kind, data: dict[str, Any], channel: str) -> Stored:
        """Store a validated detection/health message; returns once committed."""
        return await self.writer.write(
            kind, data, channel, dedup=not self.legacy, linger=channel == "socketio"
        )

    def reply(self, kind: Kind, data: dict[str, Any], stored: Stored, rest: bool) -> dict[str, Any]:
        if kind == Kind.DETECTION:
            return self._stored_reply(
                data, stored, rest, "detection_id", "Detection data received successfully"
            )
        return self._stored_reply(data, stored, rest, "health_id", "Health status received")

    def _stored_reply(
        self, data: dict[str, Any], stored: Stored, rest: bool, id_key: str, message: str
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {"success": True, "message": message, id_key: stored.id}
        if not rest:  # the reference server names the camera only in Socket.IO replies
            reply["camera_id"] = data.get("camera_id")
            reply["checkpoint_id"] = data.get("checkpoint_id")
        reply["timestamp"] = self.reply_timestamp()
        if not self.legacy:
            reply["duplicate"] = stored.duplicate
            if data.get("event_id") is not None:
                reply["event_id"] = data["event_id"]
        return reply

    def register(self, data: dict[str, Any], via: str) -> dict[str, Any]:
        """Store a validated registration; returns the reply."""
        self.storage.register_camera(data["camera_id"], data["checkpoint_id"], via)
        return {
            "success": True,
            "message": f"Camera {data['camera_id']} registered successfully",
            "camera_id": data["camera_id"],
            "checkpoint_id": data["checkpoint_id"],
            "timestamp": self.reply_timestamp(),
        }

    def ping_reply(self, data: Any) -> dict[str, Any]:
        original = data.get("message") if isinstance(data, dict) else data
        return self.with_worker(
            {
                "success": True,
                "message": "pong",
                "original_message": original,
                "timestamp": self.reply_timestamp(),
            }
        )

    def with_worker(self, reply: dict[str, Any]) -> dict[str, Any]:
        if self.worker is not None:
            reply["worker"] = self.worker
        return reply

    # --- broadcasts -------------------------------------------------------------------

    async def broadcast(self, kind: Kind, data: dict[str, Any], stored: Stored) -> None:
        if kind == Kind.DETECTION:
            await self._broadcast_detection(data, stored)
        else:
            await self._broadcast_health(data, stored)

    async def _broadcast_detection(self, data: dict[str, Any], stored: Stored) -> None:
        if stored.duplicate or not self.broadcaster.has_listeners(DASHBOARD_ROOM):
            return
        crops = data.get("cropped_plates")
        n_crops = len(crops) if isinstance(crops, list) else 0
        payload = {
            "detection_id": stored.id,
            "camera_id": data.get("camera_id"),
            "checkpoint_id": data.get("checkpoint_id"),
            "vehicles_count": data.get("vehicles_count", 0),
            "plates_count": data.get("plates_count", 0),
            "ocr_results": data.get("ocr_results", []),
            "timestamp": data.get("timestamp"),
            # Extensions for the dashboard (unknown fields are ignored by clients).
            "seq": stored.seq or None,
            "arrival_seq": stored.arrival_seq,
            "received_at": stored.received_at,
            "annotated_image_url": (
                f"/api/records/{stored.id}/image/annotated" if data.get("annotated_image") else None
            ),
            "cropped_plate_urls": [f"/api/records/{stored.id}/crops/{n}" for n in range(n_crops)],
        }
        await self.broadcaster.emit("new_detection", payload, DASHBOARD_ROOM)

    async def _broadcast_health(self, data: dict[str, Any], stored: Stored) -> None:
        if stored.duplicate or not self.broadcaster.has_listeners(HEALTH_ROOM):
            return
        payload = {
            "health_id": stored.id,
            "seq": stored.seq or None,
            "arrival_seq": stored.arrival_seq,
            "camera_id": data.get("camera_id"),
            "checkpoint_id": data.get("checkpoint_id"),
            "component": data.get("component"),
            "status": data.get("status"),
            "message": data.get("message", ""),
            "timestamp": data.get("timestamp"),
        }
        await self.broadcaster.emit("health_update", payload, HEALTH_ROOM)

    async def broadcast_camera(self, camera_id: str, checkpoint_id: str, status: str) -> None:
        payload = {
            "camera_id": camera_id,
            "checkpoint_id": checkpoint_id,
            "status": status,
            "timestamp": self.reply_timestamp(),
        }
        await self.broadcaster.emit("camera_status", payload, DASHBOARD_ROOM)

    # --- read side --------------------------------------------------------------------

    def camera_list(self) -> list[dict[str, Any]]:
        horizon = (datetime.now(UTC) - timedelta(seconds=self.config.online_window_s)).isoformat(
            timespec="milliseconds"
        )
        out = []
        for row in self.storage.cameras():
            live = self.connections.is_live(row["camera_id"])
            if self.legacy and row["registered_via"] == "socketio" and not live:
                # Reference quirk 9: Socket.IO cameras vanish with their connection.
                continue
            recent = (row["last_seen"] or "") >= horizon
            out.append(
                {
                    "camera_id": row["camera_id"],
                    "checkpoint_id": row["checkpoint_id"],
                    "registered_at": row["registered_at"],
                    "last_seen": row["last_seen"],
                    "status": "online" if live or recent else "offline",
                    "connected": live,
                    "detection_count": row["detection_count"],
                    "health_status": row["health_status"],
                    "health_component": row["health_component"],
                    "health_message": row["health_message"],
                    "detection_last_seq": row["detection_last_seq"],
                    "detection_missing_seq": row["detection_missing_seq"],
                    "health_last_seq": row["health_last_seq"],
                    "health_missing_seq": row["health_missing_seq"],
                }
            )
        return out

    def statistics(self) -> dict[str, Any]:
        if self.legacy:
            # Reference quirk 4: every stored timestamp is parsed on each call.
            for stamp in self.storage.timestamps():
                datetime.fromisoformat(stamp)  # ValueError -> 500 via the middleware
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        counts = self.storage.counts(today)
        cameras = self.camera_list()
        return {
            "total_detections": counts["total_detections"],
            "today_detections": counts["today_detections"],
            "total_health_checks": counts["total_health_checks"],
            "today_health_checks": counts["today_health_checks"],
            "unique_cameras": counts["unique_cameras"],
            "active_cameras": sum(1 for c in cameras if c["status"] == "online"),
            "connected_clients": self.connections.count,
            "last_update": self.reply_timestamp(),
            "server_status": "running",
        }
