"""`prompt-worker experiments start PROMPT --variants 2,3 [...] | list | show ID | stop ID |
approve ID --reason R | reject ID --reason R | promote ID (--arm A | --version V) --reason R`.

`start` is POST /experiments from a shell: its options are that body's fields, turned from
text into the values the API receives, then checked and stored by the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from models.experiments import EXPERIMENT_STATUSES
from optimizer import prompt_text, strict_json
from optimizer.cli.output import print_json, table
from optimizer.cli.prompts import parse_version
from optimizer.clock import table_time, utcnow
from optimizer.config import MAX_MIN_CONVERSATIONS_PER_ARM, Settings
from optimizer.db import session_factory
from optimizer.errors import InvalidInput
from optimizer.experiments import approvals, store, transitions
from optimizer.experiments.defaults import settings_with_defaults
from optimizer.experiments.validation import PRIMARY_METRICS, parse_settings
from optimizer.input_models import validate
from optimizer.text_input import MAX_ID, parse_decimal, parse_id, parse_whole
from optimizer.webhooks import EXPERIMENT_ACTION, send_now

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
CLI_ACTOR = "admin (CLI)"
TABLE_HEADER = ("ID", "PROMPT", "STATUS", "ARMS (version:conversations)", "WINNER", "STARTED")
REASON_HELP = "why (required): recorded with the experiment and the activation"
_BUILT_IN = parse_settings()  # for the help text only; never copied into a request


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser(
        "experiments", help="start, list, show, stop, approve and promote A/B experiments"
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_start_parser(actions)

    listing = actions.add_parser("list", help="list the newest experiments")
    listing.add_argument("--status", metavar="S", help=", ".join(EXPERIMENT_STATUSES))
    listing.add_argument("--prompt", metavar="NAME", help="only this prompt's experiments")
    listing.add_argument(
        "--limit",
        metavar="N",
        default=str(DEFAULT_LIMIT),
        help=f"at most N, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_experiments_list)

    show = actions.add_parser("show", help="print one experiment with its latest analysis")
    show.add_argument("id", metavar="ID", help="the experiment id")
    show.set_defaults(func=cmd_experiments_show)

    stop = actions.add_parser("stop", help="stop an experiment; the control version stays")
    stop.add_argument("id", metavar="ID", help="the experiment id")
    stop.add_argument("--reason", metavar="TEXT", help="why, recorded with the experiment")
    stop.set_defaults(func=cmd_experiments_stop)
    _add_decision_parsers(actions)


def _add_decision_parsers(actions: Any) -> None:
    for name, func, what in (
        ("approve", cmd_experiments_approve, "approve the winner it proposes: it becomes active"),
        ("reject", cmd_experiments_reject, "reject the winner it proposes: the control stays"),
    ):
        parser = actions.add_parser(name, help=f"for an experiment awaiting approval: {what}")
        parser.add_argument("id", metavar="ID", help="the experiment id")
        parser.add_argument("--reason", metavar="TEXT", required=True, help=REASON_HELP)
        parser.set_defaults(func=func)
    promote = actions.add_parser(
        "promote",
        help="make one variant arm of a live experiment active by hand; the experiment ends",
    )
    promote.add_argument("id", metavar="ID", help="the experiment id")
    which = promote.add_mutually_exclusive_group(required=True)
    which.add_argument("--arm", metavar="A", help="the arm's id (see `experiments show`)")
    which.add_argument("--version", metavar="V", help="or the arm's version number")
    promote.add_argument("--reason", metavar="TEXT", required=True, help=REASON_HELP)
    promote.set_defaults(func=cmd_experiments_promote)


def _add_start_parser(actions: Any) -> None:
    start = actions.add_parser(
        "start",
        help="start an experiment: the active version against candidates",
        description="Start an A/B experiment of PROMPT's active version (the control) "
        "against candidate versions, as POST /experiments does. Settings left "
        "out take the same defaults (PROMOTION_CONFIDENCE, "
        "MIN_CONVERSATIONS_PER_ARM, ...). Prints the experiment as JSON.",
    )
    start.add_argument("prompt", metavar="PROMPT", help="the prompt's name")
    start.add_argument(
        "--variants",
        metavar="N,N",
        required=True,
        help="candidate version numbers, comma-separated (e.g. 2,3)",
    )
    start.add_argument(
        "--weights",
        metavar="W,W",
        help="traffic weights, control first then each variant (e.g. 2,1,1; default equal)",
    )
    start.add_argument(
        "--primary-metric",
        metavar="M",
        help=f"one of: {', '.join(PRIMARY_METRICS)} (default {_BUILT_IN.primary_metric})",
    )
    start.add_argument(
        "--confidence",
        metavar="P",
        help="confidence needed to promote, 0.5..0.9999 (default PROMOTION_CONFIDENCE)",
    )
    start.add_argument(
        "--min-conversations-per-arm",
        metavar="N",
        help="units per arm before any decision (default MIN_CONVERSATIONS_PER_ARM)",
    )
    start.add_argument(
        "--min-runtime-hours",
        metavar="H",
        help=f"hours before any decision (default {_BUILT_IN.min_runtime_hours:g})",
    )
    start.add_argument(
        "--max-runtime-hours",
        metavar="H",
        help="hours after which it ends without a winner "
        f"(default {_BUILT_IN.max_runtime_hours:g})",
    )
    start.add_argument(
        "--guardrails",
        metavar="JSON",
        help="a JSON list of guardrails, or @FILE to read one from a file "
        "(default: non-inferiority on "
        f"{', '.join(g.metric for g in _BUILT_IN.guardrails)})",
    )
    start.set_defaults(func=cmd_experiments_start)


def _guardrails(raw: str) -> Any:
    """`--guardrails` as the JSON it holds, or that of the file `@FILE` names."""
    text, where = raw, ""
    if raw.startswith("@"):
        source = raw[1:]
        where = f" in {source}"
        try:
            text = Path(source).read_bytes().decode("utf-8")
        except OSError as exc:
            raise InvalidInput(
                f"guardrails: cannot read {source}: {exc.strerror or exc}", field="guardrails"
            ) from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"guardrails: {source} is not UTF-8 text (byte {exc.start})", field="guardrails"
            ) from None
    try:
        return strict_json.loads(text)
    except strict_json.JsonRejected as exc:
        raise InvalidInput(f"guardrails{where} is {exc}", field="guardrails") from None


def start_request(args: argparse.Namespace) -> dict[str, Any]:
    """The options as the POST /experiments body they stand for (only those given)."""
    try:
        prompt = prompt_text.validate_name(args.prompt)
    except InvalidInput as exc:
        raise InvalidInput(f"prompt {exc}", field="prompt") from None
    body: dict[str, Any] = {
        "prompt": prompt,
        "variants": [
            parse_whole(
                part, "variants", 1, MAX_ID, what="version numbers separated by commas, like 2,3"
            )
            for part in args.variants.split(",")
        ],
    }
    if args.weights is not None:
        body["weights"] = [
            parse_decimal(
                part, "weights", what="numbers separated by commas, control first, like 2,1,1"
            )
            for part in args.weights.split(",")
        ]
    for field in ("confidence", "min_runtime_hours", "max_runtime_hours"):
        if getattr(args, field) is not None:
            body[field] = parse_decimal(
                getattr(args, field), field, what="a number like 0.95 or 24"
            )
    if args.min_conversations_per_arm is not None:
        body["min_conversations_per_arm"] = parse_whole(
            args.min_conversations_per_arm,
            "min_conversations_per_arm",
            1,
            MAX_MIN_CONVERSATIONS_PER_ARM,
        )
    if args.primary_metric is not None:
        body["primary_metric"] = args.primary_metric
    if args.guardrails is not None:
        body["guardrails"] = _guardrails(args.guardrails)
    return body


def cmd_experiments_start(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    body = start_request(args)
    experiment = settings_with_defaults(body, settings)
    with session_factory(engine).begin() as session:
        view = store.create_experiment(
            session,
            body["prompt"],
            body["variants"],
            weights=body.get("weights"),
            settings=experiment,
            created_by=CLI_ACTOR,
            now=utcnow(),
        )
    return print_json(view.to_dict())


def cmd_experiments_list(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    limit = parse_whole(args.limit, "limit", 1, MAX_LIMIT)
    with session_factory(engine)() as session:
        views = store.list_experiments(session, status=args.status, prompt=args.prompt, limit=limit)
    if args.json:
        return print_json({"experiments": [v.to_dict() for v in views]})
    print(format_table(views))
    return 0


def cmd_experiments_show(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    with session_factory(engine)() as session:
        view = store.get_experiment(session, parse_id(args.id))
    return print_json(view.to_dict())


def cmd_experiments_stop(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    experiment_id = parse_id(args.id)
    with session_factory(engine).begin() as session:
        view = transitions.stop_experiment(
            session, experiment_id, actor=CLI_ACTOR, reason=args.reason, now=utcnow()
        )
    _announce(settings, view, "stop", args.reason)
    return print_json(view.to_dict())


def _announce(
    settings: Settings, view: store.ExperimentView, action: str, reason: str | None
) -> None:
    """The `experiment.action` webhook, delivered before the command exits; a receiver that
    does not take it gets a warning, not a failed command (the change is saved)."""
    event = approvals.action_event(view, action, actor=CLI_ACTOR, reason=reason)
    if send_now(settings, EXPERIMENT_ACTION, event) is False:
        print(
            f"warning: the {EXPERIMENT_ACTION} webhook was not delivered to WEBHOOK_URL "
            "(the change itself is saved)",
            file=sys.stderr,
        )


def _decided(
    settings: Settings,
    engine: Engine,
    act: Callable[..., store.ExperimentView],
    action: str,
    experiment_id: int,
    body: approvals.DecisionBody | approvals.PromoteBody,
) -> int:
    with session_factory(engine).begin() as session:
        view = act(session, experiment_id, body, actor=CLI_ACTOR, now=utcnow())
    _announce(settings, view, action, body.reason)
    return print_json(view.to_dict())


def cmd_experiments_approve(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    body = validate(approvals.DecisionBody, {"reason": args.reason})
    return _decided(settings, engine, approvals.approve, "approve", parse_id(args.id), body)


def cmd_experiments_reject(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    body = validate(approvals.DecisionBody, {"reason": args.reason})
    return _decided(settings, engine, approvals.reject, "reject", parse_id(args.id), body)


def cmd_experiments_promote(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    experiment_id = parse_id(args.id)
    which: dict[str, Any] = {}
    if args.arm is not None:
        which["arm"] = parse_id(args.arm, "arm")
    if args.version is not None:
        which["version"] = parse_version(args.version, "version")
    body = validate(approvals.PromoteBody, {**which, "reason": args.reason})
    return _decided(settings, engine, approvals.promote, "promote", experiment_id, body)


def _row(view: store.ExperimentView) -> tuple[str, ...]:
    arms = " ".join(
        f"{a.version}{'*' if a.is_control else ''}"
        f"{'(x)' if a.status != 'active' else ''}:{a.conversations}"
        for a in view.arms
    )
    return (
        str(view.id),
        view.prompt,
        view.status,
        arms,
        "-" if view.winner_version is None else str(view.winner_version),
        table_time(view.started_at),
    )


def format_table(views: Sequence[store.ExperimentView]) -> str:
    """`*` marks the control arm, `(x)` a stopped arm."""
    return table(TABLE_HEADER, map(_row, views)) if views else "no experiments match"
