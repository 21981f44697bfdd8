"""`prompt-worker evaluations NAME VERSION [--sample failing|holdout] [--limit N]
[--before ID] [--json]`: a version's replay against the active version, as people read it.

The text form prints the summary (win rates with their intervals, counts, cost, status and
its reason), then each evaluation, newest first: conversation, segment, both verdicts and
reasons, and both prompts' answers cut to a readable length. `--json` prints what
GET /prompts/{name}/versions/{version}/evaluations answers.
"""

from __future__ import annotations

import argparse
import unicodedata

from sqlalchemy.engine import Engine

from optimizer import evaluations, prompt_text
from optimizer.cli.output import print_json
from optimizer.cli.prompts import parse_version
from optimizer.clock import table_time
from optimizer.config import Settings
from optimizer.db import read_only, session_factory
from optimizer.text_input import parse_id, parse_whole

ANSWER_CHARS = 300
REASON_CHARS = 600
INDENT = "    "


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = subparsers.add_parser(
        "evaluations",
        help="a version's replay: win rates, verdicts, reasons and answers",
        description="Show how a candidate version did when replayed against the active "
        "version: its win rates and the judge's verdicts, newest first.",
    )
    command.add_argument("name", metavar="NAME", help="the prompt's name")
    command.add_argument("version", metavar="VERSION", help="the version number")
    command.add_argument("--sample", metavar="S", help="only failing or only holdout")
    command.add_argument(
        "--limit",
        metavar="N",
        default=str(evaluations.DEFAULT_LIMIT),
        help=f"at most N evaluations, 1..{evaluations.MAX_LIMIT} "
        f"(default {evaluations.DEFAULT_LIMIT})",
    )
    command.add_argument(
        "--before", metavar="ID", help="only evaluations older than this id (the next page)"
    )
    command.add_argument("--json", action="store_true", help="print JSON instead of text")
    command.set_defaults(func=cmd_evaluations)


def cmd_evaluations(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    name = prompt_text.validate_name(args.name)
    number = parse_version(args.version, "VERSION")
    sample = evaluations.parse_sample(args.sample)
    limit = parse_whole(args.limit, "limit", 1, evaluations.MAX_LIMIT)
    before = parse_id(args.before, "before") if args.before is not None else None
    with session_factory(read_only(engine))() as session:
        summary, page = evaluations.replay_of(
            session, name, number, sample=sample, before_id=before, limit=limit
        )
    if args.json:
        return print_json(evaluations.page_document(name, summary, page), ensure_ascii=False)
    print(format_replay(name, summary, page, sample=sample, limit=limit))
    return 0


# --- text ------------------------------------------------------------------------------------


def one_line(text: str, limit: int) -> str:
    """`text` on one line (whitespace runs become one space) with no control character left
    to move a terminal's cursor, cut at `limit` characters with what was left out counted."""
    flat = " ".join(text.split())
    flat = "".join("\ufffd" if unicodedata.category(c) == "Cc" else c for c in flat)
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit].rstrip()}... ({len(flat) - limit:,} more characters)"


def format_summary(name: str, summary: evaluations.ReplaySummary) -> list[str]:
    lines = [f"{name} v{summary.version}: {summary.status}"]
    if summary.status_reason:
        lines.append(f"  reason: {one_line(summary.status_reason, REASON_CHARS)}")
    if not summary.replayed:
        lines.append("  not replayed: no evaluations are stored for this version")
        return lines
    control = "?" if summary.control_version is None else f"v{summary.control_version}"
    cost = "-" if summary.cost_usd is None else f"${summary.cost_usd:.4f}"
    lines += [
        f"  judged against {control}: {summary.evaluations} evaluations, "
        f"{summary.input_tokens:,} tokens in, {summary.output_tokens:,} out, {cost}, "
        f"last {table_time(summary.replayed_at)}",
        f"  failing  {evaluations.rate_text(summary.failing)}",
        f"  holdout  {evaluations.rate_text(summary.holdout)}",
    ]
    return lines


def _verdicts(view: evaluations.EvaluationView) -> str:
    text = (
        f"verdicts: {view.verdict_candidate_first} (candidate shown first), "
        f"{view.verdict_control_first} (control shown first)"
    )
    if view.flipped:
        text += ": changed with the order"
    return text + ("" if view.score is None else f"; score {view.score:g}")


def _answers(label: str, answers: tuple[str, ...]) -> list[str]:
    if not answers:
        return [f"{INDENT}{label}: (no answer)"]
    return [
        f"{INDENT}{label} {i}/{len(answers)}: {one_line(answer, ANSWER_CHARS) or '(empty)'}"
        for i, answer in enumerate(answers, 1)
    ]


def format_evaluation(view: evaluations.EvaluationView) -> list[str]:
    conversation = (
        "conversation deleted"
        if view.conversation_id is None
        else f"conversation {view.conversation_id}"
    )
    segment = "no segment" if view.segment is None else f"segment {one_line(view.segment, 80)}"
    control = "?" if view.control_version is None else f"v{view.control_version}"
    lines = [
        f"#{view.id}  {view.sample}  {conversation}  {segment}  against {control}  "
        f"{table_time(view.created_at)}",
        f"{INDENT}{_verdicts(view)}",
    ]
    for order, reason in (
        ("candidate first", view.reason_candidate_first),
        ("control first", view.reason_control_first),
    ):
        said = "(none given)" if not reason else one_line(reason, REASON_CHARS)
        lines.append(f"{INDENT}reason ({order}): {said}")
    return (
        lines
        + _answers("candidate answer", view.candidate_answers)
        + _answers("control answer", view.control_answers)
    )


def format_replay(
    name: str,
    summary: evaluations.ReplaySummary,
    page: evaluations.EvaluationPage,
    *,
    sample: str | None,
    limit: int,
) -> str:
    lines = format_summary(name, summary)
    if summary.replayed or page.evaluations:
        lines.append("")
        if not page.evaluations:
            lines.append(f"no {sample or ''} evaluations on this page".replace("  ", " "))
        for view in page.evaluations:
            lines += [*format_evaluation(view), ""]
    if page.next_before is not None:
        more = f"prompt-worker evaluations {name} {summary.version} --before {page.next_before}"
        if sample:
            more += f" --sample {sample}"
        if limit != evaluations.DEFAULT_LIMIT:
            more += f" --limit {limit}"
        lines.append(f"more: {more}")
    return "\n".join(lines).rstrip("\n")
