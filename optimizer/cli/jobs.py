"""`prompt-worker jobs add|list|show|cancel|retry`: the queue from a shell."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from models.jobs import JOB_STATUSES
from optimizer.cli.output import print_json, table
from optimizer.clock import table_time, utcnow
from optimizer.config import Settings
from optimizer.errors import InvalidInput
from optimizer.jobs import registry
from optimizer.jobs.registry import JOB_TYPES
from optimizer.runtime import queue
from optimizer.runtime.job_input import parse_job_type, parse_new_job
from optimizer.text_input import parse_id, parse_whole

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
ERROR_COLUMN_CHARS = 48
TABLE_HEADER = ("ID", "TYPE", "STATUS", "PRIO", "ATTEMPTS", "PROGRESS", "CREATED", "ERROR")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    jobs = subparsers.add_parser("jobs", help="add, list, show, cancel and retry jobs")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="queue a new job and print it as JSON")
    add.add_argument("type", metavar="TYPE", help=f"one of: {', '.join(JOB_TYPES)}")
    add.add_argument("--prompt", metavar="NAME", help="the prompt the job works on")
    add.add_argument("--payload", metavar="JSON", help="a JSON object passed to the job")
    add.add_argument("--priority", metavar="N", default="0", help="higher runs first (default 0)")
    add.add_argument("--run-at", metavar="ISO", help="not before this time (ISO 8601)")
    add.set_defaults(func=cmd_jobs_add)

    listing = actions.add_parser("list", help="list the newest jobs")
    listing.add_argument("--status", metavar="S", help=f"one of: {', '.join(JOB_STATUSES)}")
    listing.add_argument("--type", metavar="T", help="only jobs of this type")
    listing.add_argument(
        "--limit",
        metavar="N",
        default=str(DEFAULT_LIMIT),
        help=f"at most N jobs, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_jobs_list)

    for name, func, text in (
        ("show", cmd_jobs_show, "print one job as JSON"),
        ("cancel", cmd_jobs_cancel, "cancel a pending or running job"),
        ("retry", cmd_jobs_retry, "requeue a failed or cancelled job"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("id", metavar="ID", help="the job id")
        one.set_defaults(func=func)


def parse_status(raw: str | None) -> str | None:
    if raw is not None and raw not in JOB_STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(JOB_STATUSES)}; got {raw[:40]!r}", field="status"
        )
    return raw


def cmd_jobs_add(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    new_job = parse_new_job(
        args.type,
        prompt=args.prompt,
        payload=args.payload,
        priority=args.priority,
        run_at=args.run_at,
    )
    attempts = registry.max_attempts(new_job.type, settings)
    job, _ = queue.enqueue(engine, new_job, max_attempts=attempts, now=utcnow())
    return print_json(job.to_dict())


def cmd_jobs_list(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    jobs = queue.list_jobs(
        engine,
        status=parse_status(args.status),
        job_type=parse_job_type(args.type) if args.type is not None else None,
        limit=parse_whole(args.limit, "limit", 1, MAX_LIMIT),
    )
    if args.json:
        return print_json({"jobs": [job.to_dict() for job in jobs]})
    print(format_table(jobs))
    return 0


def cmd_jobs_show(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    return print_json(queue.get_job(engine, parse_id(args.id)).to_dict())


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    return print_json(queue.cancel(engine, parse_id(args.id), now=utcnow()).to_dict())


def cmd_jobs_retry(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    return print_json(queue.retry(engine, parse_id(args.id), now=utcnow()).to_dict())


def _row(job: queue.Job) -> tuple[str, ...]:
    status = (
        f"{job.status} (cancel requested)"
        if (job.cancel_requested and job.status == "running")
        else job.status
    )
    error = " ".join((job.error or "").split())
    if len(error) > ERROR_COLUMN_CHARS:
        error = error[: ERROR_COLUMN_CHARS - 3] + "..."
    return (
        str(job.id),
        job.type,
        status,
        str(job.priority),
        f"{job.attempts}/{job.max_attempts}",
        f"{job.progress}%",
        table_time(job.created_at),
        error,
    )


def format_table(jobs: Sequence[queue.Job]) -> str:
    return table(TABLE_HEADER, map(_row, jobs)) if jobs else "no jobs match"
