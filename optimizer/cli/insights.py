"""`prompt-worker insights list [--prompt NAME] [--actionable] [--kind K] [--limit N] [--json]`.

The table shows per insight how many findings it groups (FACETS); `--json` gives each
insight's evidence whole, its "facets" included."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from optimizer.cli.output import print_json, table
from optimizer.clock import table_time
from optimizer.config import Settings
from optimizer.db import read_only, session_factory
from optimizer.patterns import views

TABLE_HEADER = (
    "ID",
    "PROMPT",
    "VER",
    "KIND",
    "ACTIONABLE",
    "EFFECT",
    "FACETS",
    "SEEN",
    "LAST SEEN",
    "TITLE",
)
TITLE_COLUMN_CHARS = 80


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("insights", help="list what pattern analysis found")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list insights, most recently seen first")
    listing.add_argument("--prompt", metavar="NAME", help="only this prompt's insights")
    listing.add_argument("--actionable", action="store_true", help="only insights worth acting on")
    listing.add_argument("--kind", metavar="K", help=f"one of: {', '.join(views.KINDS)}")
    listing.add_argument(
        "--limit",
        metavar="N",
        default=str(views.DEFAULT_LIMIT),
        help=f"at most N, 1..{views.MAX_LIMIT} (default {views.DEFAULT_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_insights_list)


def cmd_insights_list(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    limit = views.parse_limit(args.limit)
    kind = views.parse_kind(args.kind) if args.kind is not None else None
    prompt = views.parse_prompt(args.prompt) if args.prompt is not None else None
    with session_factory(read_only(engine))() as session:
        found = views.list_insights(
            session,
            prompt=prompt,
            actionable=True if args.actionable else None,
            kind=kind,
            limit=limit,
        )
    if args.json:
        return print_json({"insights": [v.to_dict() for v in found]})
    print(format_table(found))
    return 0


def _row(view: views.InsightView) -> tuple[str, ...]:
    title = " ".join(view.title.split())
    if len(title) > TITLE_COLUMN_CHARS:
        title = title[: TITLE_COLUMN_CHARS - 3] + "..."
    effect = "-" if view.effect_size is None else f"{view.effect_size:+.3f}"
    return (
        str(view.id),
        view.prompt,
        "-" if view.version is None else str(view.version),
        view.kind,
        "yes" if view.is_actionable else "no",
        effect,
        # How many findings the insight groups (the title names the others); "-" for a
        # theme or a row from before grouping.
        str(len(view.facets)) if view.facets else "-",
        str(view.occurrences),
        table_time(view.last_seen_at),
        title,
    )


def format_table(found: Sequence[views.InsightView]) -> str:
    return table(TABLE_HEADER, map(_row, found)) if found else "no insights match"
