"""``lpr-agent version``."""

from __future__ import annotations

import argparse
import platform

from lpr_agent import __version__
from lpr_agent.cli._common import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("version", help="print the agent's version",
                                   description="Print the agent's and Python's versions.",
                                   **examples("lpr-agent version"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"lpr-agent {__version__} (Python {platform.python_version()})")
    return 0
