"""``lpr-agent run``: the daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import logging

from lpr_agent.cli._common import add_config_argument, config_path_from_args, examples

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the agent in the foreground (the systemd service)",
        description="Capture, detect, spool and deliver until SIGTERM/SIGINT. SIGHUP reloads "
        "the config (a bad new config is logged and ignored). Speaks sd_notify (READY, "
        "WATCHDOG, STATUS, STOPPING) when started by systemd. Exit status 78 on a bad config, "
        "1 when a stage fails (systemd restarts the agent), 0 after a clean stop.",
        **examples("lpr-agent run --config /etc/lpr-agent/agent.toml",
                   "LPR_AGENT_LOGGING__LEVEL=DEBUG lpr-agent run -c agent.toml"),
    )
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config (exit 78 if bad), run until signalled."""
    from lpr_agent.agent import Agent  # heavy imports only when running
    from lpr_agent.config import ConfigError, load_config
    from lpr_agent.logs import setup_logging

    path = config_path_from_args(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        setup_logging()
        for line in str(exc).splitlines():
            log.critical("bad configuration: %s", line)
        return exc.exit_code
    setup_logging(config.logging)
    return Agent(config, path).run()
