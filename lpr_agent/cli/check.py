"""``lpr-agent check``: can this camera talk to the LPR server? One-screen verdict."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from lpr_agent.cli._common import add_config_argument, config_from_args, examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check the connection to the LPR server (Socket.IO, REST, ack style, auth)",
        description="REST GET /api/test, Socket.IO connect + ping/pong; prints a one-screen "
        "verdict. Changes nothing on the server: the camera is registered (camera_register, "
        "which makes it appear on the server's dashboard, and tells the ack style) only with "
        "--register. Exit 0: all good, 1: degraded, 2: unusable.",
        **examples("lpr-agent check",
                   "lpr-agent check --server http://lpr:8765 --token SECRET",
                   "lpr-agent check --server https://lpr.example --register --json"),
    )
    add_config_argument(parser)
    parser.add_argument("--server", metavar="URL", help="server URL (default: [uplink] "
                        "server_url of the config)")
    parser.add_argument("--token", help="shared secret (default: [uplink] token)")
    parser.add_argument("--ca-bundle", type=Path, help="CA bundle for https (default: config)")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the TLS certificate (lab use only)")
    parser.add_argument("--timeout", type=float, help="seconds per step (default: config)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--register", action="store_true",
                        help="also register this camera (camera_register) to learn the ack "
                        "style; the camera then shows up on the server")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lpr_agent.uplink.check import check_server  # Socket.IO import only when used

    config = config_from_args(args)
    changes: dict[str, object] = {}
    if args.server:
        changes["server_url"] = args.server
    if args.token is not None:
        changes["token"] = args.token
    if args.ca_bundle is not None:
        changes["ca_bundle"] = args.ca_bundle
    if args.insecure:
        changes["tls_verify"] = False
    if args.timeout:
        changes.update(ack_timeout_s=args.timeout, connect_timeout_s=args.timeout,
                       rest_timeout_s=args.timeout)
    uplink_config = config.uplink.model_validate({**config.uplink.model_dump(), **changes})
    report = asyncio.run(check_server(uplink_config, config.camera, register=args.register))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return report.exit_code
    print(f"LPR server {report.server_url}  (camera {config.camera.camera_id})")
    for step in report.steps:
        mark = "ok  " if step.ok else "FAIL"
        ms = f"{step.ms:7.1f} ms" if step.ms is not None else " " * 10
        print(f"  [{mark}] {step.name:<38} {ms}  {step.detail}")
    print(f"  ack style: {report.ack_style}    auth: {report.auth}")
    print(report.verdict)
    return report.exit_code
