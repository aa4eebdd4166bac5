"""``lpr-server-stub`` / ``python -m server_stub``: run the stub until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.log import access_logger

from server_stub.app import create_app
from server_stub.config import DEFAULT_BODY_LIMIT, DEFAULT_PORT, StubConfig

log = logging.getLogger("server_stub")


def parse_args(argv: list[str] | None = None) -> StubConfig:
    parser = argparse.ArgumentParser(
        prog="lpr-server-stub", description="LPR server stub (Socket.IO + REST, one port)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--db", type=Path, default=Path("lpr-stub.db"), help="SQLite file")
    parser.add_argument(
        "--legacy", action="store_true", help="behave like the deployed reference servers"
    )
    parser.add_argument(
        "--faults", action="store_true", help="enable the /admin/faults fault-injection API"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LPR_STUB_TOKEN") or None,
        help="shared secret required from clients (default: $LPR_STUB_TOKEN)",
    )
    parser.add_argument("--body-limit", type=int, default=DEFAULT_BODY_LIMIT, help="bytes")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--access-log", action="store_true", help="log every HTTP request (off: it is costly)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return StubConfig(
        host=args.host,
        port=args.port,
        db=args.db,
        legacy=args.legacy,
        faults=args.faults,
        token=args.token,
        body_limit=args.body_limit,
        access_log=args.access_log,
    )


async def serve(config: StubConfig) -> None:
    app = create_app(config)
    # No access log unless asked for: one log line per detection would cost
    # about as much as storing it.
    # shutdown_timeout: SIGTERM must end the stub promptly, even with requests
    # held by a fault-injected stall.
    runner = web.AppRunner(
        app,
        access_log=access_logger if config.access_log else None,
        handle_signals=False,
        shutdown_timeout=3.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
    port = sockets[0].getsockname()[1] if sockets else config.port
    mode = "legacy" if config.legacy else "default"
    log.info(
        "LPR server stub (%s mode%s%s) on http://%s:%d/ — dashboard at that URL, db %s",
        mode,
        ", faults" if config.faults else "",
        ", token auth" if config.token else "",
        config.host,
        port,
        config.db,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
