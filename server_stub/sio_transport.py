"""The stub's websocket transport for engine.io (aiohttp driver, two additions).

1. The open websockets are known, so that fault injection and shutdown can
   cut them all like a network failure (TCP abort, no close frame). A
   websocket is entered only once engine.io has accepted its session and
   leaves when it ends: nothing is remembered about requests engine.io
   refuses (a bogus ``sid`` costs nothing).
2. A frame over the body limit is answered with a Socket.IO ``error`` event
   before the connection closes (aiohttp would only send close code 1009,
   which a client reports as a plain disconnect).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, web
from engineio.async_drivers.aiohttp import WebSocket

log = logging.getLogger(__name__)


class _LimitedResponse(web.WebSocketResponse):
    """A websocket that says why before closing on an oversized frame."""

    def __init__(self, *, too_big_frame: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._too_big_frame = too_big_frame

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            # If the peer is gone already there is nobody to tell.
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send_str(self._too_big_frame)
        return await super().close(code=code, message=message, drain=drain)


class WebSockets:
    """The engine.io websocket driver of one server, and its open websockets."""

    def __init__(self, body_limit: int) -> None:
        # engine.io session id -> its open websocket
        self._open: dict[str, _StubWebSocket] = {}
        # Engine.IO packet 4 (message) carrying Socket.IO packet 2 (event) on "/".
        self.too_big_frame = "42" + json.dumps(
            ["error", {"message": f"Message too large: the limit is {body_limit} bytes"}]
        )

    def install(self, eio: Any) -> None:
        """Make ``eio`` (an engineio AsyncServer) use this driver.

        The driver table is copied: engine.io shares one module-level table
        between all servers of a process, and tests run several.
        """
        registry = self

        class Driver(_StubWebSocket):
            def __init__(self, handler: Any, server: Any) -> None:
                super().__init__(handler, server, registry)

        eio._async = {**eio._async, "websocket": Driver}
        self.track_ping_tasks(eio)

    @staticmethod
    def track_ping_tasks(eio: Any) -> None:
        """Remember each engine.io session's ping task on the session.

        engine.io starts a task per session that sleeps a ping interval (25 s)
        holding the session; a refused session must not stay pinned that long
        (a flood of refused connects would pin thousands), so ``end_session``
        cancels it. Patched on this server instance only.
        """
        start = eio.start_background_task

        def start_tracked(target: Any, *args: Any, **kwargs: Any) -> Any:
            task = start(target, *args, **kwargs)
            if getattr(target, "__name__", "") == "_send_ping":
                target.__self__.stub_ping_task = task
            return task

        eio.start_background_task = start_tracked

    @staticmethod
    def cancel_ping(socket: Any) -> None:
        task = getattr(socket, "stub_ping_task", None)
        if task is not None:
            task.cancel()

    def abort_all(self) -> None:
        for ws in list(self._open.values()):
            ws.abort()

    def abort(self, eio_sid: str) -> None:
        """Cut the websocket of one engine.io session, if it has one."""
        ws = self._open.get(eio_sid)
        if ws is not None:
            ws.abort()

    @property
    def count(self) -> int:
        return len(self._open)


class _StubWebSocket(WebSocket):  # type: ignore[misc]
    def __init__(self, handler: Any, server: Any, registry: WebSockets) -> None:
        super().__init__(handler, server)
        self.registry = registry
        self.request: web.Request | None = None

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        self.request = request
        self._sock = _LimitedResponse(
            too_big_frame=self.registry.too_big_frame,
            max_msg_size=self.server.max_http_buffer_size,
        )
        await self._sock.prepare(request)
        self.environ = environ
        # The handler is the engine.io session's own method: its sid names it.
        key = str(getattr(getattr(self.handler, "__self__", None), "sid", id(self)))
        self.registry._open[key] = self
        try:
            await self.handler(self)
        finally:
            if self.registry._open.get(key) is self:
                del self.registry._open[key]
            self.request = None
        return self._sock

    def abort(self) -> None:
        transport = self.request.transport if self.request is not None else None
        if transport is not None:
            transport.abort()
