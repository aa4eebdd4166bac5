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
from server_stub.security import is_loopback
from server_stub.workers import WORKER_FLAG, supervise

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
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept browsers on this web origin, e.g. http://dash.lab:8080 (repeatable; "
        "default: the stub's own origin only)",
    )
    parser.add_argument(
        "--allow-remote-faults",
        action="store_true",
        help="allow --faults on a non-loopback --host (anyone reaching the port could then "
        "break the stub)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (SO_REUSEPORT); more than 1 needs --redis",
    )
    parser.add_argument(
        "--redis", metavar="URL", help="Redis for sharing broadcasts between workers"
    )
    parser.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--body-limit", type=int, default=DEFAULT_BODY_LIMIT, help="bytes")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--access-log", action="store_true", help="log every HTTP request (off: it is costly)"
    )
    args = parser.parse_args(argv)
    if args.faults and not is_loopback(args.host) and not args.allow_remote_faults:
        # parser.error exits with status 2 (usage error).
        parser.error(
            f"--faults on --host {args.host} would let anyone who reaches the port inject "
            "failures; use a loopback host (127.0.0.1) or add --allow-remote-faults"
        )
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1:
        for given, why in (
            (not args.redis, "needs --redis URL (the workers share broadcasts through it)"),
            (args.port == 0, "needs a fixed --port (each worker would get its own)"),
            (args.legacy, "cannot be --legacy (the deployed server is one process)"),
            (args.faults, "cannot have --faults (each worker would have its own settings)"),
        ):
            if given:
                parser.error(f"--workers {args.workers} {why}")
    for origin in args.cors_origin:
        if not origin.startswith(("http://", "https://")) or origin.rstrip("/") != origin:
            parser.error(
                f"--cors-origin {origin!r}: give scheme://host[:port], e.g. http://dash.lab:8080"
            )
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
        cors_origins=args.cors_origin,
        allow_remote_faults=args.allow_remote_faults,
        workers=args.workers,
        redis_url=args.redis,
        reuse_port=args.worker,
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
    site = web.TCPSite(runner, config.host, config.port, reuse_port=config.reuse_port or None)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
    port = sockets[0].getsockname()[1] if sockets else config.port
    mode = "legacy" if config.legacy else "default"
    log.info(
        "LPR server stub (%s mode%s%s%s) on http://%s:%d/ — dashboard at that URL, db %s",
        mode,
        f", worker pid {os.getpid()}" if config.reuse_port else "",
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
    argv = sys.argv[1:] if argv is None else argv
    config = parse_args(argv)
    if config.workers > 1 and not config.reuse_port:
        return supervise(argv, config.workers)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
