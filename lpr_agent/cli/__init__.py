"""``lpr-agent`` command line: thin verbs over library calls.

Each verb lives in its own module exposing ``register(subparsers)``; the
module sets ``func`` on its parser, which receives the parsed namespace and
returns the process exit code. Heavy imports (OpenCV, ONNX, Socket.IO) happen
inside the verbs so that ``lpr-agent --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lpr_agent import __version__

# Order is the order shown in --help.
VERB_MODULES = ("run", "status", "check", "detect", "spool", "config", "demo", "version")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpr-agent",
        description="Edge licence-plate reader that spools every reading and delivers it "
        "to the LPR server.",
    )
    parser.add_argument("--version", action="version", version=f"lpr-agent {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERB_MODULES:
        importlib.import_module(f"lpr_agent.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
