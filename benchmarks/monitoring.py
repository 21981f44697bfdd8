"""Monitoring benchmark: the cost of a monitoring pass as the experiments' history grows.

50 running experiments (control and one variant each) on a throwaway PostgreSQL; their
conversations arrive spread and interleaved over the 100 arms, the way live traffic does,
from a population of returning users (each experiment's users come back many times, one
segment each) with heavy-tailed latency and cost. The history is grown to 1M, 5M and 20M
conversations (--sizes). At each size:
- catch-up: one pass after the bulk load (every row new to the rollup);
- steady state: INCREMENT new conversations (15 minutes at 100 conversations a second,
  as between two scheduled passes), then one pass; the median of REPEATS;
- baseline, measured in the same run: one full per-unit grouping of every experiment's
  conversations (group by arm and unit, count per arm), what any check that scans raw rows
  costs before it reads a single metric;
- peak Python memory of a steady pass (tracemalloc) and the process's peak RSS growth.
The aim: a steady pass at 20M within 2x of the pass at 1M, memory flat. The experiments
started just now, so the runtime gate keeps every decision at `continue` and the same
experiments are checked on every pass.

Usage: python -m benchmarks.monitoring [--sizes 1000000,5000000,20000000]
                                       [--increment 90000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import (  # noqa: E402
    GROUPING_WORK_MEM,
    create_db_engine,
    migrate,
    session_factory,
)
from optimizer.experiments import store  # noqa: E402
from optimizer.jobs.context import ActiveJob  # noqa: E402
from optimizer.jobs.monitoring import monitor_experiments  # noqa: E402
from optimizer.runtime import queue  # noqa: E402
from optimizer.runtime.queue import NewJob  # noqa: E402
from tests.support.experiments import make_ctx, seed_prompt  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402

EXPERIMENTS = 50
REPEATS = 3
USERS_PER_ARM = 100_000

ARM_MAP = """CREATE TEMP TABLE arm_map AS
SELECT row_number() OVER (ORDER BY a.id) - 1 AS idx, v.prompt_id AS prompt_id,
       a.version_id AS version_id, a.experiment_id AS experiment_id, a.id AS arm_id
FROM ai_ab_experiment_arms a JOIN ai_prompt_versions v ON v.id = a.version_id"""

# Row g goes to arm g % arms; k = g / arms numbers that arm's rows. Users: a few are heavy
# (k % 7 == 0 picks one of 1,000), the rest spread over USERS_PER_ARM; metrics are
# functions of k, so every arm sees the same distributions (30% success) and no check stops
# an arm. Latency and cost have heavy right tails (a power of k's digits).
FILL = """INSERT INTO conversations (prompt_id, version_id, experiment_id, arm_id,
                           assigned_arm_id, unit_id, success, rating, latency_ms, cost_usd,
                           segment)
SELECT m.prompt_id, m.version_id, m.experiment_id, m.arm_id, m.arm_id,
       'u' || m.arm_id || '-' || u.unit,
       k % 10 < 3, 1 + k % 5,
       100 + (k * 37) % 900 + power(((k * 7919) % 1000) / 1000.0, 12) * 60000,
       ((k % 7) + power(((k * 104729) % 1000) / 1000.0, 16) * 500) / 1000.0,
       'seg' || (u.unit % 4)
FROM (SELECT g, g / :arms AS k
      FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) g) s
JOIN arm_map m ON m.idx = s.g % :arms
CROSS JOIN LATERAL (SELECT CASE WHEN s.k % 7 = 0 THEN (s.k * 31) % 1000
                           ELSE (s.k * 2654435761) % :users END AS unit) u"""

FULL_GROUPING = text("""SELECT arm_id, count(*) FROM (
  SELECT arm_id, unit_id, count(*) AS n FROM conversations
  WHERE experiment_id = :experiment_id GROUP BY arm_id, unit_id) AS u GROUP BY arm_id""")


def setup_experiments(engine: Engine) -> list[int]:
    ids = []
    for i in range(EXPERIMENTS):
        name = f"bench-{i:02d}"
        seed_prompt(engine, name, candidates=1)
        with session_factory(engine).begin() as session:
            ids.append(store.create_experiment(session, name, [2], now=utcnow()).id)
    return ids


def fill(engine: Engine, start: int, stop: int) -> float:
    t0 = time.perf_counter()
    step = 2_000_000  # one transaction per step keeps the temporary files small
    for lo in range(start, stop, step):
        with engine.begin() as conn:
            # The generated rows reference existing arms by construction: skipping the
            # foreign-key triggers only speeds up the generation, which is not measured.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(ARM_MAP))
            params = {
                "start": lo,
                "stop": min(stop, lo + step),
                "arms": 2 * EXPERIMENTS,
                "users": USERS_PER_ARM,
            }
            conn.execute(text(FILL), params)
            conn.execute(text("DROP TABLE arm_map"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE conversations"))
    return time.perf_counter() - t0


def full_grouping(engine: Engine, ids: list[int]) -> float:
    t0 = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(text(f"SET work_mem = '{GROUPING_WORK_MEM}'"))
        for experiment_id in ids:
            conn.execute(FULL_GROUPING, {"experiment_id": experiment_id}).all()
    return time.perf_counter() - t0


def private_job(engine: Engine) -> ActiveJob:
    """A job row for the analysis rows to reference, due in a year (nobody claims it)."""
    job, _ = queue.enqueue(
        engine,
        NewJob(type="experiment_monitoring", run_at=utcnow() + timedelta(days=365)),
        max_attempts=1,
        now=utcnow(),
    )

    async def report(_value: int, _step: str | None = None) -> None:
        return None

    return ActiveJob(job.id, job.type, 1, {}, report)


def monitoring_pass(engine: Engine) -> float:
    t0 = time.perf_counter()
    result = asyncio.run(monitor_experiments(make_ctx(engine), private_job(engine)))
    seconds = time.perf_counter() - t0
    assert result["experiments_checked"] == EXPERIMENTS, result
    kinds = {d["decision"] for d in result["decisions"]}
    assert kinds == {"continue"}, f"every experiment must stay running; got {kinds}"
    return seconds


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(engine: Engine, ids: list[int], size: int, increment: int) -> float:
    catch_up = monitoring_pass(engine)
    steady = []
    stored = size
    rss_before = max_rss_mb()
    peak = 0
    for _ in range(REPEATS):
        fill(engine, stored, stored + increment)
        stored += increment
        tracemalloc.start()
        steady.append(monitoring_pass(engine))
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    pass_seconds = statistics.median(steady)
    baseline = full_grouping(engine, ids)
    print(
        f"  {size:>12,} rows | catch-up pass {catch_up * 1000:9.1f} ms | steady pass "
        f"{pass_seconds * 1000:8.1f} ms (+{increment:,} rows) | full per-unit grouping "
        f"{baseline * 1000:9.1f} ms | pass/grouping {pass_seconds / baseline:6.3f}x | python "
        f"peak {peak / 1e6:6.2f} MB | RSS growth {max_rss_mb() - rss_before:5.1f} MB",
        flush=True,
    )
    return pass_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000000,5000000,20000000")
    parser.add_argument("--increment", type=int, default=90_000)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    cluster = start_cluster()
    try:
        engine = create_db_engine(cluster.url)
        migrate(engine)
        print(
            f"PostgreSQL: {EXPERIMENTS} running experiments, {2 * EXPERIMENTS} arms, "
            f"{USERS_PER_ARM:,} users per arm who come back",
            flush=True,
        )
        ids = setup_experiments(engine)
        stored = 0
        passes: dict[int, float] = {}
        for size in sizes:
            seconds = fill(engine, stored, size)
            print(f"  generated {size - stored:,} rows in {seconds:.1f} s", flush=True)
            passes[size] = measure(engine, ids, size, args.increment)
            stored = size + REPEATS * args.increment
        first, last = sizes[0], sizes[-1]
        print(
            f"steady pass at {last:,} / at {first:,}: {passes[last] / passes[first]:.2f}x "
            "(aim: at most 2x)",
            flush=True,
        )
        engine.dispose()
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
