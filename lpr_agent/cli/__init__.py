"""``lpr-agent`` command line: thin verbs over library calls.

Each verb lives in its own module exposing ``register(subparsers)``; the
module sets ``func`` on its parser, which receives the parsed namespace and
returns the process exit code. Heavy imports (OpenCV, ONNX, Socket.IO) happen
inside the verbs so that ``lpr-agent --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
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


EXIT_SIGPIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except BrokenPipeError:
        # `lpr-agent status | head -1`: the reader is gone; stop quietly. Point
        # stdout at /dev/null so that the final flush at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
