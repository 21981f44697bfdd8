"""`prompt-worker status`: queue, recent jobs, unfinished (running, paused or awaiting
approval) experiments and LLM spend on one screen, or as JSON with --json."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from optimizer.cli.output import print_json, table
from optimizer.clock import table_time, utcnow
from optimizer.config import Settings
from optimizer.status import (
    ArmLine,
    ExperimentLine,
    JobLine,
    LlmSpend,
    Status,
    excerpt,
    read_status,
)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = subparsers.add_parser(
        "status",
        help="configuration problems, queue depth, recent jobs, running, paused and "
        "awaiting-approval experiments and LLM spend today",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    report = read_status(engine, settings, utcnow())
    if args.json:
        return print_json(report.to_dict())
    print(format_status(report))
    return 0


# --- text --------------------------------------------------------------------------------


def age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _jobs(jobs: Sequence[JobLine]) -> str:
    if not jobs:
        return "  no jobs yet"
    return table(
        ("ID", "TYPE", "STATUS", "ATTEMPTS", "AGE", "ERROR"),
        [
            (
                str(j.id),
                j.type,
                j.status,
                f"{j.attempts}/{j.max_attempts}",
                age(j.age_seconds),
                j.error or "",
            )
            for j in jobs
        ],
        indent="  ",
    )


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4g}"


def _interval(arm: ArmLine) -> str:
    if arm.is_control:
        return "(control)"
    if arm.error:
        return f"n/a ({arm.error})"
    if arm.low is None and arm.high is None:
        return "-" if arm.diff is None else "unbounded"
    level = f"{arm.level:.1%} " if arm.level is not None else ""
    return f"{level}[{_signed(arm.low)}, {_signed(arm.high)}]"


REASON_CHARS = 1000  # an SRM pause reason with its advice runs to ~520


def _experiment(e: ExperimentLine) -> str:
    checked = (
        f"last check {table_time(e.checked_at)}: {e.decision}"
        if e.checked_at
        else "not checked yet"
    )
    head = (
        f"  #{e.id} {e.prompt} {e.status.upper()} (metric {e.primary_metric}, "
        f"since {table_time(e.started_at)}), {checked}"
    )
    if e.status == "awaiting_approval":
        head += (
            f"\n    WAITING FOR APPROVAL of version {e.winner_version}: "
            f"`prompt-worker experiments approve {e.id} --reason ...` (or reject)"
        )
    if e.status != "running":
        # Not running means waiting for a person: say why, since that says what to do.
        head += f"\n    {e.status}: {excerpt(e.reason, REASON_CHARS) or 'no reason recorded'}"
    rows = [
        (
            str(a.version),
            "control" if a.is_control else "variant",
            a.status,
            str(a.conversations),
            _signed(None if a.is_control else a.diff),
            _interval(a),
        )
        for a in e.arms
    ]
    return (
        head
        + "\n"
        + table(
            ("VERSION", "ROLE", "STATUS", "CONVERSATIONS", "DIFF", "INTERVAL"), rows, indent="    "
        )
    )


def _llm(s: LlmSpend) -> str:
    share = s.cost_today_usd / s.daily_budget_usd if s.daily_budget_usd else 0.0
    return (
        f"  calls {s.calls_today}, tokens in {s.input_tokens:,} / out {s.output_tokens:,}"
        f" (cache write {s.cache_write_tokens:,}, read {s.cache_read_tokens:,})\n"
        f"  cost ${s.cost_today_usd:.4f} of ${s.daily_budget_usd:.2f} "
        f"LLM_DAILY_BUDGET_USD ({share:.1%})\n"
        f"  Anthropic calls in the last hour: {s.calls_last_hour} of "
        f"{s.calls_per_hour} LLM_CALLS_PER_HOUR"
    )


def format_status(report: Status) -> str:
    queue = "  ".join(f"{status} {n}" for status, n in report.queue.items())
    experiments = (
        "\n".join(_experiment(e) for e in report.experiments)
        or "  no running or paused experiments"
    )
    problems = (
        ["Configuration problems", *(f"  - {p.message}" for p in report.problems), ""]
        if report.problems
        else []
    )
    return "\n".join(
        [
            f"prompt-worker status at {table_time(report.generated_at)}",
            "",
            *problems,
            f"Queue: {queue}",
            "",
            f"Recent jobs (newest {len(report.recent_jobs)})",
            _jobs(report.recent_jobs),
            "",
            "Experiments not finished, awaiting approval and paused first (interval: arm "
            "minus control on the metric, always valid)",
            experiments,
            "",
            "LLM spend today (UTC)",
            _llm(report.llm),
        ]
    )
