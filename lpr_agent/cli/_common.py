"""Argument helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
from pathlib import Path

from lpr_agent.config import DEFAULT_CONFIG_PATH, AgentConfig, load_config


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"agent config file (default: {DEFAULT_CONFIG_PATH} if it exists, else built-in "
        "defaults); LPR_AGENT_* environment variables override it",
    )


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Load the config named by ``--config`` (raises ConfigError, exit code 78)."""
    return load_config(args.config)
