"""REST side of the stub: ``/api/*`` handlers over ``StubService``.

Errors are raised (``BadRequest`` and friends) and turned into JSON answers by
the middleware (``middleware.py``), so each handler reads as the happy path.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from lpr_agent.protocol import REST_PATHS, Kind
from server_stub.list_query import list_query
from server_stub.queries import UnknownCursor
from server_stub.service import BadRequest, StubService

log = logging.getLogger(__name__)

INJECTED_FAULT = "Internal server error: injected fault"


class LegacyBadJson(Exception):
    """Non-JSON body in legacy mode: the reference answers 500 (quirk 6)."""


def fail(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "message": message}, status=status)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


class RestApi:
    def __init__(self, service: StubService) -> None:
        self.service = service
        self.faults = service.faults
        self.legacy = service.legacy

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/test", self.test)
        r.add_post(REST_PATHS[Kind.REGISTRATION], self.register)
        r.add_post(REST_PATHS[Kind.DETECTION], self.detection)
        r.add_post(REST_PATHS[Kind.HEALTH], self.health)
        r.add_get("/api/statistics", self.statistics)
        r.add_get("/api/cameras", self.cameras)
        r.add_get("/api/records", self.records)
        r.add_get("/api/health_records", self.health_records)
        r.add_get("/api/records/{detection_id}/image/annotated", self.image)
        r.add_get("/api/records/{detection_id}/crops/{n}", self.image)

    async def read_json(self, request: web.Request) -> Any:
        body = await request.read()  # raises 413 beyond client_max_size
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            if self.legacy:
                raise LegacyBadJson() from None
            raise BadRequest(f"Request body is not valid JSON: {exc}") from None

    # --- messages from cameras ----------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        service = self.service
        data = service.validate_registration(await self.read_json(request))
        reply = service.register(data, "rest")
        if self.legacy:
            service.rest_registered.add(data["camera_id"])
        else:
            await service.broadcast_camera(data["camera_id"], data["checkpoint_id"], "online")
        return web.json_response(reply)

    async def detection(self, request: web.Request) -> web.Response:
        return await self._stored(request, Kind.DETECTION)

    async def health(self, request: web.Request) -> web.Response:
        return await self._stored(request, Kind.HEALTH)

    async def _stored(self, request: web.Request, kind: Kind) -> web.Response:
        service = self.service
        data = await self.read_json(request)
        if self.faults.take_failure():
            return fail(self.faults.settings.fail_status, INJECTED_FAULT)
        data = service.validator(kind)(data)
        stored = await service.store(kind, data, "rest")
        if not self.legacy:  # reference quirk 7: REST traffic is not broadcast
            await service.broadcast(kind, data, stored)
        return web.json_response(service.reply(kind, data, stored, rest=True))

    # --- read-only ----------------------------------------------------------------------

    async def test(self, request: web.Request) -> web.Response:
        return web.json_response(
            self.service.with_worker(
                {
                    "success": True,
                    "message": "Server is running",
                    "timestamp": self.service.reply_timestamp(),
                }
            )
        )

    async def statistics(self, request: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": self.service.statistics()})

    async def cameras(self, request: web.Request) -> web.Response:
        cameras = self.service.camera_list()
        return web.json_response(
            {
                "success": True,
                "cameras": cameras,
                "total_cameras": len(cameras),
                "timestamp": self.service.reply_timestamp(),
            }
        )

    async def records(self, request: web.Request) -> web.Response:
        return self._page(Kind.DETECTION, request)

    async def health_records(self, request: web.Request) -> web.Response:
        return self._page(Kind.HEALTH, request)

    def _page(self, kind: Kind, request: web.Request) -> web.Response:
        query = list_query(request.query, detections=kind == Kind.DETECTION)
        try:
            page = self.service.storage.page(kind, query)
        except UnknownCursor as exc:
            raise BadRequest(str(exc)) from None
        return web.json_response(
            {
                "success": True,
                "records": page.records,
                "total_count": page.total,
                "returned_count": len(page.records),
                "has_more": page.has_more,
                "next_cursor": page.next_cursor,
                "prev_cursor": page.prev_cursor,
                "order": page.order,
                "timestamp": self.service.reply_timestamp(),
            },
            dumps=_dumps,
        )

    async def image(self, request: web.Request) -> web.Response:
        detection_id = request.match_info["detection_id"]
        storage = self.service.storage
        if "n" in request.match_info:
            try:
                idx = int(request.match_info["n"])
            except ValueError:
                raise BadRequest("crop index must be an integer") from None
            data = storage.image(detection_id, "crop", idx)
        else:
            data = storage.image(detection_id, "annotated", 0)
        if data is None:
            return fail(404, "No such image")
        return web.Response(body=data, content_type="image/jpeg")
