"""Queue benchmark on a throwaway PostgreSQL: throughput and pickup latency.

Prints, for 1 and 4 worker processes:
- trivial jobs per second: each process loops claim + finish on the real queue functions;
- pickup latency (insert to start) p50/p99 through real `prompt-worker run` processes, for
  jobs inserted through the admin API and by a plain SQL INSERT (woken by LISTEN/NOTIFY).
Ratios are against the 1-process figures of the same run.

Usage: python benchmarks/queue.py [--jobs 3000] [--pickups 100]
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
import statistics
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from optimizer import queue  # noqa: E402
from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import create_db_engine, migrate  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402
from tests.support.procs import start_service  # noqa: E402

TOKEN = "bench-token"


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
        conn.execute(text("INSERT INTO optimization_jobs (type) "
                          "SELECT 'full_cycle' FROM generate_series(1, :n)"), {"n": jobs})
    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(url, f"bench-{i}", start, done))
             for i in range(processes)]
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


def pickup_latencies(url: str, engine, processes: int, count: int,  # type: ignore[no-untyped-def]
                     tmp: Path) -> dict[str, list[float]]:
    reset(engine)
    svcs = [start_service(url, tmp, ADMIN_TOKEN=TOKEN, POLL_INTERVAL_SECONDS="30",
                          LOG_LEVEL="WARNING") for _ in range(processes)]
    try:
        for s in svcs:
            s.wait_healthy()
        time.sleep(1.0)
        ids: dict[str, list[int]] = {"api": [], "sql": []}
        for i in range(count):
            if i % 2 == 0:
                code, job = svcs[i % processes].request(
                    "POST", "/jobs", {"type": "experiment_monitoring"}, TOKEN)
                assert code == 201, job
                ids["api"].append(job["id"])
            else:
                with engine.begin() as conn:
                    ids["sql"].append(conn.execute(text(
                        "INSERT INTO optimization_jobs (type) VALUES "
                        "('experiment_monitoring') RETURNING id")).scalar())
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
            rows = conn.execute(text(
                "SELECT extract(epoch FROM started_at - created_at) * 1000 "
                "FROM optimization_jobs WHERE id = ANY(:ids)"), {"ids": job_ids})
            out[kind] = [float(r[0]) for r in rows]
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--pickups", type=int, default=100)
    args = parser.parse_args()
    cluster = start_cluster()
    try:
        url = cluster.url
        engine = create_db_engine(url)
        migrate(engine)
        tmp = Path(tempfile.mkdtemp(prefix="pw-bench-"))
        rates = {n: throughput(url, engine, n, args.jobs) for n in (1, 4)}
        pickups = {n: pickup_latencies(url, engine, n, args.pickups, tmp) for n in (1, 4)}
        engine.dispose()
    finally:
        cluster.destroy()
    print(f"PostgreSQL queue benchmark ({args.jobs} trivial jobs; {args.pickups} pickups)")
    print(f"{'processes':>9}  {'jobs/s':>8}  {'vs 1':>5}  "
          f"{'API p50':>8}  {'API p99':>8}  {'SQL p50':>8}  {'SQL p99':>8}  (ms)")
    for n in (1, 4):
        lat = pickups[n]
        print(f"{n:>9}  {rates[n]:>8.0f}  {rates[n] / rates[1]:>5.2f}  "
              f"{pct(lat['api'], 50):>8.1f}  {pct(lat['api'], 99):>8.1f}  "
              f"{pct(lat['sql'], 50):>8.1f}  {pct(lat['sql'], 99):>8.1f}")
    print("pickup = started_at - created_at, idle workers woken by LISTEN/NOTIFY "
          "(poll interval set to 30 s, so polling cannot explain it)")


if __name__ == "__main__":
    main()
