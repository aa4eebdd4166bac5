"""``lpr-agent config check FILE`` and ``lpr-agent config example``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lpr_agent.cli._common import examples
from lpr_agent.config import ConfigError, example_toml, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="check a config file or print the commented example",
        description="Check an agent config file, or print the commented example config.",
        **examples("lpr-agent config example > agent.toml",
                   "lpr-agent config check agent.toml",
                   "LPR_AGENT_UPLINK__SERVER_URL=http://lpr:8765 lpr-agent config check "
                   "agent.toml --show"),
    )
    verbs = parser.add_subparsers(dest="config_verb", metavar="ACTION", required=True)

    check = verbs.add_parser(
        "check",
        help="validate FILE (plus LPR_AGENT_* overrides); exit 78 with file, key and reason",
        description="Validate an agent config file together with the LPR_AGENT_* environment "
        "overrides that would apply. Exit status 0 if usable, 78 (EX_CONFIG) if not.",
        **examples("lpr-agent config check /etc/lpr-agent/agent.toml",
                   "lpr-agent config check agent.toml --show"),
    )
    check.add_argument("file", type=Path, help="the TOML file to check")
    check.add_argument(
        "--show", action="store_true", help="print the effective configuration as JSON"
    )
    check.set_defaults(func=run_check)

    example = verbs.add_parser(
        "example",
        help="print a commented config file with every setting and its default",
        description="Print a commented config with every setting, its meaning and default "
        "(configs/agent.example.toml is this output).",
        **examples("lpr-agent config example > /etc/lpr-agent/agent.toml"),
    )
    example.set_defaults(func=run_example)


def run_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)
        return exc.exit_code
    if args.show:
        data = config.model_dump(mode="json")
        if data.get("uplink", {}).get("token"):
            data["uplink"]["token"] = "***"  # never echo the secret
        print(json.dumps(data, indent=2))
    else:
        print(f"{args.file}: OK")
    return 0


def run_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_toml())
    return 0
