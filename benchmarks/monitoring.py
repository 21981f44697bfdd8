"""Monitoring benchmark: one experiment_monitoring pass against the bare aggregate queries.

Builds 50 running experiments (control and one variant each) and spreads conversations
evenly and interleaved across their 100 arms, the way live traffic arrives: 1M rows in
SQLite and 5M in a throwaway PostgreSQL cluster. At 1/5 of the rows and at the full count
it prints:
- the time of one monitoring pass (the real handler: per experiment a transaction, the SQL
  aggregate, the statistics, the decision, an analysis row) and of the 50 aggregate
  queries alone, and their ratio (aim: at most 1.5x);
- peak Python memory during the pass (tracemalloc) and the growth of the process's peak
  RSS, which must not grow with the number of conversations.

The experiments started just now, so the runtime gate keeps every decision at `continue`
and the same experiments are checked on every pass.

Usage: python -m benchmarks.monitoring [--scale 0.1] [--skip-sqlite] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import create_db_engine, migrate, session_factory  # noqa: E402
from optimizer.experiments import store  # noqa: E402
from optimizer.experiments.aggregate import AGGREGATE  # noqa: E402
from optimizer.jobs.monitoring import monitor_experiments  # noqa: E402
from tests.support.experiments import make_ctx, make_job, seed_prompt  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402

EXPERIMENTS = 50
REPEATS = 3

ARM_MAP = """CREATE TEMP TABLE arm_map AS
SELECT row_number() OVER (ORDER BY a.id) - 1 AS idx, v.prompt_id AS prompt_id,
       a.version_id AS version_id, a.experiment_id AS experiment_id, a.id AS arm_id
FROM ai_ab_experiment_arms a JOIN ai_prompt_versions v ON v.id = a.version_id"""

# Row i goes to arm i % arms; k = i / arms numbers that arm's rows. Metrics are functions of
# k, so every arm sees the same distribution (30% success) and no check stops an arm.
SQLITE_FILL = """WITH RECURSIVE seq(i) AS (
  SELECT :start UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :stop)
INSERT INTO conversations (prompt_id, version_id, experiment_id, arm_id, unit_id, success,
                           rating, latency_ms, cost_usd)
SELECT m.prompt_id, m.version_id, m.experiment_id, m.arm_id, 'u' || i,
       (i / :arms) % 10 < 3, 1 + (i / :arms) % 5, 100 + ((i / :arms) * 37) % 900,
       ((i / :arms) % 7) / 1000.0
FROM seq JOIN arm_map m ON m.idx = i % :arms"""

PG_FILL = """INSERT INTO conversations (prompt_id, version_id, experiment_id, arm_id, unit_id,
                           success, rating, latency_ms, cost_usd)
SELECT m.prompt_id, m.version_id, m.experiment_id, m.arm_id, 'u' || g,
       (g / :arms) % 10 < 3, 1 + (g / :arms) % 5, 100 + ((g / :arms) * 37) % 900,
       ((g / :arms) % 7) / 1000.0
FROM generate_series(:start, :stop - 1) g JOIN arm_map m ON m.idx = g % :arms"""

def setup_experiments(engine: Engine) -> list[int]:
    ids = []
    for i in range(EXPERIMENTS):
        name = f"bench-{i:02d}"
        seed_prompt(engine, name, candidates=1)
        with session_factory(engine).begin() as session:
            ids.append(store.create_experiment(session, name, [2], now=utcnow()).id)
    return ids


def fill(engine: Engine, start: int, stop: int) -> float:
    sql = PG_FILL if engine.dialect.name == "postgresql" else SQLITE_FILL
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(ARM_MAP))
        conn.execute(text(sql), {"start": start, "stop": stop, "arms": 2 * EXPERIMENTS})
        conn.execute(text("DROP TABLE arm_map"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE conversations"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - t0


def bare_aggregates(engine: Engine, ids: list[int]) -> None:
    with engine.connect() as conn:
        for experiment_id in ids:
            conn.execute(AGGREGATE, {"experiment_id": experiment_id}).all()


def monitoring_pass(engine: Engine) -> dict[str, object]:
    ctx = make_ctx(engine)
    job, _ = make_job(engine)
    return asyncio.run(monitor_experiments(ctx, job))


def best_of(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(engine: Engine, ids: list[int], rows: int, label: str) -> None:
    bare_aggregates(engine, ids)  # warm the caches for both timings alike
    result = monitoring_pass(engine)
    assert result["experiments_checked"] == EXPERIMENTS, result
    kinds = {d["decision"] for d in result["decisions"]}  # type: ignore[attr-defined]
    assert kinds == {"continue"}, f"every experiment must stay running; got {kinds}"
    bare = best_of(lambda: bare_aggregates(engine, ids))
    full = best_of(lambda: monitoring_pass(engine))
    rss_before = max_rss_mb()
    tracemalloc.start()
    monitoring_pass(engine)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  {label:>10} {rows:>10,} rows: pass {full * 1000:8.1f} ms | aggregates alone "
          f"{bare * 1000:8.1f} ms | ratio {full / bare:5.2f}x | python peak "
          f"{peak / 1e6:6.2f} MB | peak RSS growth {max_rss_mb() - rss_before:5.1f} MB",
          flush=True)


def run(engine: Engine, total: int, name: str) -> None:
    print(f"{name}: {EXPERIMENTS} running experiments, {2 * EXPERIMENTS} arms", flush=True)
    ids = setup_experiments(engine)
    fifth = total // 5
    seconds = fill(engine, 0, fifth)
    print(f"  generated {fifth:,} rows in {seconds:.1f} s", flush=True)
    measure(engine, ids, fifth, "1/5 size")
    seconds = fill(engine, fifth, total)
    print(f"  generated {total - fifth:,} more rows in {seconds:.1f} s", flush=True)
    measure(engine, ids, total, "full size")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the row counts (1M SQLite, 5M PostgreSQL) by this")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
            engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
            migrate(engine)
            try:
                run(engine, int(1_000_000 * args.scale), "SQLite")
            finally:
                engine.dispose()
    if not args.skip_postgres:
        cluster = start_cluster()
        try:
            engine = create_db_engine(cluster.url)
            migrate(engine)
            try:
                run(engine, int(5_000_000 * args.scale), "PostgreSQL")
            finally:
                engine.dispose()
        finally:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
