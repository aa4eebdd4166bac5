"""``/admin/faults`` (fault injection) and ``DELETE /api/records``: only with ``--faults``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError

from lpr_agent.protocol import first_error
from server_stub.service import BadRequest, StubService

log = logging.getLogger(__name__)


class AdminApi:
    def __init__(self, service: StubService, abort_socketio: Callable[[], Awaitable[None]]) -> None:
        self.service = service
        self.faults = service.faults
        self.abort_socketio = abort_socketio

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_delete("/api/records", self.delete_records)
        r.add_get("/admin/faults", self.get)
        r.add_post("/admin/faults", self.post)
        r.add_delete("/admin/faults", self.delete)

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.snapshot())

    async def post(self, request: web.Request) -> web.Response:
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

    async def delete(self, request: web.Request) -> web.Response:
        self.faults.reset()
        return web.json_response(self.faults.snapshot())

    async def delete_records(self, request: web.Request) -> web.Response:
        self.service.storage.clear()
        return web.json_response({"success": True, "message": "All records deleted"})
