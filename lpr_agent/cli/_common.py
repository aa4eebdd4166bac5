"""Argument helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lpr_agent.config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"agent config file (default: $LPR_AGENT_CONFIG, else {DEFAULT_CONFIG_PATH} if it "
        "exists, else built-in defaults); LPR_AGENT_<SECTION>__<KEY> environment variables "
        "override it",
    )


def config_path_from_args(args: argparse.Namespace) -> Path | None:
    if getattr(args, "config", None) is not None:
        return args.config
    env = os.environ.get("LPR_AGENT_CONFIG")
    return Path(env) if env else None


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Load the config named by ``--config`` (raises ConfigError, exit code 78)."""
    return load_config(config_path_from_args(args))


def config_or_exit(args: argparse.Namespace) -> AgentConfig:
    """Like config_from_args, but print the problem and exit 78 on a bad config."""
    try:
        return config_from_args(args)
    except ConfigError as exc:
        print(f"lpr-agent: bad configuration: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def examples(*lines: str) -> dict[str, object]:
    """``add_parser`` keywords for an "examples:" block at the end of ``--help``."""
    return {
        "epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
