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
actionable findings (the actionable facets of the stored insights, which group the
findings about the same conversations) must equal the numpy path's.

Scale (--skip-timing leaves it out). One prompt with one active version on PostgreSQL (a
throwaway cluster, as benchmarks/monitoring.py starts one, or --postgres URL), its history
growing at a fixed rate (--per-hour, 5,000 conversations an hour: 1M conversations are 8.3
days, 20M are 167 days) from a fixed population of users who come back (sessions of a few
conversations; a heavy tail of users who come back hundreds of times), stored with COPY.
The history grows backwards in time, so the runs stay at its newest end; after each growth a
catch-up rollup pass reads it (untimed: a service would have rolled it up hour by hour).
At each size (--sizes, 1M, 5M and 20M) --repeats runs an hour apart, each after an hour of
new traffic, as the hourly schedule sees it; it prints the median time of the rollup pass
over the new hour and of the analysis run (the real handler: its own pass, the rollup's
sums, the tests, BH, transcript samples and themes, sample ids, storing, chaining), peak
Python memory (tracemalloc) and the growth of the process's peak RSS, the rollup's size, and
for comparison the same sums by a full scan of the raw conversations (tests/support/
pattern_scan.py, what a run did before the rollup; --skip-raw leaves it out), and what
grouping's count of shared conversations (optimizer.patterns.overlap) costs when a run
needs it: the planted segment with one tag, and with four. Last, the ratio
of the largest size's pass + run to the smallest's (aim: within 2x, memory flat).

Usage: python -m benchmarks.pattern_analysis [--runs 500] [--e2e-runs 10] [--seed 1]
       [--skip-accuracy] [--skip-timing] [--sizes 1000000,5000000,20000000]
       [--per-hour 5000] [--users 100000] [--repeats 3] [--postgres URL] [--skip-raw]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
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
from optimizer.patterns.grouping import Subject  # noqa: E402
from optimizer.patterns.overlap import co_occurrences  # noqa: E402
from optimizer.patterns.rollup import floor_hour  # noqa: E402
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
from tests.support import pattern_scan  # noqa: E402
from tests.support.experiments import Clock, make_ctx, make_job, seed_prompt  # noqa: E402
from tests.support.patterns import roll_up  # noqa: E402
from tests.support.pg import start_cluster  # noqa: E402

NAME = "bench"

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
        stored = conn.scalars(
            select(PatternInsight.evidence).where(
                PatternInsight.prompt_id == prompt_id, PatternInsight.is_actionable.is_(True)
            )
        )
        # An insight groups the findings about the same conversations: its actionable
        # facets are the findings the numpy path names one by one.
        found = frozenset(
            fingerprints.regression(f["metric"])
            if f["dimension"] is None
            else fingerprints.segment(f["dimension"], f["value"], f["metric"], f["window"])
            for raw in stored
            for f in json.loads(raw)["facets"]
            if f["actionable"]
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


# --- scale: one pass at 1M, 5M and 20M conversations (PostgreSQL) -----------------------------

COPY_COLUMNS = (
    "prompt_id, version_id, unit_id, success, rating, latency_ms, cost_usd, segment, tags, "
    "transcript, occurred_at"
)
TAG_CHOICES = ['["refund"]', '["vip", "web"]', '["web"]', '["mobile", "web"]', '["web", "web"]']
TAG_WEIGHTS = [0.05, 0.05, 0.2, 0.1, 0.05]  # the rest (0.55): no tags
WORDS = np.array(["order", "account", "delivery", "password", "plan", "app", "email", "report"])
CHUNK_HOURS = 100
USER_TAIL = 1.7


@dataclass(frozen=True)
class Traffic:
    """Conversations at a fixed rate: sessions of a few conversations a couple of minutes
    apart (geometric, mean 3), each the session of a user drawn from a fixed population
    with heavy-tailed activity (Pareto weights, shape USER_TAIL: most users come back a few
    times a week, a few hundreds of times); a user's segment is fixed (20, seg-03 planted
    worse), every user has a propensity of their own; tags on 45% of the conversations,
    transcripts on 10%, ratings on 40%, heavy-tailed latency and cost."""

    per_hour: int
    users: int
    prompt_id: int
    version_id: int

    @functools.cached_property
    def activity(self) -> np.ndarray:
        """Each user's cumulative share of the sessions."""
        weights = np.random.default_rng(7).pareto(USER_TAIL, self.users) + 1.0
        return np.cumsum(weights) / weights.sum()


def traffic_block(traffic: Traffic, start: datetime, hours: int, rng: np.random.Generator) -> bytes:
    """COPY text for `hours` hours of traffic from `start`, in order of time."""
    n = traffic.per_hour * hours
    lengths = rng.geometric(1 / 3, size=n // 2 + 16)
    ends = np.cumsum(lengths)
    sessions = int(np.searchsorted(ends, n)) + 1
    lengths = lengths[:sessions].copy()
    lengths[-1] -= int(ends[sessions - 1]) - n
    session = np.repeat(np.arange(sessions), lengths)
    position = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    span = hours * 3600
    begins = rng.random(sessions) * span
    seconds = np.minimum(begins[session] + 120.0 * position, span - 1e-3)
    order = np.argsort(seconds, kind="stable")
    seconds, session = seconds[order], session[order]
    users = np.searchsorted(traffic.activity, rng.random(sessions), side="right")
    unit = np.minimum(users, traffic.users - 1)[session]
    segment = unit % 20
    propensity = ((unit * 2654435761) % 1000) / 1000.0 - 0.5
    success = rng.random(n) < np.where(segment == 3, 0.40, 0.70) + 0.2 * propensity
    rated = rng.random(n) < 0.4
    rating = np.where(success, rng.integers(3, 6, n), rng.integers(1, 4, n))
    tag_roll = rng.choice(len(TAG_CHOICES) + 1, size=n, p=[*TAG_WEIGHTS, 1 - sum(TAG_WEIGHTS)])
    tags = np.array([*TAG_CHOICES, "\\N"])[tag_roll]
    said = rng.random(n) < 0.1
    words = WORDS[rng.integers(0, len(WORDS), n)]
    moments = np.datetime64(start.replace(tzinfo=None), "us") + (seconds * 1e6).astype(
        "timedelta64[us]"
    )
    columns = [
        [str(traffic.prompt_id)] * n,
        [str(traffic.version_id)] * n,
        [f"u{u}" for u in unit.tolist()],
        np.where(success, "t", "f").tolist(),
        np.where(rated, rating.astype(str), "\\N").tolist(),
        np.round(rng.lognormal(6.5, 1.0, n), 1).astype(str).tolist(),
        np.round(rng.lognormal(-6.0, 1.2, n), 6).astype(str).tolist(),
        [f"seg-{s:02d}" for s in segment.tolist()],
        tags.tolist(),
        [
            (f"user: my {w} question" + (" and the invoice refund is wrong" if not ok else ""))
            if say
            else "\\N"
            for w, ok, say in zip(words.tolist(), success.tolist(), said.tolist(), strict=True)
        ],
        [f"{m}+00" for m in np.datetime_as_string(moments, unit="us").tolist()],
    ]
    return ("\n".join(map("\t".join, zip(*columns, strict=True))) + "\n").encode()


def copy_traffic(engine: Engine, traffic: Traffic, start: datetime, hours: int, seed: int) -> int:
    """Stores `hours` hours of traffic from `start` with COPY, CHUNK_HOURS a transaction."""
    rng = np.random.default_rng(seed)
    stored = 0
    raw = engine.raw_connection()
    try:
        for offset in range(0, hours, CHUNK_HOURS):
            span = min(CHUNK_HOURS, hours - offset)
            data = traffic_block(traffic, start + timedelta(hours=offset), span, rng)
            statement = f"COPY conversations ({COPY_COLUMNS}) FROM STDIN"
            with raw.cursor() as cur, cur.copy(statement) as copy:
                copy.write(data)
            raw.commit()
            stored += traffic.per_hour * span
    finally:
        raw.close()
    return stored


def vacuum_analyze(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one_run(engine: Engine, clock: Clock) -> dict[str, Any]:
    ctx = make_ctx(engine, clock)
    job, _ = make_job(engine, "pattern_analysis", {"prompt": NAME})
    return asyncio.run(analyze_patterns(ctx, job))["prompts"][0]  # type: ignore[no-any-return]


def raw_scan(engine: Engine, version_id: int, bounds: aggregate.Bounds) -> None:
    """The statements a run used before the rollup: every conversation of the 7 days."""
    with read_only(engine).connect() as conn:
        pattern_scan.segment_sums(conn, version_id, bounds)
        pattern_scan.tag_sums(conn, version_id, bounds)


def overlap_cost(engine: Engine, version_id: int, bounds: aggregate.Bounds) -> None:
    """What grouping's count of shared conversations costs when a run needs it (here no
    tag does worse, so the runs above never do): with one candidate tag (only the
    candidate segment's rows are read) and with several (every conversation's tags of the
    7 days are read)."""
    seg = Subject("segment", PLANTED)
    tags = [Subject("tag", t) for t in ("refund", "vip", "web", "mobile")]
    times = []
    for subjects in ([seg, tags[0]], [seg, *tags]):
        with read_only(engine).connect() as conn:
            counts, seconds = timed(
                lambda conn=conn, subjects=subjects: co_occurrences(
                    conn, version_id, bounds, subjects
                )
            )
        times.append(f"{seconds * 1000:8.1f} ms ({len(counts)} pairs)")
    print(
        f"{'':15}grouping's shared conversations, when needed: a segment and one tag "
        f"{times[0]}; a segment and four tags {times[1]}",
        flush=True,
    )


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@dataclass
class Measured:
    rows: int
    pass_ms: float
    run_ms: float
    peak_mb: float
    rss_growth_mb: float


class Scale:
    """One database whose history grows backwards from `end` while the runs go forwards:
    each measured run comes an hour after the previous one, with an hour's new traffic."""

    def __init__(self, engine: Engine, traffic: Traffic, end: datetime, seed: int) -> None:
        self.engine, self.traffic, self.seed = engine, traffic, seed
        self.oldest = end  # history covers [oldest, newest)
        self.newest = end
        self.rows = 0

    def grow_to(self, rows: int) -> None:
        hours = max(0, (rows - self.rows) // self.traffic.per_hour)
        start = self.oldest - timedelta(hours=hours)
        _, seconds = timed(
            lambda: copy_traffic(self.engine, self.traffic, start, hours, self.seed + hours)
        )
        self.oldest, self.rows = start, self.rows + hours * self.traffic.per_hour
        clock = Clock(self.newest + timedelta(minutes=5))
        _, catch_up = timed(lambda: roll_up(self.engine, clock.now))
        # As autovacuum would have by the time of the runs: the tables' statistics.
        _, vacuum = timed(lambda: vacuum_analyze(self.engine))
        days = (self.newest - self.oldest) / timedelta(days=1)
        added = hours * self.traffic.per_hour
        print(
            f"  history {self.rows:>11,} conversations ({days:5.1f} days at "
            f"{self.traffic.per_hour:,}/h): generated and copied {added:,} in {seconds:6.1f} s, "
            f"catch-up rollup pass {catch_up:6.1f} s, VACUUM ANALYZE {vacuum:5.1f} s",
            flush=True,
        )

    def next_hour(self) -> Clock:
        """An hour's new traffic, and the clock of the run at the top of the next hour."""
        copy_traffic(self.engine, self.traffic, self.newest, 1, self.seed + self.rows)
        self.newest += timedelta(hours=1)
        self.rows += self.traffic.per_hour
        return Clock(self.newest + timedelta(minutes=1))

    def measure(self, repeats: int, skip_raw: bool) -> Measured:
        passes, runs = [], []
        result: dict[str, Any] = {}
        for _ in range(repeats):
            clock = self.next_hour()
            _, pass_s = timed(lambda clock=clock: roll_up(self.engine, clock.now))
            result, run_s = timed(lambda clock=clock: one_run(self.engine, clock))
            passes.append(pass_s)
            runs.append(run_s)
        clock = self.next_hour()
        rss_before = max_rss_mb()
        tracemalloc.start()
        roll_up(self.engine, clock.now)
        one_run(self.engine, clock)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        measured = Measured(
            self.rows,
            1000 * statistics.median(passes),
            1000 * statistics.median(runs),
            peak / 1e6,
            max_rss_mb() - rss_before,
        )
        in_window = result.get("conversations_7d", 0)
        print(
            f"  {self.rows:>11,} conversations: rollup pass (the new hour, "
            f"{self.traffic.per_hour:,} rows) {measured.pass_ms:8.1f} ms | analysis run "
            f"{measured.run_ms:8.1f} ms | together {measured.pass_ms + measured.run_ms:8.1f} ms "
            f"| python peak {measured.peak_mb:6.2f} MB | peak RSS growth "
            f"{measured.rss_growth_mb:5.1f} MB",
            flush=True,
        )
        print(
            f"{'':15}7 days: {in_window:,} conversations of {result.get('units_7d', 0):,} users "
            f"in {count(self.engine, 'pattern_unit_hours'):,} unit-hours (the rollup, 8 days: "
            f"also {count(self.engine, 'pattern_segment_unit_hours'):,} segment and "
            f"{count(self.engine, 'pattern_tag_unit_hours'):,} tag rows); tests "
            f"{result.get('tests')}, actionable {result.get('actionable')}",
            flush=True,
        )
        overlap_cost(self.engine, self.traffic.version_id, aggregate.Bounds(clock.now))
        if not skip_raw:
            version_id = self.traffic.version_id
            _, raw_s = timed(lambda: raw_scan(self.engine, version_id, aggregate.Bounds(clock.now)))
            print(
                f"{'':15}for comparison, the same sums by a full scan of the raw "
                f"conversations (before the rollup): {raw_s * 1000:9.1f} ms",
                flush=True,
            )
        return measured


def scale(args: argparse.Namespace) -> None:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    cluster = None if args.postgres else start_cluster()
    url = args.postgres or (cluster.url if cluster else "")
    try:
        engine = create_db_engine(make_url(url).render_as_string(hide_password=False))
        migrate(engine)
        try:
            version_id = seed_prompt(engine, NAME, candidates=0)[1]
            with engine.connect() as conn:
                prompt_id = conn.execute(
                    text("SELECT prompt_id FROM ai_prompt_versions WHERE id = :v"),
                    {"v": version_id},
                ).scalar_one()
            traffic = Traffic(args.per_hour, args.users, prompt_id, version_id)
            print(
                f"PostgreSQL: one pattern pass (the rollup of the last hour's conversations, "
                f"then the analysis run) as history grows, {args.per_hour:,} conversations an "
                f"hour from {args.users:,} users; median of {args.repeats} runs an hour apart",
                flush=True,
            )
            end = floor_hour(utcnow()) - timedelta(hours=args.repeats + 2)
            world = Scale(engine, traffic, end, args.seed)
            measured = []
            for size in sizes:
                world.grow_to(size)
                measured.append(world.measure(args.repeats, args.skip_raw))
            first, last = measured[0], measured[-1]
            total = [m.pass_ms + m.run_ms for m in (first, last)]
            print(
                f"  {last.rows:,} against {first.rows:,} conversations: pass + run "
                f"{total[1] / total[0]:4.2f}x (aim: within 2x); python peak "
                f"{last.peak_mb:.2f} MB against {first.peak_mb:.2f} MB",
                flush=True,
            )
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
    parser.add_argument(
        "--sizes",
        default="1000000,5000000,20000000",
        help="conversations of history at which to measure (1M, 5M, 20M)",
    )
    parser.add_argument("--per-hour", type=int, default=5_000, help="traffic (5,000 an hour)")
    parser.add_argument("--users", type=int, default=100_000, help="user population (100,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs a size, an hour apart (3)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="an existing, empty PostgreSQL database; default: start a throwaway cluster",
    )
    parser.add_argument(
        "--skip-raw", action="store_true", help="do not time the full scan for comparison"
    )
    args = parser.parse_args(argv)
    if not args.skip_accuracy:
        started = time.perf_counter()
        accuracy(args.runs, args.e2e_runs, args.seed)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    if not args.skip_timing:
        scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
