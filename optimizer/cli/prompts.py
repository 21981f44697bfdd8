"""`prompt-worker prompts add|list|show|diff|rollback|settings`: manage prompts from a shell."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from optimizer import prompt_settings, prompt_text, prompts
from optimizer.cli.output import print_json, table
from optimizer.clock import table_time, utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import InvalidInput, NotFound
from optimizer.text_input import MAX_ID, parse_whole

CLI_ACTOR = "cli"
STDIN = "-"  # as a --file: read standard input
DEFAULT_ROLLBACK_REASON = "rollback via the CLI"
TABLE_HEADER = ("NAME", "ACTIVE", "VERSIONS", "CREATED")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser(
        "prompts", help="add, list, show, diff, roll back prompts and change their settings"
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser(
        "add", help="create a prompt from a file, or add a new version when it exists; prints JSON"
    )
    add.add_argument("name", metavar="NAME", help="the prompt's name")
    add.add_argument(
        "--file",
        metavar="F",
        required=True,
        help="UTF-8 text of the prompt; - reads standard input",
    )
    add.add_argument("--notes", metavar="TEXT", help="change notes for the new version")
    add.set_defaults(func=cmd_prompts_add)

    listing = actions.add_parser("list", help="list prompts and their active versions")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_prompts_list)

    show = actions.add_parser("show", help="print a prompt, its versions and history as JSON")
    show.add_argument("name", metavar="NAME", help="the prompt's name")
    show.set_defaults(func=cmd_prompts_show)

    diff = actions.add_parser("diff", help="unified diff between two versions")
    diff.add_argument("name", metavar="NAME", help="the prompt's name")
    diff.add_argument("a", metavar="A", help="the older version number")
    diff.add_argument("b", metavar="B", help="the newer version number")
    diff.set_defaults(func=cmd_prompts_diff)

    back = actions.add_parser("rollback", help="make an earlier version active again")
    back.add_argument("name", metavar="NAME", help="the prompt's name")
    back.add_argument("--to", metavar="N", required=True, help="the version to activate")
    back.add_argument(
        "--reason",
        metavar="TEXT",
        default=DEFAULT_ROLLBACK_REASON,
        help="why (recorded with the change)",
    )
    back.set_defaults(func=cmd_prompts_rollback)
    _add_settings_parser(actions)


def _add_settings_parser(actions: Any) -> None:
    settings = actions.add_parser(
        "settings",
        help="show or change a prompt's promotion mode and judge rubric; prints JSON",
        description="Without options, print the prompt's settings. Options given change "
        "only their setting, as POST /prompts/{name}/settings does.",
    )
    settings.add_argument("name", metavar="NAME", help="the prompt's name")
    settings.add_argument(
        "--promotion-mode",
        metavar="MODE",
        help="approve (a winner waits for a person), auto (it becomes active at once) or "
        "inherit (follow PROMOTION_MODE)",
    )
    rubric = settings.add_mutually_exclusive_group()
    rubric.add_argument(
        "--judge-rubric-file",
        metavar="F",
        help="UTF-8 text the replay judge adds to its criteria; - reads standard input",
    )
    rubric.add_argument(
        "--no-judge-rubric", action="store_true", help="remove the prompt's judge rubric"
    )
    settings.set_defaults(func=cmd_prompts_settings)


def parse_version(raw: str, field: str) -> int:
    return prompts.validate_version_number(
        parse_whole(raw, field, 1, MAX_ID, what="a version number (a positive whole number)"), field
    )


def _read_stdin() -> bytes:
    if sys.stdin is None:
        raise InvalidInput("standard input is closed; pipe the prompt's text in", field="file")
    if sys.stdin.isatty():
        # Someone typing the prompt by hand: without this they would face a silent wait.
        print("reading the prompt from standard input; end it with Ctrl-D", file=sys.stderr)
    try:
        raw = sys.stdin.buffer.read()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read standard input: {exc.strerror or exc}", field="file"
        ) from None
    if not raw:
        raise InvalidInput(
            "standard input is empty; pipe the prompt's text in, e.g. "
            "`prompt-worker prompts add NAME --file - < prompt.txt`",
            field="file",
        )
    return raw


def read_text_file(path: str) -> str:
    """The file's exact text (`-`: standard input); any problem becomes one line naming it."""
    if path == STDIN:
        source, raw = "standard input", _read_stdin()
    else:
        source = path
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}", field="file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{source} is not UTF-8 text (byte {exc.start}); save it as UTF-8", field="file"
        ) from None


def cmd_prompts_add(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    name = prompt_text.validate_name(args.name)
    content = prompts.validate_content(read_text_file(args.file))
    with session_factory(engine).begin() as session:
        try:
            prompts.get_prompt(session, name)
        except NotFound:
            prompts.create_prompt(
                session, name, content, actor=CLI_ACTOR, now=utcnow(), change_notes=args.notes
            )
            document: object = prompt_settings.document_with_settings(
                session, name, settings.promotion_mode
            )
        else:
            document = prompts.add_version(
                session, name, content, change_notes=args.notes, now=utcnow()
            ).to_dict()
    return print_json(document, ensure_ascii=False)


def cmd_prompts_list(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    with session_factory(engine).begin() as session:
        summaries = prompts.prompt_summaries(session)
    if args.json:
        return print_json({"prompts": [s.to_dict() for s in summaries]}, ensure_ascii=False)
    print(format_table(summaries))
    return 0


def format_table(summaries: list[prompts.PromptSummary]) -> str:
    if not summaries:
        return "no prompts yet; add one with `prompt-worker prompts add NAME --file F`"
    return table(
        TABLE_HEADER,
        [
            (
                s.name,
                "-" if s.active_version is None else str(s.active_version),
                str(s.versions_count),
                table_time(s.created_at),
            )
            for s in summaries
        ],
    )


def cmd_prompts_show(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    with session_factory(engine).begin() as session:
        document = prompt_settings.document_with_settings(
            session, prompt_text.validate_name(args.name), settings.promotion_mode
        )
    return print_json(document, ensure_ascii=False)


def settings_request(args: argparse.Namespace) -> dict[str, Any]:
    """The options given, as the POST /prompts/{name}/settings body they stand for."""
    body: dict[str, Any] = {}
    if args.promotion_mode is not None:
        body["promotion_mode"] = args.promotion_mode
    if args.no_judge_rubric:
        body["judge_rubric"] = None
    elif args.judge_rubric_file is not None:
        body["judge_rubric"] = read_text_file(args.judge_rubric_file)
    return body


def cmd_prompts_settings(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    name = prompt_text.validate_name(args.name)
    body = settings_request(args)
    parsed = prompt_settings.parse_body(body) if body else None
    with session_factory(engine).begin() as session:
        if parsed is None:
            shown = prompt_settings.get_settings(session, name, settings.promotion_mode)
        else:
            shown = prompt_settings.update_settings(session, name, parsed, settings.promotion_mode)
    return print_json(shown.to_dict(), ensure_ascii=False)


def cmd_prompts_diff(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    name = prompt_text.validate_name(args.name)
    a, b = parse_version(args.a, "A"), parse_version(args.b, "B")
    with session_factory(engine).begin() as session:
        old, new = prompts.get_version(session, name, a), prompts.get_version(session, name, b)
    sys.stdout.write(unified_diff(name, old, new))
    return 0


def unified_diff(name: str, old: prompts.VersionView, new: prompts.VersionView) -> str:
    lines = difflib.unified_diff(
        old.content.splitlines(),
        new.content.splitlines(),
        fromfile=f"{name}@v{old.number}",
        tofile=f"{name}@v{new.number}",
        lineterm="",
    )
    return "".join(line + "\n" for line in lines)


def cmd_prompts_rollback(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    name = prompt_text.validate_name(args.name)
    number = parse_version(args.to, "to")
    with session_factory(engine).begin() as session:
        prompts.rollback(session, name, number, actor=CLI_ACTOR, reason=args.reason, now=utcnow())
        document = prompt_settings.document_with_settings(session, name, settings.promotion_mode)
    return print_json(document, ensure_ascii=False)
