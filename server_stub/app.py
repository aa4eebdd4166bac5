"""The LPR server stub: aiohttp + python-socketio on one port.

Speaks the protocol of ``shared/protocol.md`` in two flavours:

* default: the "backward-compatible extensions" (acks carry the outcome,
  ``event_id`` de-duplication, 400 for malformed input, REST broadcast too);
* ``legacy``: the deployed reference server's observable behaviour, quirks
  included, so the agent can be tested against what is really out there.

This module only wires the parts: ``service`` (validate, store, reply,
broadcast), ``sio_namespace`` (Socket.IO events), ``rest`` (``/api``),
``admin`` (fault injection), ``middleware`` (auth, errors as JSON).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import socketio
from aiohttp import web

from server_stub.admin import AdminApi
from server_stub.config import StubConfig
from server_stub.middleware import make_middlewares
from server_stub.rest import RestApi
from server_stub.security import socketio_origin_check
from server_stub.service import StubService
from server_stub.sio_namespace import SioBroadcaster, StubNamespace
from server_stub.sio_transport import WebSockets

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SERVICE_KEY = web.AppKey("service", StubService)


def create_sio(config: StubConfig) -> socketio.AsyncServer:
    scale_out: dict[str, object] = {}
    if config.redis_url:
        scale_out = {
            "client_manager": socketio.AsyncRedisManager(config.redis_url),
            # No sticky sessions behind SO_REUSEPORT: a websocket session is
            # one TCP connection, so it cannot stray to another worker.
            "transports": ["websocket"],
        }
    return socketio.AsyncServer(
        **scale_out,
        async_mode="aiohttp",
        # The stub's own origin (+ --cors-origin): a page elsewhere that the
        # operator has open cannot open a Socket.IO connection to the stub.
        cors_allowed_origins=socketio_origin_check(frozenset(config.cors_origins)),
        # No cookies are used: the token travels in the handshake's auth.
        cors_credentials=False,
        max_http_buffer_size=config.body_limit,
        logger=False,
        engineio_logger=False,
    )


def create_app(config: StubConfig) -> web.Application:
    sio = create_sio(config)
    service = StubService(config, SioBroadcaster(sio, always=config.redis_url is not None))
    websockets = WebSockets(config.body_limit)
    websockets.install(sio.eio)
    namespace = StubNamespace(service, websockets)
    sio.register_namespace(namespace)

    app = web.Application(client_max_size=config.body_limit, middlewares=make_middlewares(service))
    app[SERVICE_KEY] = service
    sio.attach(app)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)
    RestApi(service).add_routes(app)
    if config.faults:
        AdminApi(service, namespace.abort_all).add_routes(app)
    _add_history_routes(app, service)

    async def drop_clients(app: web.Application) -> None:
        # A live websocket would hold the shutdown until its timeout; cutting
        # it looks to clients like a real server going away, so they reconnect
        # when it is back (restart tests rely on that).
        service.faults.reset()  # releases stalled handlers
        await namespace.abort_all()

    async def close_storage(app: web.Application) -> None:
        service.close()

    app.on_shutdown.append(drop_clients)
    app.on_cleanup.append(close_storage)
    return app


def _add_history_routes(app: web.Application, service: StubService) -> None:
    """The dashboard's history/search API, when its module is installed.

    ``server_stub/history.py`` is written separately; its contract is
    ``add_routes(app, service)`` with ``service.storage`` the ``Storage``.
    """
    if importlib.util.find_spec("server_stub.history") is None:
        return
    from server_stub import history  # type: ignore[attr-defined]

    history.add_routes(app, service)
