"""`prompt-worker experiments list | show ID | stop ID`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import InvalidInput
from optimizer.experiments import store

MAX_ID = 2**63 - 1
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
CLI_ACTOR = "admin (CLI)"
TABLE_HEADER = ("ID", "PROMPT", "STATUS", "ARMS (version:conversations)", "WINNER", "STARTED")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("experiments", help="list, show and stop A/B experiments")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list the newest experiments")
    listing.add_argument("--status", metavar="S",
                         help="running, paused, completed or stopped")
    listing.add_argument("--prompt", metavar="NAME", help="only this prompt's experiments")
    listing.add_argument("--limit", metavar="N", default=str(DEFAULT_LIMIT),
                         help=f"at most N, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_experiments_list, needs_engine=True)

    show = actions.add_parser("show", help="print one experiment with its latest analysis")
    show.add_argument("id", metavar="ID", help="the experiment id")
    show.set_defaults(func=cmd_experiments_show, needs_engine=True)

    stop = actions.add_parser("stop", help="stop an experiment; the control version stays")
    stop.add_argument("id", metavar="ID", help="the experiment id")
    stop.add_argument("--reason", metavar="TEXT", help="why, recorded with the experiment")
    stop.set_defaults(func=cmd_experiments_stop, needs_engine=True)


def _parse_id(raw: str) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 1 <= int(text) <= MAX_ID:
        raise InvalidInput(f"id must be a positive whole number; got {raw[:40]!r}", field="id")
    return int(text)


def _parse_limit(raw: str) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 6 or not (
            1 <= int(text) <= MAX_LIMIT):
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}; "
                           f"got {raw[:40]!r}", field="limit")
    return int(text)


def cmd_experiments_list(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    limit = _parse_limit(args.limit)
    with session_factory(engine)() as session:
        views = store.list_experiments(session, status=args.status, prompt=args.prompt,
                                       limit=limit)
    if args.json:
        print(json.dumps({"experiments": [v.to_dict() for v in views]}, indent=2))
    else:
        print(format_table(views))
    return 0


def cmd_experiments_show(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    with session_factory(engine)() as session:
        view = store.get_experiment(session, _parse_id(args.id))
    return _print(view.to_dict())


def cmd_experiments_stop(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    experiment_id = _parse_id(args.id)
    with session_factory(engine).begin() as session:
        view = store.stop_experiment(session, experiment_id, actor=CLI_ACTOR,
                                     reason=args.reason, now=utcnow())
    return _print(view.to_dict())


def _print(value: dict[str, Any]) -> int:
    print(json.dumps(value, indent=2))
    return 0


def _row(view: store.ExperimentView) -> tuple[str, ...]:
    arms = " ".join(f"{a.version}{'*' if a.is_control else ''}"
                    f"{'(x)' if a.status != 'active' else ''}:{a.conversations}"
                    for a in view.arms)
    return (str(view.id), view.prompt, view.status, arms,
            "-" if view.winner_version is None else str(view.winner_version),
            view.started_at.strftime("%Y-%m-%d %H:%M:%SZ"))


def format_table(views: Sequence[store.ExperimentView]) -> str:
    """`*` marks the control arm, `(x)` a stopped arm."""
    if not views:
        return "no experiments match"
    rows = [TABLE_HEADER, *(_row(v) for v in views)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)
