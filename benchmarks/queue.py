"""Queue benchmark on a throwaway PostgreSQL: throughput and pickup latency.

Prints, for 1 and 4 worker processes (1 and N with --replicas N):
- trivial jobs per second: each process loops claim + finish on the real queue functions;
- pickup latency (insert to start) p50/p99 through real `prompt-worker run` processes, for
  jobs inserted through the admin API and by a plain SQL INSERT (woken by LISTEN/NOTIFY).
With --replicas N it also prints jobs per second through 1 and N real `prompt-worker run`
replicas on the one database: a burst of experiment_monitoring jobs (no experiments, so each
is the whole claim, lease, heartbeat, handler and fenced finish around an empty check),
timed from the insert to the last finish.
Ratios are against the 1-process figures of the same run.

Usage: python -m benchmarks.queue [--jobs 3000] [--pickups 100] [--replicas 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this file would shadow
# the standard library's `queue` (which multiprocessing imports); drop that entry.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from benchmarks._replicas import start_replicas, stop_replicas  # noqa: E402
from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import create_db_engine, migrate  # noqa: E402
from optimizer.runtime import queue  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402
from tests.support.procs import start_service  # noqa: E402

TOKEN = "bench-token"
NEVER = "0 0 1 1 *"  # a cron tick that cannot fire during a run


def _drain(url: str, worker: str, start: mp.Event, done: mp.Queue) -> None:  # type: ignore[type-arg]
    engine = create_db_engine(url)
    start.wait()
    handled = 0
    while True:
        job = queue.claim(engine, worker, lease_seconds=60, now=utcnow())
        if job is None:
            break
        queue.complete(engine, job.lease, {}, now=utcnow())
        handled += 1
    done.put(handled)
    engine.dispose()


def reset(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE optimization_jobs RESTART IDENTITY CASCADE"))


def throughput(url: str, engine, processes: int, jobs: int) -> float:  # type: ignore[no-untyped-def]
    reset(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO optimization_jobs (type) "
                "SELECT 'full_cycle' FROM generate_series(1, :n)"
            ),
            {"n": jobs},
        )
    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_drain, args=(url, f"bench-{i}", start, done)) for i in range(processes)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every process import and connect before the clock starts
    t0 = time.perf_counter()
    start.set()
    handled = sum(done.get(timeout=600) for _ in procs)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    assert handled == jobs, (handled, jobs)
    return jobs / elapsed


def pickup_latencies(
    url: str,
    engine,
    processes: int,
    count: int,  # type: ignore[no-untyped-def]
    tmp: Path,
) -> dict[str, list[float]]:
    reset(engine)
    svcs = [
        start_service(url, tmp, ADMIN_TOKEN=TOKEN, POLL_INTERVAL_SECONDS="30", LOG_LEVEL="WARNING")
        for _ in range(processes)
    ]
    try:
        for s in svcs:
            s.wait_healthy()
        time.sleep(1.0)
        ids: dict[str, list[int]] = {"api": [], "sql": []}
        for i in range(count):
            if i % 2 == 0:
                code, job = svcs[i % processes].request(
                    "POST", "/jobs", {"type": "experiment_monitoring"}, TOKEN
                )
                assert code == 201, job
                ids["api"].append(job["id"])
            else:
                with engine.begin() as conn:
                    ids["sql"].append(
                        conn.execute(
                            text(
                                "INSERT INTO optimization_jobs (type) VALUES "
                                "('experiment_monitoring') RETURNING id"
                            )
                        ).scalar()
                    )
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while queue.count_by_status(engine).get("completed", 0) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("jobs did not complete")
            time.sleep(0.1)
    finally:
        for s in svcs:
            s.terminate()
    out: dict[str, list[float]] = {}
    with engine.connect() as conn:
        for kind, job_ids in ids.items():
            rows = conn.execute(
                text(
                    "SELECT extract(epoch FROM started_at - created_at) * 1000 "
                    "FROM optimization_jobs WHERE id = ANY(:ids)"
                ),
                {"ids": job_ids},
            )
            out[kind] = [float(r[0]) for r in rows]
    return out


def service_throughput(
    url: str,
    engine,
    replicas: int,
    jobs: int,  # type: ignore[no-untyped-def]
    tmp: Path,
) -> float:
    """Jobs per second through `replicas` real services: insert a burst, time to last finish."""
    reset(engine)
    svcs = start_replicas(
        url,
        replicas,
        tmp,
        ADMIN_TOKEN=TOKEN,
        POLL_INTERVAL_SECONDS="30",
        PATTERN_ANALYSIS_CRON=NEVER,
        MONITORING_CRON=NEVER,
        LOG_LEVEL="WARNING",
    )
    try:
        time.sleep(1.0)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO optimization_jobs (type) SELECT "
                    "'experiment_monitoring' FROM generate_series(1, :n)"
                ),
                {"n": jobs},
            )
        deadline = time.monotonic() + 600
        while queue.count_by_status(engine).get("completed", 0) < jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{jobs} jobs did not complete on {replicas} replicas")
            time.sleep(0.2)
    finally:
        stop_replicas(svcs)
    with engine.connect() as conn:
        seconds = conn.execute(
            text(
                "SELECT extract(epoch FROM max(finished_at) - min(created_at)) "
                "FROM optimization_jobs"
            )
        ).scalar()
    return jobs / float(seconds)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs",
        type=int,
        default=3000,
        help="trivial jobs per claim + finish throughput run (default 3000)",
    )
    parser.add_argument(
        "--pickups",
        type=int,
        default=100,
        help="jobs whose pickup latency is measured per row (default 100)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        metavar="N",
        help="compare 1 and N processes instead of 1 and 4, and add jobs/s "
        "through 1 and N real `prompt-worker run` replicas",
    )
    parser.add_argument(
        "--service-jobs",
        type=int,
        default=600,
        help="jobs in the burst per replica count, with --replicas (default 600)",
    )
    args = parser.parse_args()
    if args.replicas is not None and args.replicas < 2:
        parser.error("--replicas must be at least 2 (1 is always measured)")
    counts = (1, args.replicas or 4)
    cluster = start_cluster()
    try:
        url = cluster.url
        engine = create_db_engine(url)
        migrate(engine)
        tmp = Path(tempfile.mkdtemp(prefix="pw-bench-"))
        rates = {n: throughput(url, engine, n, args.jobs) for n in counts}
        pickups = {n: pickup_latencies(url, engine, n, args.pickups, tmp) for n in counts}
        served = (
            {n: service_throughput(url, engine, n, args.service_jobs, tmp) for n in counts}
            if args.replicas
            else {}
        )
        engine.dispose()
    finally:
        cluster.destroy()
    print(
        f"PostgreSQL queue benchmark ({args.jobs} trivial jobs; {args.pickups} pickups"
        + (f"; {args.service_jobs} jobs through real replicas" if served else "")
        + ")"
    )
    print(
        f"{'processes':>9}  {'jobs/s':>8}  {'vs 1':>5}  "
        f"{'API p50':>8}  {'API p99':>8}  {'SQL p50':>8}  {'SQL p99':>8}  (ms)"
        + (f"  {'replica jobs/s':>14}  {'vs 1':>5}" if served else "")
    )
    for n in counts:
        lat = pickups[n]
        extra = f"  {served[n]:>14.0f}  {served[n] / served[1]:>5.2f}" if served else ""
        print(
            f"{n:>9}  {rates[n]:>8.0f}  {rates[n] / rates[1]:>5.2f}  "
            f"{pct(lat['api'], 50):>8.1f}  {pct(lat['api'], 99):>8.1f}  "
            f"{pct(lat['sql'], 50):>8.1f}  {pct(lat['sql'], 99):>8.1f}" + extra
        )
    print(
        "pickup = started_at - created_at, idle workers woken by LISTEN/NOTIFY "
        "(poll interval set to 30 s, so polling cannot explain it)"
    )
    if served:
        print(
            f"replica jobs/s = {args.service_jobs} experiment_monitoring jobs (no "
            "experiments) inserted at once, / (last finished_at - first created_at); "
            "WORKER_CONCURRENCY=1 per replica; on a "
            f"{os.cpu_count()}-core machine shared with PostgreSQL"
        )


if __name__ == "__main__":
    main()
