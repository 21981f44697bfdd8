"""Monitoring benchmark: one experiment_monitoring pass against its per-unit aggregate queries.

Builds 50 running experiments (control and one variant each) and spreads conversations
evenly and interleaved across their 100 arms, the way live traffic arrives, from users
with three conversations each in one of four segments: 1M rows in SQLite and 5M in a
throwaway PostgreSQL cluster. At 1/5 of the rows and at the full count it prints:
- the time of one monitoring pass (the real handler: per experiment a transaction, the
  per-unit SQL aggregate, the statistics, the decision, an analysis row) and of the 50
  per-unit aggregate statements alone, and their ratio (aim: at most 1.5x); for scale, also
  the 50 minimal per-unit queries (group by arm and unit, count per arm: what any per-unit
  grouping costs before it reads a single metric);
- peak Python memory during the pass (tracemalloc) and the growth of the process's peak
  RSS, which must not grow with the number of conversations.

The experiments started just now, so the runtime gate keeps every decision at `continue`
and the same experiments are checked on every pass.

With --replicas N, N real `prompt-worker run` processes run on the same database during
each measurement (started once the rows are generated; default settings, so they poll, run
their schedulers and would pick up any job), and the pass is also measured inside one of
them: an experiment_monitoring job inserted by SQL, timed from its started_at to its
finished_at, with the peak RSS of the replicas.

Usage: python -m benchmarks.monitoring [--scale 0.1] [--skip-sqlite] [--skip-postgres]
                                       [--replicas 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from benchmarks._replicas import peak_rss_mb, start_replicas, stop_replicas  # noqa: E402
from models.jobs import OptimizationJob as J  # noqa: E402
from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import create_db_engine, migrate, session_factory  # noqa: E402
from optimizer.experiments import store  # noqa: E402
from optimizer.experiments.aggregate import (  # noqa: E402
    AGGREGATE,
    AGGREGATE_WORK_MEM,
    bind_caps,
)
from optimizer.jobs.context import ActiveJob  # noqa: E402
from optimizer.jobs.monitoring import monitor_experiments  # noqa: E402
from optimizer.runtime import queue  # noqa: E402
from optimizer.runtime.queue import NewJob  # noqa: E402
from tests.support.experiments import make_ctx, seed_prompt  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402
from tests.support.procs import ServiceProcess  # noqa: E402

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
                           rating, latency_ms, cost_usd, segment)
SELECT m.prompt_id, m.version_id, m.experiment_id, m.arm_id,
       'u' || (i % :arms) || '-' || (i / :arms / 3),
       (i / :arms) % 10 < 3, 1 + (i / :arms) % 5, 100 + ((i / :arms) * 37) % 900,
       ((i / :arms) % 7) / 1000.0, 'seg' || ((i / :arms / 3) % 4)
FROM seq JOIN arm_map m ON m.idx = i % :arms"""

PG_FILL = """INSERT INTO conversations (prompt_id, version_id, experiment_id, arm_id, unit_id,
                           success, rating, latency_ms, cost_usd, segment)
SELECT m.prompt_id, m.version_id, m.experiment_id, m.arm_id,
       'u' || (g % :arms) || '-' || (g / :arms / 3),
       (g / :arms) % 10 < 3, 1 + (g / :arms) % 5, 100 + ((g / :arms) * 37) % 900,
       ((g / :arms) % 7) / 1000.0, 'seg' || ((g / :arms / 3) % 4)
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


MINIMAL_PER_UNIT = text("""SELECT arm_id, count(*) FROM (
  SELECT arm_id, unit_id, count(*) AS n FROM conversations
  WHERE experiment_id = :experiment_id GROUP BY arm_id, unit_id) AS u GROUP BY arm_id""")


def minimal_per_unit_queries(engine: Engine, ids: list[int]) -> None:
    with engine.connect() as conn:
        for experiment_id in ids:
            conn.execute(MINIMAL_PER_UNIT, {"experiment_id": experiment_id}).all()


def our_aggregates(engine: Engine, ids: list[int]) -> None:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # as a check sets it for its transaction
            conn.execute(text(f"SET work_mem = '{AGGREGATE_WORK_MEM}'"))
        for experiment_id in ids:
            conn.execute(AGGREGATE, bind_caps(experiment_id, {})).all()


def monitoring_pass(engine: Engine) -> dict[str, object]:
    ctx = make_ctx(engine)
    return asyncio.run(monitor_experiments(ctx, private_job(engine)))


def private_job(engine: Engine) -> ActiveJob:
    """A job row for the analysis rows to reference. It is due in a year, so a replica
    running beside the benchmark cannot claim it and run the same pass at the same time."""
    job, _ = queue.enqueue(
        engine,
        NewJob(type="experiment_monitoring", run_at=utcnow() + timedelta(days=365)),
        max_attempts=1,
        now=utcnow(),
    )

    async def report(_value: int, _step: str | None = None) -> None:
        return None

    return ActiveJob(job.id, job.type, 1, {}, report)


def best_of(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pass_in_replica(engine: Engine) -> float:
    """Seconds from started_at to finished_at of one experiment_monitoring job that a
    replica picked up (inserted by plain SQL, as an admin could)."""
    with engine.begin() as conn:
        job_id = conn.execute(
            text(
                "INSERT INTO optimization_jobs (type) VALUES ('experiment_monitoring') RETURNING id"
            )
        ).scalar()
    deadline = time.monotonic() + 300
    while True:
        with engine.connect() as conn:
            row = conn.execute(
                select(J.status, J.result, J.started_at, J.finished_at).where(J.id == job_id)
            ).one()
        if row.status in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"monitoring job {job_id} did not finish in a replica")
        time.sleep(0.05)
    result = json.loads(row.result or "{}")
    assert row.status == "completed" and result.get("experiments_checked") == EXPERIMENTS, (
        row.status,
        result,
    )
    return (row.finished_at - row.started_at).total_seconds()


def measure_in_replicas(engine: Engine, replicas: list[ServiceProcess], aggregates: float) -> None:
    rss_before = max(peak_rss_mb(r.proc.pid) for r in replicas)
    pass_in_replica(engine)  # the replica's first pass warms its imports and pool
    inside = statistics.median(pass_in_replica(engine) for _ in range(REPEATS))
    peaks = [peak_rss_mb(r.proc.pid) for r in replicas]
    print(
        f"  {'':>10} {'':>10}       in a replica: pass {inside * 1000:8.1f} ms (job "
        f"started -> finished) | ratio {inside / aggregates:5.2f}x | replicas' peak RSS "
        f"{max(peaks):6.1f} MB, grew {max(peaks) - rss_before:5.1f} MB",
        flush=True,
    )


def measure(engine: Engine, ids: list[int], rows: int, label: str, replicas: int = 0) -> None:
    if not replicas:
        measure_here(engine, ids, rows, label)
        return
    url = engine.url.render_as_string(hide_password=False)
    with tempfile.TemporaryDirectory(prefix="pw-bench-logs-") as logs:
        services = start_replicas(url, replicas, Path(logs))
        try:
            time.sleep(2.0)  # past start-up: the replicas are idle, polling and scheduling
            scheduled = scheduled_jobs(engine)
            aggregates = measure_here(engine, ids, rows, label)
            measure_in_replicas(engine, services, aggregates)
            ticks = scheduled_jobs(engine) - scheduled
            if ticks:
                print(
                    f"  {'':>21} note: the replicas' schedulers queued {ticks} job(s) "
                    "during this measurement; they ran beside it",
                    flush=True,
                )
        finally:
            stop_replicas(services)


def scheduled_jobs(engine: Engine) -> int:
    """Jobs the schedulers have queued so far (their dedupe_key names the tick)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(J).where(J.dedupe_key.is_not(None))
            ).scalar()
            or 0
        )


def measure_here(engine: Engine, ids: list[int], rows: int, label: str) -> float:
    minimal_per_unit_queries(engine, ids)  # warm the caches for both timings alike
    result = monitoring_pass(engine)
    assert result["experiments_checked"] == EXPERIMENTS, result
    kinds = {d["decision"] for d in result["decisions"]}  # type: ignore[attr-defined]
    assert kinds == {"continue"}, f"every experiment must stay running; got {kinds}"
    minimal = best_of(lambda: minimal_per_unit_queries(engine, ids))
    ours = best_of(lambda: our_aggregates(engine, ids))
    full = best_of(lambda: monitoring_pass(engine))
    rss_before = max_rss_mb()
    tracemalloc.start()
    monitoring_pass(engine)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"  {label:>10} {rows:>10,} rows: pass {full * 1000:8.1f} ms | per-unit aggregates "
        f"alone {ours * 1000:8.1f} ms | ratio {full / ours:5.2f}x | minimal per-unit "
        f"queries {minimal * 1000:8.1f} ms | python peak "
        f"{peak / 1e6:6.2f} MB | peak RSS growth {max_rss_mb() - rss_before:5.1f} MB",
        flush=True,
    )
    return ours


def run(engine: Engine, total: int, name: str, replicas: int = 0) -> None:
    alongside = (
        (f"; {replicas} `prompt-worker run` replicas on the same database during each measurement")
        if replicas
        else ""
    )
    print(
        f"{name}: {EXPERIMENTS} running experiments, {2 * EXPERIMENTS} arms{alongside}", flush=True
    )
    ids = setup_experiments(engine)
    fifth = total // 5
    seconds = fill(engine, 0, fifth)
    print(f"  generated {fifth:,} rows in {seconds:.1f} s", flush=True)
    measure(engine, ids, fifth, "1/5 size", replicas)
    seconds = fill(engine, fifth, total)
    print(f"  generated {total - fifth:,} more rows in {seconds:.1f} s", flush=True)
    measure(engine, ids, total, "full size", replicas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the row counts (1M SQLite, 5M PostgreSQL) by this",
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="skip the SQLite part")
    parser.add_argument("--skip-postgres", action="store_true", help="skip the PostgreSQL part")
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        metavar="N",
        help="run N real `prompt-worker run` replicas on the database during "
        "each measurement and also time the pass inside one of them "
        "(default 0: none)",
    )
    args = parser.parse_args(argv)
    if args.replicas < 0:
        parser.error("--replicas must be 0 or more")
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
            engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
            migrate(engine)
            try:
                run(engine, int(1_000_000 * args.scale), "SQLite", args.replicas)
            finally:
                engine.dispose()
    if not args.skip_postgres:
        cluster = start_cluster()
        try:
            engine = create_db_engine(cluster.url)
            migrate(engine)
            try:
                run(engine, int(5_000_000 * args.scale), "PostgreSQL", args.replicas)
            finally:
                engine.dispose()
        finally:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
