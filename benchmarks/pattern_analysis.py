"""Pattern-analysis benchmark: false findings from heavy users, and the cost of one run.

Accuracy (--skip-accuracy leaves it out; about a minute). 20 segments of 15 users (or 60);
a user's conversations (geometric, mean 30, spread over 7 days) succeed with the user's own
probability, drawn from a Beta around a 30% base rate with intra-class correlation 0.3
(also 0.05 and 0 for comparison). Only success is logged: no ratings, no tags. Two
scenarios: (a) every segment alike, where any actionable finding is false; (b) one segment
(seg-03) planted at 15%. For each, over --runs runs, the share of runs with any actionable
finding (a) or with seg-03 found (b), under
- the old rule: a copy, kept here only for comparison, of the former per-conversation
  two-proportion z test (every conversation an independent observation);
- the new rule: the real build_tests/evaluate on the sums the SQL returns, computed here
  with numpy from per-user arrays (significance.moments_of_units).
The first --e2e-runs runs of the first two rows also go through the real handler on SQLite
(rows inserted, pattern_analysis run, insights read back); the SQL's sums and the stored
actionable findings must equal the numpy path's.

Timing (--skip-timing leaves it out). One prompt with one active version; conversations
spread evenly over the last 7 days, in 20 segments (one of them, seg-03, planted worse),
with a few tags (refund, vip, web, mobile) and a short transcript each, one conversation
per user by default (the most units a table can have: the costliest case for per-unit
sums; --per-user K for K, a user then spanning several segments): 1M rows in
SQLite and 5M in PostgreSQL (a throwaway cluster, as benchmarks/monitoring.py starts one,
or --postgres URL). At 1/5 of the rows and at the full count it prints:
- the time of one run of the real handler (segment and tag aggregates, the tests, BH, the
  transcript samples and log-odds themes, sample ids, storing, chaining) and of the segment
  aggregate alone, and their ratio; the totals, segment and tag aggregates together for
  reference;
- peak Python memory during a run (tracemalloc) and the growth of the process's peak RSS,
  which must not grow with the number of conversations.

Usage: python -m benchmarks.pattern_analysis [--runs 500] [--e2e-runs 10] [--seed 1]
       [--skip-accuracy] [--skip-timing] [--n 1000000] [--pg-n 5000000]
       [--postgres URL] [--per-user 1] [--skip-sqlite] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import insert, select, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from models.conversations import Conversation  # noqa: E402
from models.insights import PatternInsight  # noqa: E402
from models.prompts import PromptVersion  # noqa: E402
from optimizer.clock import utcnow  # noqa: E402
from optimizer.db import create_db_engine, migrate, read_only  # noqa: E402
from optimizer.jobs.pattern_analysis import analyze_patterns  # noqa: E402
from optimizer.patterns import aggregate, fingerprints  # noqa: E402
from optimizer.patterns.segments import (  # noqa: E402
    MIN_GROUP_N,
    REGRESSION_WINDOW,
    WINDOWS,
    GroupSums,
    GroupTest,
    GroupWindow,
    Rules,
    VersionTotals,
    WindowSums,
    build_tests,
    evaluate,
)
from optimizer.patterns.significance import Significance, moments_of_units  # noqa: E402
from tests.support.experiments import Clock, make_ctx, make_job, seed_prompt  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402

NAME = "bench"
REPEATS = 3
WEEK_SECONDS = 7 * 24 * 3600

# Row g: segment g % 20; seg-03 succeeds 40% of the time, the rest 70% (a hash of g, not
# random(), so both databases get the same data). Every row has a transcript. User
# g / per_user: with more than one conversation a user spans several segments.
_COLUMNS = """(prompt_id, version_id, unit_id, success, rating, segment, tags, transcript,
               occurred_at)"""
_VALUES = """:prompt_id, :version_id, 'u' || (g / :per_user), {ok},
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
_OK = "((g * 2654435761) % 4294967296) / 4294968 < CASE WHEN g % 20 = 3 THEN 400 ELSE 700 END"

SQLITE_FILL = f"""WITH RECURSIVE seq(g) AS (
  SELECT :start UNION ALL SELECT g + 1 FROM seq WHERE g + 1 < :stop)
INSERT INTO conversations {_COLUMNS}
SELECT {_VALUES.format(ok=_OK)},
       strftime('%Y-%m-%d %H:%M:%S', :now, '-' || (1 + g % {WEEK_SECONDS - 60}) || ' seconds')
       || '.000000'
FROM seq"""

PG_FILL = f"""INSERT INTO conversations {_COLUMNS}
SELECT {
    _VALUES.format(ok=_OK).replace("substr('0' || (g % 20), -2, 2)", "lpad((g % 20)::text, 2, '0')")
},
       CAST(:now AS timestamptz) - make_interval(secs => 1 + g % {WEEK_SECONDS - 60})
FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) AS g"""


# --- accuracy: false findings from heavy users ---------------------------------------------

ACCURACY_NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES = Rules(fdr=0.05, min_effect=0.05, min_conversations=50)  # the service's defaults
PLANTED = "seg-03"


@dataclass(frozen=True)
class World:
    icc: float = 0.3  # correlation of two conversations of one user
    planted_rate: float | None = None  # seg-03's base rate; None: every segment alike
    segments: int = 20
    users_per_segment: int = 15
    mean_conversations: float = 30.0
    base_rate: float = 0.30


@dataclass(frozen=True)
class Log:
    """One run's conversations: user, success, hours before now; and each user's segment."""

    user: np.ndarray
    success: np.ndarray
    hours_ago: np.ndarray
    segment_of_user: np.ndarray


def simulate(world: World, rng: np.random.Generator) -> Log:
    users = world.segments * world.users_per_segment
    segment = np.repeat(np.arange(world.segments), world.users_per_segment)
    mean = np.full(users, world.base_rate)
    if world.planted_rate is not None:
        mean[segment == int(PLANTED[-2:])] = world.planted_rate
    p = mean
    if world.icc > 0:  # Beta(a, b) has intra-class correlation 1 / (a + b + 1)
        k = 1.0 / world.icc - 1.0
        p = rng.beta(mean * k, (1.0 - mean) * k)
    user = np.repeat(np.arange(users), rng.geometric(1.0 / world.mean_conversations, users))
    return Log(user, rng.random(user.size) < p[user], rng.uniform(0.01, 167.9, user.size), segment)


def _per_user(log: Log, window: str) -> tuple[np.ndarray, np.ndarray]:
    keep = log.hours_ago < 24 if window == "24h" else np.ones(log.user.size, dtype=bool)
    size = log.segment_of_user.size
    m = np.bincount(log.user[keep], minlength=size).astype(float)
    y = np.bincount(log.user[keep], weights=log.success[keep], minlength=size)
    return y, m


def numpy_sums(log: Log) -> tuple[list[GroupSums], VersionTotals]:
    """The sums the SQL returns, from per-user arrays. A user's segment is fixed, so a
    user's part in a segment is all of the user or nothing."""
    per_user = {w: _per_user(log, w) for w in WINDOWS}
    windows = {}
    for window, (y, m) in per_user.items():
        windows[window] = WindowSums(
            int(m.sum()), int((m > 0).sum()), {"success": moments_of_units(y, m, y, m)[1]}
        )
    recent = moments_of_units(*per_user["24h"], *per_user["7d"])[0]
    totals = VersionTotals(windows, GroupWindow(round(recent.m), {"success": recent}))
    groups = []
    for g in range(int(log.segment_of_user.max()) + 1):
        inside = log.segment_of_user == g
        parts = {}
        for window, (y, m) in per_user.items():
            part = moments_of_units(np.where(inside, y, 0), np.where(inside, m, 0), y, m)[0]
            parts[window] = GroupWindow(round(part.m), {"success": part})
        groups.append(GroupSums("segment", f"seg-{g:02d}", parts))
    return groups, totals


def old_two_proportion_z(x1: float, n1: float, x2: float, n2: float) -> Significance:
    """FOR COMPARISON ONLY: the former rule's test, every conversation an independent
    observation (pooled two-proportion z). The service no longer uses it."""
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se0 == 0.0:
        return Significance(
            "old",
            round(n1),
            round(n2),
            0,
            0,
            p1,
            p2,
            p1 - p2,
            None,
            None,
            None,
            None,
            error="no_variation",
        )
    z = (p1 - p2) / se0
    return Significance(
        "old",
        round(n1),
        round(n2),
        0,
        0,
        p1,
        p2,
        p1 - p2,
        None,
        None,
        z,
        2.0 * float(norm.sf(abs(z))),
    )


def old_rule_tests(groups: list[GroupSums], totals: VersionTotals) -> list[GroupTest]:
    """FOR COMPARISON ONLY: the former rule's family (groups with 10 conversations a side)."""
    week = totals.window("7d").metric("success")
    pairs = [
        (g.value, w, g.windows[w].metric("success"), totals.window(w).metric("success"))
        for g in groups
        for w in WINDOWS
    ]
    pairs.append((None, REGRESSION_WINDOW, totals.recent.metric("success"), week))
    tests = []
    for value, window, inside, whole in pairs:
        n_in, n_out = inside.m, whole.m - inside.m
        if n_in >= MIN_GROUP_N and n_out >= MIN_GROUP_N:
            tests.append(
                GroupTest(
                    "segment" if value else "regression",
                    "segment" if value else None,
                    value,
                    "success",
                    window,
                    round(n_in),
                    old_two_proportion_z(inside.y, n_in, whole.y - inside.y, n_out),
                )
            )
    return tests


def actionable(tests: list[GroupTest]) -> frozenset[str]:
    return frozenset(fingerprints.of_test(f.test) for f in evaluate(tests, RULES) if f.actionable)


def planted_found(found: frozenset[str]) -> bool:
    return any(f"={PLANTED}:" in fingerprint for fingerprint in found)


def false_findings(found: frozenset[str]) -> int:
    return sum(f"={PLANTED}:" not in fingerprint for fingerprint in found)


def e2e_actionable(
    engine: Engine, log: Log, name: str
) -> tuple[frozenset[str], VersionTotals, list[GroupSums]]:
    """The same conversations through the real handler on SQLite: its actionable
    fingerprints, and the sums the SQL returns (totals, segments)."""
    version_id = seed_prompt(engine, name, candidates=0)[1]
    with engine.begin() as conn:
        prompt_id = conn.scalar(
            select(PromptVersion.prompt_id).where(PromptVersion.id == version_id)
        )
        conn.execute(
            insert(Conversation),
            [
                {
                    "prompt_id": prompt_id,
                    "version_id": version_id,
                    "unit_id": f"user-{u}",
                    "segment": f"seg-{log.segment_of_user[u]:02d}",
                    "success": bool(ok),
                    "occurred_at": ACCURACY_NOW - timedelta(hours=float(h)),
                }
                for u, ok, h in zip(log.user, log.success, log.hours_ago, strict=True)
            ],
        )
    ctx = make_ctx(engine, Clock(ACCURACY_NOW))
    job, _ = make_job(engine, "pattern_analysis", {"prompt": name})
    asyncio.run(analyze_patterns(ctx, job))
    with engine.connect() as conn:
        sql = aggregate.segment_sums(conn, version_id, aggregate.Bounds(ACCURACY_NOW))
        found = frozenset(
            conn.scalars(
                select(PatternInsight.fingerprint).where(
                    PatternInsight.prompt_id == prompt_id, PatternInsight.is_actionable.is_(True)
                )
            )
        )
    return found, sql.totals, sql.segments


def _success_numbers(totals: VersionTotals, groups: list[GroupSums]) -> list[float]:
    """Every figure of the success metric, groups by value (the SQL orders them by size)."""

    def fields(value: Any) -> list[float]:
        return [float(getattr(value, name)) for name in value.__dataclass_fields__]

    out = [float(totals.recent.conversations), *fields(totals.recent.metric("success"))]
    for window in WINDOWS:
        whole = totals.window(window)
        out += [whole.conversations, whole.units, *fields(whole.metric("success"))]
    for group in sorted(groups, key=lambda g: g.value):
        for window in WINDOWS:
            part = group.windows[window]
            out += [part.conversations, *fields(part.metric("success"))]
    return out


def same_sums(
    sql: tuple[VersionTotals, list[GroupSums]], reference: tuple[VersionTotals, list[GroupSums]]
) -> bool:
    x, y = _success_numbers(*sql), _success_numbers(*reference)
    return len(x) == len(y) and bool(np.allclose(x, y, rtol=1e-9, atol=1e-9))


@dataclass
class Tally:
    runs: int = 0
    with_false: int = 0
    false: int = 0
    found: int = 0

    def add(self, found: frozenset[str]) -> None:
        self.runs += 1
        self.with_false += false_findings(found) > 0
        self.false += false_findings(found)
        self.found += planted_found(found)

    def line(self, planted: bool) -> str:
        share = 100.0 * (self.found if planted else self.with_false) / max(1, self.runs)
        text = f"{'found' if planted else 'any actionable'} {share:5.1f}%"
        if planted:
            text += f", runs with a false one {100.0 * self.with_false / max(1, self.runs):5.1f}%"
        return text + f" (false per run {self.false / max(1, self.runs):4.2f})"


def accuracy_world(
    world: World, runs: int, e2e_runs: int, rng: np.random.Generator, engine: Engine | None
) -> tuple[Tally, Tally, Tally, int]:
    """Old rule, new rule (numpy path), new rule through the real handler; and in how many
    end-to-end runs the handler's findings equal the numpy path's."""
    old, new, e2e, agree = Tally(), Tally(), Tally(), 0
    for i in range(runs):
        log = simulate(world, rng)
        groups, totals = numpy_sums(log)
        old.add(actionable(old_rule_tests(groups, totals)))
        found = actionable(build_tests(groups, totals))
        new.add(found)
        if engine is not None and i < e2e_runs:
            name = f"acc-{world.icc:g}-{world.planted_rate}-{i}"
            real, sql_totals, sql_groups = e2e_actionable(engine, log, name)
            e2e.add(real)
            agree += real == found and same_sums((sql_totals, sql_groups), (totals, groups))
    return old, new, e2e, agree


# (icc, seg-03's rate, users a segment, end-to-end runs too)
ACCURACY_ROWS = [
    (0.3, None, 15, True),
    (0.3, 0.15, 15, True),
    (0.3, None, 60, False),
    (0.3, 0.15, 60, False),
    (0.05, None, 15, False),
    (0.05, 0.15, 15, False),
    (0.0, None, 15, False),
    (0.0, 0.15, 15, False),
]


def accuracy(runs: int, e2e_runs: int, seed: int) -> None:
    print(
        f"Accuracy: 20 segments, ~30 conversations a user (geometric), success only; "
        f"{runs} runs a row; FDR 0.05, min effect 0.05, min 50 conversations",
        flush=True,
    )
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        engine = create_db_engine(f"sqlite:///{tmp}/accuracy.db")
        migrate(engine)
        try:
            for icc, planted, users, e2e_too in ACCURACY_ROWS:
                world = World(icc=icc, planted_rate=planted, users_per_segment=users)
                old, new, e2e, agree = accuracy_world(
                    world, runs, e2e_runs if e2e_too else 0, rng, engine
                )
                label = "(a) all alike" if planted is None else "(b) seg-03 at 15%"
                print(
                    f"  icc {icc:4.2f}, {users:2} users a segment, {label:17} | old rule: "
                    f"{old.line(planted is not None)} | new rule: "
                    f"{new.line(planted is not None)}",
                    flush=True,
                )
                if e2e.runs:
                    print(
                        f"{'':8}real handler on SQLite, first {e2e.runs} runs: "
                        f"{e2e.line(planted is not None)}; sums and actionable findings "
                        f"equal to the numpy path's in {agree} of {e2e.runs}",
                        flush=True,
                    )
        finally:
            engine.dispose()


# --- timing ----------------------------------------------------------------------------------


def fill(
    engine: Engine, ids: dict[str, int], start: int, stop: int, now: Any, per_user: int = 1
) -> float:
    pg = engine.dialect.name == "postgresql"
    params = {
        **ids,
        "start": start,
        "stop": stop,
        "per_user": per_user,
        "now": now if pg else now.strftime("%Y-%m-%d %H:%M:%S"),
    }
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
    print(
        f"  {label:>9} {rows:>10,} rows: run {full * 1000:8.1f} ms | segment aggregate "
        f"alone {bare * 1000:8.1f} ms | ratio {full / bare:5.2f}x | totals+segment+tag "
        f"aggregates {aggregates * 1000:8.1f} ms (run/aggregates {full / aggregates:4.2f}x)"
        f" | python peak {peak / 1e6:6.2f} MB | peak RSS growth "
        f"{max_rss_mb() - rss_before:5.1f} MB",
        flush=True,
    )
    print(
        f"            tests {result['tests']}, significant {result['significant']}, "
        f"actionable {result['actionable']}, themes {result['theme_terms']}",
        flush=True,
    )


def run(engine: Engine, total: int, name: str, per_user: int) -> None:
    print(
        f"{name}: one active version, 20 segments, tags refund/vip/web/mobile, "
        f"{per_user} conversation(s) a user",
        flush=True,
    )
    version_id = seed_prompt(engine, NAME, candidates=0)[1]
    with engine.connect() as conn:
        prompt_id = conn.execute(
            text("SELECT prompt_id FROM ai_prompt_versions WHERE id = :v"), {"v": version_id}
        ).scalar_one()
    ids = {"prompt_id": prompt_id, "version_id": version_id}
    clock = Clock(utcnow().replace(microsecond=0) + timedelta(seconds=1))
    fifth = total // 5
    seconds = fill(engine, ids, 0, fifth, clock.now, per_user)
    print(f"  generated {fifth:,} rows in {seconds:.1f} s", flush=True)
    measure(engine, version_id, clock, fifth, "1/5 size")
    seconds = fill(engine, ids, fifth, total, clock.now, per_user)
    print(f"  generated {total - fifth:,} more rows in {seconds:.1f} s", flush=True)
    measure(engine, version_id, clock, total, "full size")


def timing(args: argparse.Namespace) -> None:
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
            engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
            migrate(engine)
            try:
                run(engine, args.n, "SQLite", args.per_user)
            finally:
                engine.dispose()
    if not args.skip_postgres:
        cluster = None if args.postgres else start_cluster()
        url = args.postgres or (cluster.url if cluster else "")
        try:
            engine = create_db_engine(make_url(url).render_as_string(hide_password=False))
            migrate(engine)
            try:
                run(engine, args.pg_n, "PostgreSQL", args.per_user)
            finally:
                engine.dispose()
        finally:
            if cluster is not None:
                cluster.destroy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs per accuracy row (500)")
    parser.add_argument(
        "--e2e-runs",
        type=int,
        default=10,
        help="of those, runs also through the real handler on SQLite (10)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--n", type=int, default=1_000_000, help="SQLite rows (1M)")
    parser.add_argument("--pg-n", type=int, default=5_000_000, help="PostgreSQL rows (5M)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="an existing PostgreSQL database (emptied tables are not "
        "assumed: use a fresh one); default: start a throwaway cluster",
    )
    parser.add_argument(
        "--per-user",
        type=int,
        default=1,
        help="timing: conversations a user (1, the most users possible)",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_accuracy:
        started = time.perf_counter()
        accuracy(args.runs, args.e2e_runs, args.seed)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    if not args.skip_timing:
        timing(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
