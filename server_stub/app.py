"""The LPR server stub: aiohttp + python-socketio on one port.

Speaks the protocol of ``shared/protocol.md`` in two flavours:

* default: the "backward-compatible extensions" (acks carry the outcome,
  ``event_id`` de-duplication, 400 for malformed input, REST broadcast too);
* ``legacy``: the deployed reference server's observable behaviour, quirks
  included, so the agent can be tested against what is really out there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web
from pydantic import ValidationError

from lpr_agent.protocol import (
    CameraRegistration,
    DetectionResult,
    HealthStatus,
    first_error,
    now_timestamp,
    parse_inbound,
)
from server_stub.config import StubConfig
from server_stub.faults import Faults
from server_stub.storage import (
    Kind,
    Storage,
    Stored,
    WriteItem,
    predecode_image,
    text_of,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_LIST = 1_000_000
# Group-commit linger when busy (tuning knob for benchmarks; 0 = never linger).
FLUSH_DELAY_S = float(os.environ.get("LPR_STUB_FLUSH_DELAY_MS", "1")) / 1000
BUSY_WINDOW_S = 0.005
# A commit waits at most this many extra loop turns for messages still arriving.
MAX_DEFERS = 8
MAX_BATCH = 256
DEFAULT_LIST = 100
LEGACY_BAD_JSON = (
    "Internal server error: 400 Bad Request: The browser (or proxy) sent a request "
    "that this server could not understand."
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """A client error: answered with 400 (REST) or an ``error`` event (Socket.IO)."""


class GroupCommitter:
    """Collects the writes that arrive together and commits them as one transaction.

    Under load many handlers are ready in the same loop iteration; one SQLite
    transaction for all of them costs about as much as one for a single
    message. Each caller still gets its reply only after the commit, so an
    acknowledged message survives a SIGKILL of the stub.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.pending: list[tuple[WriteItem, asyncio.Future[Stored]]] = []
        self.batches = 0
        self.largest_batch = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = 0.0
        self._joined = 0
        self._defers = 0

    async def write(
        self, kind: str, data: dict[str, Any], channel: str, dedup: bool, linger: bool
    ) -> Stored:
        """Store one message in the next group commit; returns once it is committed.

        ``linger``: the caller's client pipelines (a Socket.IO connection with
        many messages in flight), so a busy stub may hold the commit back a
        moment to gather more of them.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        if not self.pending:
            if linger and FLUSH_DELAY_S > 0 and loop.time() - self._last_flush < BUSY_WINDOW_S:
                # Busy: Socket.IO events arrive one per loop turn, so a short
                # linger lets a pipelining client's burst share one commit.
                self._timer = loop.call_later(FLUSH_DELAY_S, self._flush)
            else:
                # Idle, or an HTTP request: commit as soon as a loop turn adds
                # nothing to the batch. An HTTP client sends its next request
                # on a connection only once answered, so a timed linger would
                # leave the stub idle, waiting for requests that cannot come
                # before it answers; the requests already being read still
                # join, so a busy stub gets big batches all the same.
                self._timer = None
                self._joined = 0
                self._defers = 0
                loop.call_soon(self._flush_when_quiet)
        else:
            self._joined += 1
        self.pending.append(((kind, data, channel, dedup), future))
        if len(self.pending) >= MAX_BATCH and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            loop.call_soon(self._flush)
        return await future

    def _flush_when_quiet(self) -> None:
        """Flush, unless messages joined during the last loop turn: then more
        are probably on their way through the handlers; look again next turn."""
        if self._joined and self._defers < MAX_DEFERS and len(self.pending) < MAX_BATCH:
            self._joined = 0
            self._defers += 1
            asyncio.get_running_loop().call_soon(self._flush_when_quiet)
            return
        self._flush()

    def _flush(self) -> None:
        self._timer = None
        self._last_flush = asyncio.get_running_loop().time()
        batch, self.pending = self.pending, []
        if not batch:
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            results = self.storage.write_batch([item for item, _ in batch])
        except Exception as exc:  # e.g. the disk is full: fail every caller
            log.exception("group commit of %d messages failed", len(batch))
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the caller went away (cancelled)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class StubServer:
    """State shared by the REST handlers and the Socket.IO handlers."""

    def __init__(self, config: StubConfig) -> None:
        self.config = config
        self.legacy = config.legacy
        self.faults = Faults(config.faults)
        self.storage = Storage(config.db)
        self.writer = GroupCommitter(self.storage)
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins="*",
            max_http_buffer_size=config.body_limit,
            logger=False,
            engineio_logger=False,
        )
        # sid -> camera registered on that connection; camera -> its live sids.
        self.sid_camera: dict[str, str] = {}
        self.camera_sids: dict[str, set[str]] = {}
        self.sid_eio: dict[str, str] = {}
        # engine.io sid -> the aiohttp request carrying its websocket, so that
        # drop_connections can abort the TCP connection like a network failure.
        self.ws_requests: dict[str, web.Request] = {}
        # Legacy quirk 8: cameras registered over REST, until restart.
        self.rest_registered: set[str] = set()
        self._register_sio_handlers()

    # --- helpers -------------------------------------------------------------------

    def reply_timestamp(self) -> str:
        # The reference server answers with naive local times; the stub's own
        # mode uses the offset form every client can parse.
        return datetime.now().isoformat() if self.legacy else now_timestamp()

    def require_fields(self, data: Any, names: tuple[str, ...]) -> dict[str, Any]:
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
        probe, stored = _predecode_images(data) if isinstance(data, dict) else (data, data)
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

    async def store_detection(self, data: dict[str, Any], channel: str) -> Stored:
        return await self.writer.write(
            Kind.DETECTION, data, channel, dedup=not self.legacy, linger=channel == "socketio"
        )

    async def store_health(self, data: dict[str, Any], channel: str) -> Stored:
        return await self.writer.write(
            Kind.HEALTH, data, channel, dedup=not self.legacy, linger=channel == "socketio"
        )

    def detection_reply(self, data: dict[str, Any], stored: Stored, rest: bool) -> dict[str, Any]:
        return self._stored_reply(
            data, stored, rest, "detection_id", "Detection data received successfully"
        )

    def health_reply(self, data: dict[str, Any], stored: Stored, rest: bool) -> dict[str, Any]:
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

    def registration_reply(self, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "success": True,
            "message": f"Camera {data['camera_id']} registered successfully",
            "camera_id": data["camera_id"],
            "checkpoint_id": data["checkpoint_id"],
            "timestamp": self.reply_timestamp(),
        }

    def room_has_members(self, room: str) -> bool:
        # python-socketio encodes a broadcast even when nobody is in the room;
        # with no dashboard open that would be pure waste on every message.
        return bool(self.sio.manager.rooms.get("/", {}).get(room))

    async def broadcast_detection(self, data: dict[str, Any], stored: Stored) -> None:
        if stored.duplicate or not self.room_has_members("dashboard"):
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
            "seq": stored.seq,
            "received_at": stored.received_at,
            "annotated_image_url": (
                f"/api/records/{stored.id}/image/annotated" if data.get("annotated_image") else None
            ),
            "cropped_plate_urls": [f"/api/records/{stored.id}/crops/{n}" for n in range(n_crops)],
        }
        await self.sio.emit("new_detection", payload, room="dashboard")

    async def broadcast_health(self, data: dict[str, Any], stored: Stored) -> None:
        if stored.duplicate or not self.room_has_members("health_monitoring"):
            return
        payload = {
            "health_id": stored.id,
            "camera_id": data.get("camera_id"),
            "checkpoint_id": data.get("checkpoint_id"),
            "component": data.get("component"),
            "status": data.get("status"),
            "message": data.get("message", ""),
            "timestamp": data.get("timestamp"),
        }
        await self.sio.emit("health_update", payload, room="health_monitoring")

    async def broadcast_camera(self, camera_id: str, checkpoint_id: str, status: str) -> None:
        await self.sio.emit(
            "camera_status",
            {
                "camera_id": camera_id,
                "checkpoint_id": checkpoint_id,
                "status": status,
                "timestamp": self.reply_timestamp(),
            },
            room="dashboard",
        )

    def camera_list(self) -> list[dict[str, Any]]:
        horizon = (datetime.now(UTC) - timedelta(seconds=self.config.online_window_s)).isoformat(
            timespec="milliseconds"
        )
        out = []
        for row in self.storage.cameras():
            live = bool(self.camera_sids.get(row["camera_id"]))
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
                }
            )
        return out

    async def abort_socketio(self) -> None:
        """Cut every Socket.IO connection as a network failure would (no close frame)."""
        for sid, eio_sid in list(self.sid_eio.items()):
            request = self.ws_requests.get(eio_sid)
            if request is None:
                # A websocket-only client: its connect request is the websocket.
                environ = self.sio.environ.get(eio_sid) or {}
                first = environ.get("aiohttp.request")
                if first is not None and first.query.get("transport") == "websocket":
                    request = first
            if request is not None and request.transport is not None:
                request.transport.abort()
            else:
                # Long-polling client: no socket of its own to cut; close it.
                await self.sio.disconnect(sid)

    # --- Socket.IO -------------------------------------------------------------------

    def _register_sio_handlers(self) -> None:
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        for event, handler in (
            ("camera_register", self.on_camera_register),
            ("lpr_data", self.on_lpr_data),
            ("health_status", self.on_health_status),
            ("ping", self.on_ping),
            ("join_dashboard", self.on_join_dashboard),
            ("join_health_room", self.on_join_health_room),
        ):
            sio.on(event, self._guard(event, handler))

    def _guard(
        self, event: str, handler: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """Stall handling + "a handler exception is logged and answered"."""

        async def guarded(sid: str, *args: Any) -> Any:
            await self.faults.wait_unstalled()
            data = args[0] if args else None
            try:
                return await handler(sid, data)
            except Exception as exc:
                log.exception("Socket.IO handler %s failed", event)
                message = f"Internal server error: {exc}"
                await self.sio.emit("error", {"message": message}, to=sid)
                return None if self.legacy else {"success": False, "message": message}

        return guarded

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = auth if isinstance(auth, dict) else {}
        if self.config.token is not None and auth.get("token") != self.config.token:
            raise socketio.exceptions.ConnectionRefusedError("Unauthorized: bad or missing token")
        if self.faults.socketio_blocked:
            raise socketio.exceptions.ConnectionRefusedError("Socket.IO blocked (fault injection)")
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self.sid_eio[sid] = eio_sid
        if self.legacy and not auth.get("dashboard"):
            # Reference quirk 5 (the stub's own dashboard opts out, because the
            # current JS client cannot connect through it).
            await self.sio.emit(
                "connect",
                {
                    "message": "Connected to LPR WebSocket Server",
                    "timestamp": self.reply_timestamp(),
                },
                to=sid,
            )

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        eio_sid = self.sid_eio.pop(sid, None)
        if eio_sid is not None:
            self.ws_requests.pop(eio_sid, None)
        camera_id = self.sid_camera.pop(sid, None)
        if camera_id is None:
            return
        sids = self.camera_sids.get(camera_id, set())
        sids.discard(sid)
        if not sids:
            self.camera_sids.pop(camera_id, None)
            rows = [c for c in self.storage.cameras() if c["camera_id"] == camera_id]
            checkpoint = rows[0]["checkpoint_id"] if rows else ""
            await self.broadcast_camera(camera_id, checkpoint, "offline")

    async def _sio_error(self, sid: str, message: str) -> Any:
        await self.faults.delay()
        await self.sio.emit("error", {"message": message}, to=sid)
        return None if self.legacy else {"success": False, "message": message}

    async def on_camera_register(self, sid: str, data: Any) -> Any:
        try:
            data = self.validate_registration(data)
        except BadRequest as exc:
            return await self._sio_error(sid, str(exc))
        camera_id, checkpoint_id = data["camera_id"], data["checkpoint_id"]
        if self.legacy and camera_id in self.rest_registered:
            return await self._sio_error(sid, "'clients'")
        self.storage.register_camera(camera_id, checkpoint_id, "socketio")
        previous = self.sid_camera.get(sid)
        if previous is not None and previous != camera_id:
            self.camera_sids.get(previous, set()).discard(sid)
        self.sid_camera[sid] = camera_id
        self.camera_sids.setdefault(camera_id, set()).add(sid)
        await self.broadcast_camera(camera_id, checkpoint_id, "online")
        reply = self.registration_reply(data)
        await self.faults.delay()
        await self.sio.emit("camera_register", reply, to=sid)
        return None if self.legacy else reply

    async def on_lpr_data(self, sid: str, data: Any) -> Any:
        return await self._on_message(
            sid, data, self.validate_detection, self.store_detection,
            self.broadcast_detection, self.detection_reply, "lpr_response",
            # Reference quirk 8: after a REST registration, stored, then an error.
            quirk_error="'detections'",
        )

    async def on_health_status(self, sid: str, data: Any) -> Any:
        return await self._on_message(
            sid, data, self.validate_health, self.store_health,
            self.broadcast_health, self.health_reply, "health_response",
        )

    async def _on_message(
        self,
        sid: str,
        data: Any,
        validate: Callable[[Any], dict[str, Any]],
        store: Callable[[dict[str, Any], str], Awaitable[Stored]],
        broadcast: Callable[[dict[str, Any], Stored], Awaitable[None]],
        make_reply: Callable[[dict[str, Any], Stored, bool], dict[str, Any]],
        reply_event: str,
        quirk_error: str | None = None,
    ) -> Any:
        """One stored message over Socket.IO: validate, store, broadcast, reply + ack."""
        if self.faults.take_failure():
            return await self._sio_error(sid, "Internal server error: injected fault")
        try:
            data = validate(data)
        except BadRequest as exc:
            return await self._sio_error(sid, str(exc))
        stored = await store(data, "socketio")
        await broadcast(data, stored)
        if (
            quirk_error is not None
            and self.legacy
            and text_of(data.get("camera_id")) in self.rest_registered
        ):
            return await self._sio_error(sid, quirk_error)
        if self.faults.withhold:
            return self.sio.not_handled  # python-socketio then sends no ack at all
        reply = make_reply(data, stored, False)
        await self.faults.delay()
        await self.sio.emit(reply_event, reply, to=sid)
        return None if self.legacy else reply

    async def on_ping(self, sid: str, data: Any) -> Any:
        original = data.get("message") if isinstance(data, dict) else data
        reply = {
            "success": True,
            "message": "pong",
            "original_message": original,
            "timestamp": self.reply_timestamp(),
        }
        await self.faults.delay()
        await self.sio.emit("pong", reply, to=sid)
        return None if self.legacy else reply

    async def _join(self, sid: str, room: str, label: str) -> Any:
        await self.sio.enter_room(sid, room)
        reply = {"message": f"Joined {label} room", "timestamp": self.reply_timestamp()}
        await self.sio.emit("status", reply, to=sid)
        return None if self.legacy else reply

    async def on_join_dashboard(self, sid: str, data: Any) -> Any:
        return await self._join(sid, "dashboard", "dashboard")

    async def on_join_health_room(self, sid: str, data: Any) -> Any:
        return await self._join(sid, "health_monitoring", "health monitoring")

    # --- REST ------------------------------------------------------------------------

    async def read_json(self, request: web.Request) -> Any:
        body = await request.read()  # raises 413 beyond client_max_size
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            if self.legacy:
                raise _LegacyBadJson() from None
            raise BadRequest(f"Request body is not valid JSON: {exc}") from None

    async def rest_register(self, request: web.Request) -> web.Response:
        data = self.validate_registration(await self.read_json(request))
        self.storage.register_camera(data["camera_id"], data["checkpoint_id"], "rest")
        if self.legacy:
            self.rest_registered.add(data["camera_id"])
        else:
            await self.broadcast_camera(data["camera_id"], data["checkpoint_id"], "online")
        return web.json_response(self.registration_reply(data))

    async def rest_detection(self, request: web.Request) -> web.Response:
        data = await self.read_json(request)
        if self.faults.take_failure():
            return _fail(self.faults.settings.fail_status, "Internal server error: injected fault")
        data = self.validate_detection(data)
        stored = await self.store_detection(data, "rest")
        if not self.legacy:
            await self.broadcast_detection(data, stored)
        return web.json_response(self.detection_reply(data, stored, rest=True))

    async def rest_health(self, request: web.Request) -> web.Response:
        data = await self.read_json(request)
        if self.faults.take_failure():
            return _fail(self.faults.settings.fail_status, "Internal server error: injected fault")
        data = self.validate_health(data)
        stored = await self.store_health(data, "rest")
        if not self.legacy:
            await self.broadcast_health(data, stored)
        return web.json_response(self.health_reply(data, stored, rest=True))

    async def rest_test(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"success": True, "message": "Server is running", "timestamp": self.reply_timestamp()}
        )

    async def rest_statistics(self, request: web.Request) -> web.Response:
        if self.legacy:
            # Reference quirk 4: every stored timestamp is parsed on each call.
            for stamp in self.storage.timestamps():
                datetime.fromisoformat(stamp)  # ValueError -> 500 via the middleware
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        counts = self.storage.counts(today)
        cameras = self.camera_list()
        data = {
            "total_detections": counts["total_detections"],
            "today_detections": counts["today_detections"],
            "total_health_checks": counts["total_health_checks"],
            "today_health_checks": counts["today_health_checks"],
            "unique_cameras": counts["unique_cameras"],
            "active_cameras": sum(1 for c in cameras if c["status"] == "online"),
            "connected_clients": len(self.sid_eio),
            "last_update": self.reply_timestamp(),
            "server_status": "running",
        }
        return web.json_response({"success": True, "data": data})

    async def rest_cameras(self, request: web.Request) -> web.Response:
        cameras = self.camera_list()
        return web.json_response(
            {
                "success": True,
                "cameras": cameras,
                "total_cameras": len(cameras),
                "timestamp": self.reply_timestamp(),
            }
        )

    @staticmethod
    def _list_args(request: web.Request) -> tuple[int, str | None, str | None]:
        raw = request.query.get("limit", str(DEFAULT_LIST))
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest(f"limit must be an integer, got {raw!r}") from None
        if not 0 <= limit <= MAX_LIST:
            raise BadRequest(f"limit must be between 0 and {MAX_LIST}")
        return limit, request.query.get("camera_id"), request.query.get("checkpoint_id")

    async def rest_records(self, request: web.Request) -> web.Response:
        limit, camera_id, checkpoint_id = self._list_args(request)
        images = request.query.get("images", "0").lower() in ("1", "true", "yes")
        records, total = self.storage.records(limit, camera_id, checkpoint_id, images=images)
        return web.json_response(
            {
                "success": True,
                "records": records,
                "total_count": total,
                "returned_count": len(records),
                "timestamp": self.reply_timestamp(),
            },
            dumps=_dumps,
        )

    async def rest_health_records(self, request: web.Request) -> web.Response:
        limit, camera_id, checkpoint_id = self._list_args(request)
        records, total = self.storage.health_records(limit, camera_id, checkpoint_id)
        return web.json_response(
            {
                "success": True,
                "records": records,
                "total_count": total,
                "returned_count": len(records),
                "timestamp": self.reply_timestamp(),
            },
            dumps=_dumps,
        )

    async def rest_delete_records(self, request: web.Request) -> web.Response:
        self.storage.clear()
        return web.json_response({"success": True, "message": "All records deleted"})

    async def rest_image(self, request: web.Request) -> web.Response:
        detection_id = request.match_info["detection_id"]
        if "n" in request.match_info:
            try:
                idx = int(request.match_info["n"])
            except ValueError:
                raise BadRequest("crop index must be an integer") from None
            data = self.storage.image(detection_id, "crop", idx)
        else:
            data = self.storage.image(detection_id, "annotated", 0)
        if data is None:
            return _fail(404, "No such image")
        return web.Response(body=data, content_type="image/jpeg")

    # --- admin (fault injection) -----------------------------------------------------

    async def admin_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.snapshot())

    async def admin_post(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.read())
        except ValueError as exc:
            raise BadRequest(f"Request body is not valid JSON: {exc}") from None
        if not isinstance(changes, dict):
            raise BadRequest("fault settings must be a JSON object")
        try:
            settings = self.faults.update(changes)
        except ValidationError as exc:
            raise BadRequest(first_error(exc)) from None
        if settings.drop_connections or settings.block_socketio:
            await self.abort_socketio()
        # drop_connections is an action, not a state.
        settings.drop_connections = False
        log.info("fault settings now %s", self.faults.snapshot())
        return web.json_response(self.faults.snapshot())

    async def admin_delete(self, request: web.Request) -> web.Response:
        self.faults.reset()
        return web.json_response(self.faults.snapshot())

    # --- pages ---------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")


STUB_KEY = web.AppKey("stub", StubServer)


class _LegacyBadJson(Exception):
    """Non-JSON body in legacy mode: the reference answers 500 (quirk 6)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _predecode_images(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
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


def _fail(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "message": message}, status=status)


def _make_middlewares(stub: StubServer) -> list[Any]:
    # One middleware, not one per concern: each layer is one more coroutine
    # (and aiohttp adds a layer of its own once there is any) on every request.
    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Websocket bookkeeping; auth, stall and reply delay for the REST API;
        every failure answered as JSON, so nothing propagates to kill the server."""
        path = request.path
        if path.startswith("/socket.io"):
            query = request.query
            if query.get("transport") == "websocket" and "sid" in query:
                stub.ws_requests[query["sid"]] = request
            # engine.io answers its own errors; a prepared websocket cannot
            # be turned into a JSON response anyway.
            return await handler(request)
        api = path.startswith("/api/")
        if api:
            token = stub.config.token
            if token is not None:
                given = request.headers.get("Authorization", "")
                # ?token= too, because <img> tags on the dashboard cannot send headers.
                if given != f"Bearer {token}" and request.query.get("token") != token:
                    return _fail(401, "Unauthorized: bad or missing token")
            if stub.faults.enabled:  # skip even the coroutine when there can be no faults
                await stub.faults.wait_unstalled()
        try:
            response = await handler(request)
        except BadRequest as exc:
            return _fail(400, str(exc))
        except _LegacyBadJson:
            return _fail(500, LEGACY_BAD_JSON)
        except web.HTTPRequestEntityTooLarge as exc:
            return _fail(413, f"Request body too large: {exc.text}")
        except web.HTTPException as exc:
            if exc.status < 400 or not (api or path.startswith("/admin")):
                raise
            return _fail(exc.status, exc.reason)
        except Exception as exc:  # not CancelledError & co.: those are BaseExceptions
            log.exception("handler for %s %s failed", request.method, path)
            return _fail(500, f"Internal server error: {exc}")
        if api and stub.faults.enabled:
            # Failures above are answered at once, as before: only a handled
            # request waits out the configured reply delay.
            await stub.faults.delay()
        return response

    return [gate]


def create_app(config: StubConfig) -> web.Application:
    stub = StubServer(config)
    app = web.Application(client_max_size=config.body_limit, middlewares=_make_middlewares(stub))
    app[STUB_KEY] = stub
    stub.sio.attach(app)
    r = app.router
    r.add_get("/", stub.index)
    r.add_static("/static/", STATIC_DIR)
    r.add_get("/api/test", stub.rest_test)
    r.add_post("/api/cameras/register", stub.rest_register)
    r.add_post("/api/detection", stub.rest_detection)
    r.add_post("/api/health", stub.rest_health)
    r.add_get("/api/statistics", stub.rest_statistics)
    r.add_get("/api/cameras", stub.rest_cameras)
    r.add_get("/api/records", stub.rest_records)
    r.add_get("/api/health_records", stub.rest_health_records)
    r.add_get("/api/records/{detection_id}/image/annotated", stub.rest_image)
    r.add_get("/api/records/{detection_id}/crops/{n}", stub.rest_image)
    if config.faults:
        r.add_delete("/api/records", stub.rest_delete_records)
        r.add_get("/admin/faults", stub.admin_get)
        r.add_post("/admin/faults", stub.admin_post)
        r.add_delete("/admin/faults", stub.admin_delete)

    async def drop_clients(app: web.Application) -> None:
        # A live websocket would hold the shutdown until its timeout; cutting
        # it looks to clients like a real server going away, so they reconnect
        # when it is back (restart tests rely on that).
        stub.faults.reset()  # releases stalled handlers
        await stub.abort_socketio()

    async def close_storage(app: web.Application) -> None:
        stub.storage.close()

    app.on_shutdown.append(drop_clients)
    app.on_cleanup.append(close_storage)
    return app
