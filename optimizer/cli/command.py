"""`prompt-worker`: the root parser, `run`, `migrate`, and how every command ends.

User mistakes (bad input, unknown ids, an unusable DATABASE_URL, an unmigrated or unreachable
database) end with one `error: ...` line on stderr and exit status 1, never a traceback.
Usage mistakes are argparse's: exit status 2.

Only `migrate` creates a SQLite database file at DATABASE_URL (`demo` uses a file of its own
in a temporary folder). Every other command refuses a DATABASE_URL
that names a missing file and says where it looked: SQLite would otherwise create an empty,
unmigrated file wherever the command happened to run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from alembic.util.exc import CommandError
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from optimizer import db
from optimizer.cli import conversations as cli_conversations
from optimizer.cli import demo as cli_demo
from optimizer.cli import evaluations as cli_evaluations
from optimizer.cli import experiments as cli_experiments
from optimizer.cli import insights as cli_insights
from optimizer.cli import jobs as cli_jobs
from optimizer.cli import prompts as cli_prompts
from optimizer.cli import status as cli_status
from optimizer.config import DEFAULT_DATABASE_URL, Settings, load_settings
from optimizer.errors import ConfigError, InvalidInput, PromptWorkerError, describe

MIGRATE_HINT = "run `prompt-worker migrate`"

Command = Callable[[argparse.Namespace, Settings, Engine], int]


# --- argument parsing --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prompt-worker",
        description="Optimize LLM system prompts with safe A/B experiments. "
        "Settings come from the environment (DATABASE_URL, ...).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # func=None: `run` needs no engine of ours; the service builds its own pool.
    commands.add_parser("run", help="run the service (HTTP, scheduler, worker)").set_defaults(
        func=None
    )
    commands.add_parser(
        "migrate", help="bring the database schema up to date (creates a missing SQLite file)"
    ).set_defaults(func=cmd_migrate, creates_database=True)
    cli_jobs.register(commands)
    cli_prompts.register(commands)
    cli_evaluations.register(commands)
    cli_experiments.register(commands)
    cli_insights.register(commands)
    cli_conversations.register(commands)
    cli_status.register(commands)
    cli_demo.register(commands)
    return parser


# --- commands ----------------------------------------------------------------------------


def cmd_run(settings: Settings) -> int:
    refuse_missing_database(settings.database_url)
    # Imported here so the admin commands work (and start fast) without the service stack.
    from optimizer.service import run_service

    return run_service(settings)


def cmd_migrate(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    try:
        db.migrate(engine)
    except CommandError as exc:
        raise ConfigError(f"cannot migrate the database: {exc}") from None
    print(
        f"database {db.describe(settings.database_url)} is at schema revision "
        f"{db.current_revision(engine)} (the latest)"
    )
    return 0


# --- errors and the entry point ----------------------------------------------------------


def error_line(exc: PromptWorkerError) -> str:
    """The message on one line, led by the field at fault when the message does not name
    it (a check deep in the store says "version 1 is active", not which option held it)."""
    text = describe(exc)
    field = exc.field if isinstance(exc, InvalidInput) else None
    return text if not field or field in text else f"{field}: {text}"


def missing_database(url: str) -> str | None:
    """When `url` names a SQLite file that does not exist: where we looked and the ways out."""
    path = db.sqlite_file(url)
    if path is None or path.exists():
        return None
    source = f"DATABASE_URL={url}"
    if url == DEFAULT_DATABASE_URL:
        source += ", the default when it is unset"
    if not os.path.isabs(make_url(url).database or ""):
        source += ", a path relative to the current directory"
    return (
        f"no database at {path} ({source}): set DATABASE_URL to your database "
        "(sqlite:////absolute/path/prompt_worker.db or postgresql://user:pass@host/db), "
        "or run `prompt-worker migrate` first to create this one (`make run` migrates, "
        "then starts the service)"
    )


def refuse_missing_database(url: str) -> None:
    problem = missing_database(url)
    if problem is not None:
        raise ConfigError(problem)


def database_problem(engine: Engine, exc: SQLAlchemyError, *, creating: bool = False) -> str:
    """Say what to do: a missing SQLite file where we looked, an unmigrated schema the
    migrate hint, anything else the database's own first line (SQLAlchemy appends the SQL
    and a link on later lines). `creating`: the command was allowed to create the file."""
    url = engine.url.render_as_string(hide_password=False)
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = (str(source).strip().splitlines() or [type(source).__name__])[0][:300]
    missing = missing_database(url)
    if missing is not None and not creating:
        return missing
    path = db.sqlite_file(url)
    if missing is not None and path is not None:
        reason = f"folder {path.parent} does not exist" if not path.parent.is_dir() else first
        return f"cannot create the database {path}: {reason}"
    try:
        current, head = db.current_revision(engine), db.head_revision()
    except (SQLAlchemyError, PromptWorkerError):
        return f"cannot reach the database: {first}"
    where = db.describe(url)
    if current is None:
        return f"database {where} has no prompt-worker schema; {MIGRATE_HINT}"
    if current != head:
        return f"database {where} has schema {current}, this version needs {head}; {MIGRATE_HINT}"
    return f"database error: {first}"


def run_with_engine(func: Command, args: argparse.Namespace, settings: Settings) -> int:
    # Input is checked before the first connection, so a bad argument is reported even
    # where there is no database; the connection then refuses to create a missing file.
    creating = bool(getattr(args, "creates_database", False))
    engine = db.create_db_engine(settings.database_url, create_missing=creating)
    try:
        return func(args, settings, engine)
    except SQLAlchemyError as exc:
        raise ConfigError(database_problem(engine, exc, creating=creating)) from None
    finally:
        engine.dispose()


def _dispatch(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.func is None:
        return cmd_run(settings)
    if getattr(args, "standalone", False):  # commands that open no DATABASE_URL
        return int(args.func(args, settings))
    return run_with_engine(args.func, args, settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except PromptWorkerError as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`prompt-worker jobs list | head`): not an error worth a trace.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
