"""``lpr-agent run``: the daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse

from lpr_agent.cli._common import add_config_argument, config_path_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the agent in the foreground (the systemd service)",
        description="Capture, detect, spool and deliver until SIGTERM/SIGINT. SIGHUP reloads "
        "the config (a bad new config is logged and ignored). Speaks sd_notify (READY, "
        "WATCHDOG, STATUS, STOPPING) when started by systemd. Exit status 78 on a bad config, "
        "1 when a stage fails (systemd restarts the agent), 0 after a clean stop.",
    )
    add_config_argument(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lpr_agent.agent import run_agent  # heavy imports only when running

    return run_agent(config_path_from_args(args))
