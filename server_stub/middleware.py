"""The stub's one aiohttp middleware: origin, auth, media type, stall and reply
delay; every failure answered as JSON, so nothing propagates to kill the server.

One middleware, not one per concern: each layer is one more coroutine (and
aiohttp adds a layer of its own once there is any) on every request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from server_stub.rest import LegacyBadJson, fail
from server_stub.security import authorized, is_json, origin_allowed
from server_stub.service import BadRequest, StubService

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LEGACY_BAD_JSON = (
    "Internal server error: 400 Bad Request: The browser (or proxy) sent a request "
    "that this server could not understand."
)
CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


def make_middlewares(service: StubService) -> list[Any]:
    token = service.config.token
    faults = service.faults
    cors = frozenset(service.config.cors_origins)
    # Legacy mode parses any body as the deployed server does (quirk 6);
    # /admin is the stub's own and always wants JSON.
    lenient_api = service.legacy

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/socket.io"):
            # engine.io checks the origin and answers its own errors; a
            # prepared websocket cannot be turned into a JSON response anyway.
            return await handler(request)
        api = path.startswith("/api/")
        admin = path.startswith("/admin/")
        if api or admin:
            if not origin_allowed(request, cors):
                return fail(403, "Forbidden: requests from this web origin are not accepted")
            if request.method == "OPTIONS" and "Origin" in request.headers:
                return _cors(web.Response(status=204, headers=CORS_HEADERS), request)
        if token is not None and (api or admin or path == "/") and not authorized(request, token):
            return _cors(fail(401, "Unauthorized: bad or missing token"), request)
        json_only = admin or (api and not lenient_api)
        if request.method == "POST" and json_only and not is_json(request):
            return _cors(fail(415, "Content-Type must be application/json"), request)
        if api and faults.enabled:  # skip even the coroutine when there can be no faults
            await faults.wait_unstalled()
        response, handled = await _answer(request, handler, api or admin)
        if api and handled and faults.enabled:
            # Failures are answered at once: only a handled request waits out
            # the configured reply delay.
            await faults.delay()
        return _cors(response, request) if cors else response

    def _cors(response: web.StreamResponse, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin in cors:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return [gate]


async def _answer(
    request: web.Request, handler: Handler, json_errors: bool
) -> tuple[web.StreamResponse, bool]:
    """(the handler's response, True), or (its failure as JSON, False)."""
    try:
        return await handler(request), True
    except BadRequest as exc:
        return fail(400, str(exc)), False
    except LegacyBadJson:
        return fail(500, LEGACY_BAD_JSON), False
    except web.HTTPRequestEntityTooLarge as exc:
        return fail(413, f"Request body too large: {exc.text}"), False
    except web.HTTPException as exc:
        if exc.status < 400 or not json_errors:
            raise
        return fail(exc.status, exc.reason), False
    except Exception as exc:  # not CancelledError & co.: those are BaseExceptions
        log.exception("handler for %s %s failed", request.method, request.path)
        return fail(500, f"Internal server error: {exc}"), False
