"""Pattern-analysis benchmark: one pattern_analysis run against the bare aggregate query.

One prompt with one active version; conversations spread evenly over the last 7 days, in
20 segments (one of them, seg-03, planted worse), with a few tags (refund, vip, web,
mobile) and a short transcript each: 1M rows in SQLite and 5M in PostgreSQL (a throwaway
cluster, as benchmarks/monitoring.py starts one, or --postgres URL). At 1/5 of the rows
and at the full count it prints:
- the time of one run of the real handler (segment and tag aggregates, the tests, BH, the
  transcript samples and log-odds themes, sample ids, storing, chaining) and of the segment
  GROUP BY alone, and their ratio; the segment and tag aggregates together for reference;
- peak Python memory during a run (tracemalloc) and the growth of the process's peak RSS,
  which must not grow with the number of conversations.

Usage: python -m benchmarks.pattern_analysis [--n 1000000] [--pg-n 5000000]
       [--postgres URL] [--skip-sqlite] [--skip-postgres]
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
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import create_db_engine, migrate, read_only  # noqa: E402
from optimizer.jobs.pattern_analysis import analyze_patterns  # noqa: E402
from optimizer.patterns import aggregate  # noqa: E402
from tests.support.experiments import Clock, make_ctx, make_job, seed_prompt  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402

NAME = "bench"
REPEATS = 3
WEEK_SECONDS = 7 * 24 * 3600

# Row g: segment g % 20; seg-03 succeeds 40% of the time, the rest 70% (a hash of g, not
# random(), so both databases get the same data). Every row has a transcript.
_COLUMNS = """(prompt_id, version_id, unit_id, success, rating, segment, tags, transcript,
               occurred_at)"""
_VALUES = """:prompt_id, :version_id, 'u' || g, {ok},
       CASE WHEN {ok} THEN 3 + (g / 7) % 3 ELSE 1 + (g / 7) % 3 END,
       'seg-' || substr('0' || (g % 20), -2, 2),
       CASE g % 10 WHEN 0 THEN '["refund"]' WHEN 1 THEN '["vip", "web"]'
                   WHEN 2 THEN '["web"]' WHEN 3 THEN '["mobile", "web"]' ELSE NULL END,
       'user: my ' || CASE (g / 3) % 5 WHEN 0 THEN 'order' WHEN 1 THEN 'account'
                     WHEN 2 THEN 'delivery' WHEN 3 THEN 'password' ELSE 'plan' END
       || ' question about the ' || CASE (g / 11) % 4 WHEN 0 THEN 'app' WHEN 1 THEN 'email'
                                    WHEN 2 THEN 'screen' ELSE 'report' END
       || CASE WHEN NOT {ok} AND g % 20 = 3 THEN ' and the invoice refund is wrong'
               ELSE ' assistant: here is how' END"""
# Knuth's multiplicative hash; its high bits (here: of 32) are the well-mixed ones.
_OK = ("((g * 2654435761) % 4294967296) / 4294968 < "
       "CASE WHEN g % 20 = 3 THEN 400 ELSE 700 END")

SQLITE_FILL = f"""WITH RECURSIVE seq(g) AS (
  SELECT :start UNION ALL SELECT g + 1 FROM seq WHERE g + 1 < :stop)
INSERT INTO conversations {_COLUMNS}
SELECT {_VALUES.format(ok=_OK)},
       strftime('%Y-%m-%d %H:%M:%S', :now, '-' || (1 + g % {WEEK_SECONDS - 60}) || ' seconds')
       || '.000000'
FROM seq"""

PG_FILL = f"""INSERT INTO conversations {_COLUMNS}
SELECT {_VALUES.format(ok=_OK).replace("substr('0' || (g % 20), -2, 2)",
                                       "lpad((g % 20)::text, 2, '0')")},
       CAST(:now AS timestamptz) - make_interval(secs => 1 + g % {WEEK_SECONDS - 60})
FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) AS g"""


def fill(engine: Engine, ids: dict[str, int], start: int, stop: int, now: Any) -> float:
    pg = engine.dialect.name == "postgresql"
    params = {**ids, "start": start, "stop": stop,
              "now": now if pg else now.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(PG_FILL if pg else SQLITE_FILL), params)
    if pg:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE conversations"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - t0


def bare_segments(engine: Engine, version_id: int, bounds: aggregate.Bounds) -> None:
    with read_only(engine).connect() as conn:
        conn.execute(aggregate.SEGMENTS, bounds.params(version_id)).all()


def all_aggregates(engine: Engine, version_id: int, bounds: aggregate.Bounds) -> None:
    with read_only(engine).connect() as conn:
        aggregate.segment_sums(conn, version_id, bounds)
        aggregate.tag_sums(conn, version_id, bounds)


def one_run(engine: Engine, clock: Clock) -> dict[str, Any]:
    ctx = make_ctx(engine, clock)
    job, _ = make_job(engine, "pattern_analysis", {"prompt": NAME})
    return asyncio.run(analyze_patterns(ctx, job))["prompts"][0]  # type: ignore[no-any-return]


def median_time(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(engine: Engine, version_id: int, clock: Clock, rows: int, label: str) -> None:
    bounds = aggregate.Bounds(clock.now)
    bare_segments(engine, version_id, bounds)  # warm the caches for every timing alike
    result = one_run(engine, clock)
    assert result["actionable"] > 0, result
    bare = median_time(lambda: bare_segments(engine, version_id, bounds))
    aggregates = median_time(lambda: all_aggregates(engine, version_id, bounds))
    full = median_time(lambda: one_run(engine, clock))
    rss_before = max_rss_mb()
    tracemalloc.start()
    one_run(engine, clock)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  {label:>9} {rows:>10,} rows: run {full * 1000:8.1f} ms | segment GROUP BY "
          f"alone {bare * 1000:8.1f} ms | ratio {full / bare:5.2f}x | segment+tag "
          f"aggregates {aggregates * 1000:8.1f} ms (run/aggregates {full / aggregates:4.2f}x)"
          f" | python peak {peak / 1e6:6.2f} MB | peak RSS growth "
          f"{max_rss_mb() - rss_before:5.1f} MB", flush=True)
    print(f"            tests {result['tests']}, significant {result['significant']}, "
          f"actionable {result['actionable']}, themes {result['theme_terms']}", flush=True)


def run(engine: Engine, total: int, name: str) -> None:
    print(f"{name}: one active version, 20 segments, tags refund/vip/web/mobile", flush=True)
    version_id = seed_prompt(engine, NAME, candidates=0)[1]
    with engine.connect() as conn:
        prompt_id = conn.execute(text("SELECT prompt_id FROM ai_prompt_versions WHERE id = :v"),
                                 {"v": version_id}).scalar_one()
    ids = {"prompt_id": prompt_id, "version_id": version_id}
    clock = Clock(utcnow().replace(microsecond=0) + timedelta(seconds=1))
    fifth = total // 5
    seconds = fill(engine, ids, 0, fifth, clock.now)
    print(f"  generated {fifth:,} rows in {seconds:.1f} s", flush=True)
    measure(engine, version_id, clock, fifth, "1/5 size")
    seconds = fill(engine, ids, fifth, total, clock.now)
    print(f"  generated {total - fifth:,} more rows in {seconds:.1f} s", flush=True)
    measure(engine, version_id, clock, total, "full size")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="SQLite rows (1M)")
    parser.add_argument("--pg-n", type=int, default=5_000_000, help="PostgreSQL rows (5M)")
    parser.add_argument("--postgres", metavar="URL",
                        help="an existing PostgreSQL database (emptied tables are not "
                             "assumed: use a fresh one); default: start a throwaway cluster")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
            engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
            migrate(engine)
            try:
                run(engine, args.n, "SQLite")
            finally:
                engine.dispose()
    if not args.skip_postgres:
        cluster = None if args.postgres else start_cluster()
        url = args.postgres or (cluster.url if cluster else "")
        try:
            engine = create_db_engine(make_url(url).render_as_string(hide_password=False))
            migrate(engine)
            try:
                run(engine, args.pg_n, "PostgreSQL")
            finally:
                engine.dispose()
        finally:
            if cluster is not None:
                cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
