"""``lpr-agent spool``: look into and manage the local spool, also while the daemon runs.

Every subcommand opens the spool as a second SQLite connection (WAL: readers
never block the daemon's writes; writes wait up to ``busy_timeout_s``). It
never moves a corrupt file aside (the daemon owns that decision) and never
creates a spool that does not exist.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lpr_agent.cli._common import add_config_argument, config_from_args, examples

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_CORRUPT = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spool",
        help="inspect the local spool: stats, list, show, requeue or purge dead letters, "
        "acknowledge a salvage",
        description=__doc__.split("\n\n")[0],
        **examples("lpr-agent spool stats --json", "lpr-agent spool list --dead --limit 20",
                   "lpr-agent spool show 1234", "lpr-agent spool requeue-dead",
                   "lpr-agent spool purge --dead --yes 1234 1235"),
    )
    _add_location(parser, top=True)
    sub = parser.add_subparsers(dest="spool_verb", metavar="ACTION", required=True)

    p = sub.add_parser("stats", help="depth per kind, bytes, oldest age, dead letters, drops")
    _add_location(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("list", help="list queued items (or dead letters) oldest first")
    _add_location(p)
    p.add_argument("--dead", action="store_true", help="list dead letters instead")
    p.add_argument("--kind", choices=["detection", "health", "registration"], default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="one item (or dead letter) with its full payload")
    _add_location(p)
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("requeue-dead", help="move dead letters back to the queue")
    _add_location(p)
    p.add_argument("ids", type=int, nargs="*", help="only these (default: all)")
    p.set_defaults(func=cmd_requeue)

    p = sub.add_parser("ack-salvage",
                       help="acknowledge the salvage of a corrupt spool file (health stops "
                       "reporting it)")
    _add_location(p)
    p.set_defaults(func=cmd_ack_salvage)

    p = sub.add_parser("purge", help="delete dead letters for good")
    _add_location(p)
    p.add_argument("--dead", action="store_true", required=True,
                   help="purge dead letters (the only thing that can be purged)")
    p.add_argument("--yes", action="store_true", help="really delete them")
    p.add_argument("ids", type=int, nargs="*", help="only these (default: all)")
    p.set_defaults(func=cmd_purge)


def _add_location(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Accepted before and after the action; on the action's parser the
    # defaults are suppressed so they do not overwrite a value given before it.
    if top:
        add_config_argument(parser)
        parser.add_argument("--spool", type=Path, default=None, metavar="PATH",
                            help="spool file (default: [spool] path of the config)")
    else:
        parser.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS,
                            help="agent config file")
        parser.add_argument("--spool", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                            help="spool file (default: [spool] path of the config)")


def _open(args: argparse.Namespace) -> Any:
    """The Spool, or an int exit code after printing why not."""
    from lpr_agent.config import ConfigError
    from lpr_agent.spool import Spool, SpoolCorruptError

    try:
        config = config_from_args(args).spool
    except ConfigError as exc:
        print(f"lpr-agent spool: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.spool is not None:
        config = config.model_copy(update={"path": args.spool})
    try:
        return Spool.open(config, recover=False, create=False, maintain=False)
    except FileNotFoundError:
        print(f"lpr-agent spool: no spool at {config.path}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except SpoolCorruptError as exc:
        print(f"lpr-agent spool: {config.path} is corrupt ({exc}); the daemon moves it aside "
              "and starts a fresh one when it next opens it", file=sys.stderr)
        return EXIT_CORRUPT


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def cmd_stats(args: argparse.Namespace) -> int:
    spool = _open(args)
    if isinstance(spool, int):
        return spool
    with spool:
        st = spool.stats()
    if args.json:
        print(json.dumps(st.as_dict()))
        return EXIT_OK
    print(f"spool        {spool.path}")
    print(f"items        {st.items}  ({', '.join(f'{k} {v}' for k, v in st.depth.items())})")
    print(f"bytes        {st.bytes}   file {st.file_bytes}")
    print(f"oldest       {_age(st.oldest_age_s)}")
    print(f"backing off  {st.backing_off}   (leases are held by the daemon, not shown here)")
    print(f"dead letters {st.dead_letters}  ({st.dead_bytes} bytes)")
    print("drops        " + ", ".join(f"{k} {v}" for k, v in st.drops.items()))
    if st.counters:
        print("counters     " + ", ".join(f"{k} {v}" for k, v in sorted(st.counters.items())))
    for s in st.salvages:
        print(f"salvaged     {_when(s.at)}: {s.recovered} row(s) recovered, {s.lost} lost, "
              f"corrupt file {s.moved_to or '(deleted)'}  (lpr-agent spool ack-salvage)")
    return EXIT_OK


def cmd_ack_salvage(args: argparse.Namespace) -> int:
    spool = _open(args)
    if isinstance(spool, int):
        return spool
    with spool:
        n = spool.ack_salvage()
    print(f"acknowledged {n} salvage report(s)")
    return EXIT_OK


def _summary(payload: dict[str, Any]) -> str:
    if "ocr_results" in payload:
        text = ",".join(payload.get("ocr_results") or []) or "-"
        return f"plates={text}" + (" images_dropped" if payload.get("images_dropped") else "")
    if "component" in payload:
        return f"{payload.get('component')}={payload.get('status')}"
    return payload.get("camera_id", "")


def cmd_list(args: argparse.Namespace) -> int:
    spool = _open(args)
    if isinstance(spool, int):
        return spool
    with spool:
        if args.dead:
            rows: list[Any] = spool.list_dead(args.limit, args.offset)
            if args.kind:
                rows = [r for r in rows if r.kind.value == args.kind]
        else:
            rows = spool.list_items(args.limit, args.offset, kind=args.kind)
    for r in rows:
        if args.json:
            d = {"id": r.id, "event_id": r.event_id, "kind": r.kind.value,
                 "created_at": r.created_at, "attempts": r.attempts, "last_error": r.last_error}
            if args.dead:
                d.update(reason=r.reason, dead_at=r.dead_at)
            else:
                d.update(next_attempt_at=r.next_attempt_at)
            print(json.dumps(d))
            continue
        state = f"dead: {r.reason}" if args.dead else (
            f"retry at {_when(r.next_attempt_at)}" if r.next_attempt_at else "ready")
        print(f"{r.id:>8}  {r.kind.value:<12} {_when(r.created_at)}  attempts={r.attempts}  "
              f"{_summary(r.payload)}  [{state}]")
    if not rows and not args.json:
        print("(none)")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    spool = _open(args)
    if isinstance(spool, int):
        return spool
    with spool:
        item = spool.get(args.id)
        dead = None if item is not None else spool.get_dead(args.id)
    if item is None and dead is None:
        print(f"lpr-agent spool: no item {args.id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    record = item or dead
    assert record is not None
    out: dict[str, Any] = {
        "id": record.id, "event_id": record.event_id, "kind": record.kind.value,
        "created_at": _when(record.created_at), "attempts": record.attempts,
        "last_error": record.last_error,
    }
    if dead is not None:
        out.update(state="dead", reason=dead.reason, dead_at=_when(dead.dead_at))
    else:
        assert item is not None
        out.update(state="backing off" if item.next_attempt_at else "queued",
                   next_attempt_at=_when(item.next_attempt_at))
    out["payload"] = record.payload
    print(json.dumps(out, indent=2))
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace) -> int:
    spool = _open(args)
    if isinstance(spool, int):
        return spool
    with spool:
        n = spool.requeue_dead(args.ids or None)
    print(f"requeued {n} dead letter(s)")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace) -> int:
    if not args.yes:
        print("lpr-agent spool purge: deleting dead letters cannot be undone; add --yes",
              file=sys.stderr)
        return EXIT_USAGE
    spool = _open(args)
    if isinstance(spool, int):
        return spool
    with spool:
        n = spool.purge_dead(args.ids or None)
    print(f"purged {n} dead letter(s)")
    return EXIT_OK
