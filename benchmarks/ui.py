"""Dashboard benchmark: server time and database queries per /ui/ page at scale.

The world is tests/support/ui_seed.py's `seed_large` (100 prompts x 50 versions, 1,000
experiments, 200 stored checks on the running one, insights, jobs), written into a fresh
SQLite file (or, with --postgres, a throwaway PostgreSQL cluster). The real service app
(create_app) runs in this process behind aiohttp's test server; a client logs in as a browser
does and asks each page --rounds times. Each answer's Server-Timing header gives the server's
time for the request (`app;dur`, from the first middleware to the last byte of the page) and
the statements the request ran (`db;desc="queries=N"`, the session lookup included).

The baseline, measured in the same run, is the login page (a template rendered with no
database read): each page's median is printed as a multiple of it. The aim is under 200 ms
of server time per page. To show there is no N+1, the same pages are also asked on
`seed_small` (3 prompts x 4 versions, 4 experiments, 12 checks): the query counts must be
equal at both sizes.

Usage: python -m benchmarks.ui [--rounds 20] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import create_db_engine  # noqa: E402
from tests.support.http_client import ADMIN_TOKEN, build_app, start_client  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402
from tests.support.ui_client import logged_in  # noqa: E402
from tests.support.ui_seed import Seeded, seed_large, seed_small  # noqa: E402

AIM_MS = 200.0
BASELINE = ("login page (baseline)", "/ui/login")
_APP_DUR = re.compile(r"app;dur=([0-9.]+)")
_QUERIES = re.compile(r"queries=(\d+)")


def pages(seeded: Seeded) -> list[tuple[str, str]]:
    """(label, path) of every page the benchmark asks, for this world."""
    prompt = seeded.multi_version_prompt or seeded.prompt_names[0]
    found = [
        ("overview", "/ui/"),
        ("prompts", "/ui/prompts"),
        ("prompt (all versions)", f"/ui/prompts/{prompt}"),
        ("version text", f"/ui/prompts/{prompt}/versions/2"),
        ("diff v1..active, side", f"/ui/prompts/{prompt}/diff?from=1&view=side"),
        ("experiments", "/ui/experiments"),
        ("insights", "/ui/insights"),
        ("jobs", "/ui/jobs"),
        ("new job form", "/ui/jobs/new"),
    ]
    if seeded.checked_experiment_id is not None:
        found.insert(
            6,
            (
                f"experiment, {seeded.checks} checks",
                f"/ui/experiments/{seeded.checked_experiment_id}",
            ),
        )
    if seeded.failed_job_id is not None:
        found.append(("failed job", f"/ui/jobs/{seeded.failed_job_id}"))
    return found


def timing_of(header: str) -> tuple[float, int]:
    """(server milliseconds, statements) from a Server-Timing header."""
    dur, queries = _APP_DUR.search(header), _QUERIES.search(header)
    if dur is None or queries is None:
        raise RuntimeError(f"no app;dur or queries in Server-Timing: {header!r}")
    return float(dur.group(1)), int(queries.group(1))


async def measure(
    engine: Engine, paths: list[tuple[str, str]], rounds: int
) -> dict[str, tuple[list[float], int, float]]:
    """Per label: the server times (ms), the statement count, and the client's median ms."""
    client = await start_client(build_app(engine))
    try:
        await logged_in(client, ADMIN_TOKEN)
        results: dict[str, tuple[list[float], int, float]] = {}
        for label, path in [BASELINE, *paths]:
            server: list[float] = []
            wall: list[float] = []
            counts: set[int] = set()
            for _ in range(rounds + 1):  # the first request warms caches and is dropped
                started = time.perf_counter()
                answer = await client.get(path, allow_redirects=False)
                await answer.read()
                elapsed = (time.perf_counter() - started) * 1000
                if answer.status != 200:
                    raise RuntimeError(f"{path} answered {answer.status}")
                ms, queries = timing_of(answer.headers.get("Server-Timing", ""))
                server.append(ms)
                wall.append(elapsed)
                counts.add(queries)
            if len(counts) != 1:
                raise RuntimeError(f"{path} ran a varying number of statements: {sorted(counts)}")
            results[label] = (server[1:], counts.pop(), statistics.median(wall[1:]))
        return results
    finally:
        await client.close()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@contextmanager
def database(postgres: bool) -> Iterator[Callable[[], str]]:
    """A function giving the URL of a fresh, empty database each time it is called."""
    if not postgres:
        with tempfile.TemporaryDirectory(prefix="pw-ui-bench-") as folder:
            names = iter(range(1_000))
            yield lambda: f"sqlite:///{folder}/ui-{next(names)}.db"
        return
    cluster = start_cluster()
    admin = create_db_engine(cluster.url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        names = iter(range(1_000))

        def fresh() -> str:
            name = f"ui_{next(names)}"
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {name}"))
            return cluster.url.rsplit("/", 1)[0] + f"/{name}"

        yield fresh
    finally:
        admin.dispose()
        cluster.destroy()


def seeded_engine(url: str, seed: Callable[[Engine, datetime], Seeded]) -> tuple[Engine, Seeded]:
    engine = create_db_engine(url)
    started = time.perf_counter()
    seeded = seed(engine, utcnow())
    print(f"  seeded {seed.__name__} in {time.perf_counter() - started:.1f} s", flush=True)
    return engine, seeded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args(argv)
    with database(args.postgres) as fresh:
        print(f"database: {'PostgreSQL (throwaway cluster)' if args.postgres else 'SQLite file'}")
        large_engine, large = seeded_engine(fresh(), seed_large)
        small_engine, small = seeded_engine(fresh(), seed_small)
        at_scale = asyncio.run(measure(large_engine, pages(large), args.rounds))
        # Same labels at both sizes except the experiment's check count.
        small_results = asyncio.run(measure(small_engine, pages(small), 3))
        large_engine.dispose()
        small_engine.dispose()
    baseline = statistics.median(at_scale[BASELINE[0]][0])
    small_counts = [count for _, count, _ in small_results.values()]
    print(f"\nseed_large, {args.rounds} rounds a page; server time from Server-Timing")
    print(
        f"{'page':34} {'median ms':>9} {'p95 ms':>8} {'x base':>7} {'client ms':>9} "
        f"{'queries':>7} {'small':>5}"
    )
    worst = 0.0
    n_plus_one = []
    for (label, (times, count, wall)), small_count in zip(
        at_scale.items(), small_counts, strict=True
    ):
        median = statistics.median(times)
        if label != BASELINE[0]:
            worst = max(worst, median)
        if count != small_count:
            n_plus_one.append(label)
        print(
            f"{label:34} {median:9.1f} {p95(times):8.1f} {median / baseline:7.1f} "
            f"{wall:9.1f} {count:7d} {small_count:5d}"
        )
    print(
        f"\nslowest page median: {worst:.1f} ms (aim: under {AIM_MS:.0f} ms) -> "
        f"{'met' if worst < AIM_MS else 'NOT met'}"
    )
    print(
        "query counts equal at both sizes (no N+1): "
        + ("yes" if not n_plus_one else "NO: " + ", ".join(n_plus_one))
    )
    return 0 if worst < AIM_MS and not n_plus_one else 1


if __name__ == "__main__":
    sys.exit(main())
