"""Socket.IO side of the stub: the default namespace's event handlers.

Thin over ``StubService``: each handler turns a Socket.IO event into a service
call and the outcome into a reply event plus an ack (protocol.md: the reply
event first, then the ack; legacy acks carry nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from lpr_agent.protocol import SOCKETIO_EVENTS, Kind
from server_stub.codec import text_of
from server_stub.security import same_secret
from server_stub.service import DASHBOARD_ROOM, HEALTH_ROOM, BadRequest, StubService
from server_stub.sio_transport import WebSockets

log = logging.getLogger(__name__)

REPLY_EVENTS = {Kind.DETECTION: "lpr_response", Kind.HEALTH: "health_response"}
INJECTED_FAULT = "Internal server error: injected fault"
REFUSED_LINGER_S = 1.0


class SioBroadcaster:
    """``Broadcaster`` over a python-socketio server."""

    def __init__(self, sio: socketio.AsyncServer, always: bool = False) -> None:
        self.sio = sio
        # With a message queue (several workers), a room's members may sit in
        # another process: the local room table cannot tell, so always emit.
        self.always = always

    def has_listeners(self, room: str) -> bool:
        # python-socketio encodes a broadcast even when nobody is in the room;
        # with no dashboard open that would be pure waste on every message.
        return self.always or bool(self.sio.manager.rooms.get("/", {}).get(room))

    async def emit(self, event: str, data: dict[str, Any], room: str) -> None:
        await self.sio.emit(event, data, room=room)


class StubNamespace(socketio.AsyncNamespace):
    """Handlers of the default namespace ``/``."""

    def __init__(self, service: StubService, websockets: WebSockets) -> None:
        super().__init__("/")
        self.service = service
        self.faults = service.faults
        self.legacy = service.legacy
        self.websockets = websockets
        self._closers: set[asyncio.Future[None]] = set()
        self._handlers: dict[str, Callable[[str, Any], Awaitable[Any]]] = {
            SOCKETIO_EVENTS[Kind.REGISTRATION]: self.on_camera_register,
            SOCKETIO_EVENTS[Kind.DETECTION]: self.on_detection,
            SOCKETIO_EVENTS[Kind.HEALTH]: self.on_health,
            "ping": self.on_ping,
            "join_dashboard": self.on_join_dashboard,
            "join_health_room": self.on_join_health_room,
        }

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Dispatch: stall handling, and "a handler exception is logged and answered"."""
        if event == "connect":
            try:
                return await self.on_connect(*args)
            except socketio.exceptions.ConnectionRefusedError:
                self._close_refused(args[0])
                raise
        if event == "disconnect":
            return await self.on_disconnect(args[0])
        handler = self._handlers.get(event)
        if handler is None:
            return self.server.not_handled  # unknown event: no ack, as python-socketio does
        await self.faults.wait_unstalled()
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        try:
            return await handler(sid, data)
        except Exception as exc:
            log.exception("Socket.IO handler %s failed", event)
            return await self._error(sid, f"Internal server error: {exc}", delay=False)

    # --- connection ------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        auth = auth if isinstance(auth, dict) else {}
        token = self.service.config.token
        if token is not None and not same_secret(auth.get("token"), token):
            raise socketio.exceptions.ConnectionRefusedError("Unauthorized: bad or missing token")
        if self.faults.socketio_blocked:
            raise socketio.exceptions.ConnectionRefusedError("Socket.IO blocked (fault injection)")
        self.service.connections.opened(sid)
        if self.legacy and not auth.get("dashboard"):
            # Reference quirk 5 (the stub's own dashboard opts out, because the
            # current JS client cannot connect through it).
            await self._reply(
                sid,
                "connect",
                {
                    "message": "Connected to LPR WebSocket Server",
                    "timestamp": self.service.reply_timestamp(),
                },
            )

    def _close_refused(self, sid: str) -> None:
        """End the engine.io session of a refused connection.

        python-socketio answers a refused connect with CONNECT_ERROR but keeps
        the engine.io session until the client leaves or misses its pings
        (45 s): a client that never leaves would pin one session each.
        """
        eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return
        task = asyncio.ensure_future(self._close_session(eio_sid))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close_session(self, eio_sid: str) -> None:
        socket = self.server.eio.sockets.get(eio_sid)
        if socket is None:
            return
        if not socket.upgraded:
            # Long polling: the client must still fetch the CONNECT_ERROR.
            await asyncio.sleep(REFUSED_LINGER_S)
        socket = self.server.eio.sockets.pop(eio_sid, None)
        if socket is None or socket.closed:
            return
        # wait=False: a polling client that never polls again must not hold
        # this task; queued packets (the refusal) still go first.
        await socket.close(wait=False)
        self.websockets.cancel_ping(socket)
        if socket.upgraded:
            # engine.io's websocket loop would wait for the client for up to
            # 45 s (ping timeout) with its tasks alive: once the refusal and
            # the close are handed to the writer, cut the connection.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(socket.queue.join(), REFUSED_LINGER_S)
            await asyncio.sleep(0)
            self.websockets.abort(eio_sid)

    async def on_disconnect(self, sid: str) -> None:
        camera_id = self.service.connections.closed(sid)
        if camera_id is None:
            return
        camera = self.service.storage.camera(camera_id)
        checkpoint = camera["checkpoint_id"] if camera else ""
        await self.service.broadcast_camera(camera_id, checkpoint, "offline")

    async def abort_all(self) -> None:
        """Cut every Socket.IO connection as a network failure would (no close frame)."""
        self.websockets.abort_all()
        for sid in self.service.connections.sids():
            eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
            socket = self.server.eio.sockets.get(eio_sid) if eio_sid else None
            if socket is not None and not socket.upgraded:
                # Long-polling client: no socket of its own to cut; close it.
                await self.server.disconnect(sid)

    # --- events ----------------------------------------------------------------------

    async def _reply(self, sid: str, event: str, data: Any) -> None:
        # ignore_queue: the sender is on this worker; with several workers a
        # plain emit would make a round trip through Redis for every reply.
        await self.emit(event, data, to=sid, ignore_queue=True)

    async def _error(self, sid: str, message: str, delay: bool = True) -> Any:
        if delay:
            await self.faults.delay()
        await self._reply(sid, "error", {"message": message})
        return None if self.legacy else {"success": False, "message": message}

    async def on_camera_register(self, sid: str, data: Any) -> Any:
        service = self.service
        try:
            data = service.validate_registration(data)
        except BadRequest as exc:
            return await self._error(sid, str(exc))
        camera_id, checkpoint_id = data["camera_id"], data["checkpoint_id"]
        if self.legacy and camera_id in service.rest_registered:
            return await self._error(sid, "'clients'")
        reply = service.register(data, "socketio")
        service.connections.register(sid, camera_id)
        await service.broadcast_camera(camera_id, checkpoint_id, "online")
        await self.faults.delay()
        await self._reply(sid, SOCKETIO_EVENTS[Kind.REGISTRATION], reply)
        return None if self.legacy else reply

    async def on_detection(self, sid: str, data: Any) -> Any:
        # Reference quirk 8: after a REST registration, stored, then an error.
        return await self._stored(sid, data, Kind.DETECTION, quirk_error="'detections'")

    async def on_health(self, sid: str, data: Any) -> Any:
        return await self._stored(sid, data, Kind.HEALTH)

    async def _stored(self, sid: str, data: Any, kind: Kind, quirk_error: str | None = None) -> Any:
        """One stored message over Socket.IO: validate, store, broadcast, reply + ack."""
        service = self.service
        if self.faults.take_failure():
            return await self._error(sid, INJECTED_FAULT)
        try:
            data = service.validator(kind)(data)
        except BadRequest as exc:
            return await self._error(sid, str(exc))
        stored = await service.store(kind, data, "socketio")
        await service.broadcast(kind, data, stored)
        if (
            quirk_error is not None
            and self.legacy
            and text_of(data.get("camera_id")) in service.rest_registered
        ):
            return await self._error(sid, quirk_error)
        if self.faults.withhold:
            return self.server.not_handled  # python-socketio then sends no ack at all
        reply = service.reply(kind, data, stored, False)
        await self.faults.delay()
        await self._reply(sid, REPLY_EVENTS[kind], reply)
        return None if self.legacy else reply

    async def on_ping(self, sid: str, data: Any) -> Any:
        reply = self.service.ping_reply(data)
        await self.faults.delay()
        await self._reply(sid, "pong", reply)
        return None if self.legacy else reply

    async def _join(self, sid: str, room: str, label: str) -> Any:
        await self.enter_room(sid, room)
        reply = {"message": f"Joined {label} room", "timestamp": self.service.reply_timestamp()}
        await self._reply(sid, "status", reply)
        return None if self.legacy else reply

    async def on_join_dashboard(self, sid: str, data: Any) -> Any:
        return await self._join(sid, DASHBOARD_ROOM, "dashboard")

    async def on_join_health_room(self, sid: str, data: Any) -> Any:
        return await self._join(sid, HEALTH_ROOM, "health monitoring")
