"""`prompt-worker demo`: run the whole optimization loop on simulated traffic."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from optimizer.config import Settings
from optimizer.errors import InvalidInput


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = subparsers.add_parser(
        "demo",
        help="simulate days of traffic on a fresh SQLite file and show the loop",
        description="Simulates an application whose prompt does badly on one segment, then "
        "runs hourly pattern analysis and 15-minute monitoring in accelerated "
        "time, printing each step: insights, variants, the replay of each candidate "
        "with the judge's win rates and verdicts, experiments and promotions. "
        "Uses Claude when ANTHROPIC_API_KEY is set (it first checks with one tiny request "
        "that the API answers and stops with one line if not, as "
        "it does at the first failed call), otherwise, or with "
        "LLM_PROVIDER=offline, the deterministic offline generator. "
        "DATABASE_URL is not used.",
    )
    demo.add_argument(
        "--days", type=float, default=3.0, help="simulated days (default 3, at most 14)"
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--per-tick",
        type=int,
        default=60,
        metavar="N",
        help="conversations per simulated 15 minutes (default 60)",
    )
    demo.add_argument(
        "--database",
        type=Path,
        metavar="PATH",
        help="SQLite file to create (must not exist; default: a new temporary directory)",
    )
    demo.set_defaults(func=cmd_demo, standalone=True)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 < args.days <= 14:
        raise InvalidInput("--days must be more than 0 and at most 14", field="days")
    if not 1 <= args.per_tick <= 1000:
        raise InvalidInput("--per-tick must be between 1 and 1000", field="per_tick")
    provider = settings.llm_provider
    if provider == "anthropic" and not settings.anthropic_api_key:
        provider = "offline"
    settings = settings.model_copy(update={"llm_provider": provider})
    database = _database(args.database)
    # Imported here: they need the LLM client.
    from optimizer.demo.report import print_summary
    from optimizer.demo.run import DemoStopped, run_demo

    if provider == "anthropic":
        # Before anything is created: a demo that cannot reach Claude stops in seconds.
        from optimizer.demo.probe import probe_anthropic

        problem = asyncio.run(probe_anthropic(settings))
        if problem is not None:
            raise DemoStopped(problem)
    if database is None:
        database = Path(tempfile.mkdtemp(prefix="prompt-worker-demo-")) / "demo.db"
    started = time.monotonic()
    summary = asyncio.run(
        run_demo(
            database.resolve(),
            days=args.days,
            seed=args.seed,
            per_tick=args.per_tick,
            settings=settings,
            out=sys.stdout,
        )
    )
    print_summary(summary, database.resolve(), time.monotonic() - started, sys.stdout)
    return 0


def _database(database: Path | None) -> Path | None:
    """The --database path, checked; None: a new temporary directory, made later."""
    if database is None:
        return None
    if database.exists():
        raise InvalidInput(
            f"{database} already exists; the demo needs a fresh file "
            "(pick another --database or delete it)",
            field="database",
        )
    if not database.parent.is_dir():
        raise InvalidInput(f"folder {database.parent} does not exist", field="database")
    return database
