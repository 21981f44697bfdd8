"""The benchmark's vectorised rule is the real rule: check by check, per_unit_rule() in
benchmarks/aa_ab_simulation.py gives exactly the decisions of optimizer.stats.analyze() +
optimizer.experiments.decide.decide() on the same simulated conversations.

The reference side aggregates the conversations directly, as aggregate.py's SQL does (per
assignment slice and unit; only a slice's own conversations count for its metrics; caps
fixed the way monitor.check_experiment and caps.py fix them), so it also checks the
benchmark's incremental per-unit sums.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from benchmarks.aa_ab_simulation import (
    ENDED,
    KINDS,
    PROMOTE,
    RATIO,
    STOP,
    Events,
    Rule,
    Sums,
    World,
    accumulate,
    per_unit_rule,
    primary_interval,
    simulate,
    sums_at,
)
from optimizer.experiments.caps import CAP_QUANTILE, CAP_SAMPLE, MIN_CAP_SAMPLE
from optimizer.experiments.decide import DecisionSettings, decide
from optimizer.stats import (
    AnalysisSettings,
    ArmData,
    ExperimentAnalysis,
    RatioSums,
    alpha_per_arm,
    analyze,
)
from optimizer.stats.metrics import CAPPED, NAMES

T0 = datetime(2026, 5, 1, tzinfo=UTC)
CHECKS = 160  # 40 hours
RULE = Rule(min_runtime_hours=6.0, max_runtime_hours=40.0)
SETTINGS = DecisionSettings(
    min_conversations_per_arm=RULE.min_conversations,
    min_runtime_hours=RULE.min_runtime_hours,
    max_runtime_hours=RULE.max_runtime_hours,
)

WORLDS = {
    "aa_repeat_users": World(conversations_per_user=3.0, checks=CHECKS),
    "aa_heavy_users": World(conversations_per_user=10.0, cost_sigma=2.0, checks=CHECKS),
    "costly_variant": World(lift=0.10, cost_factor=1.6, checks=CHECKS),
    # arm 2 is stopped for its cost, then arm 1 is promoted (alpha still split over both)
    "three_arms_stop_then_promote": World(
        arms=3,
        lift=(0.5, 0.0),
        cost_factor=(1.0, 2.0),
        cost_sigma=0.5,
        per_check=100,
        checks=CHECKS,
    ),
    # two rare segments: pooled into a stratum of their own or into the largest one
    "segments": World(
        base_rates=(0.1, 0.6, 0.3, 0.2),
        segment_shares=(0.03, 0.03, 0.47, 0.47),
        lift=0.25,
        cost_sigma=0.5,
        checks=CHECKS,
    ),
}


def ratio_sums(unit: np.ndarray, value: np.ndarray, units: int) -> RatioSums:
    """One metric summed per unit (y: total, m: conversations reporting it; `unit` indexes
    0..units-1), then over the units that reported it."""
    present = ~np.isnan(value)
    y = np.bincount(unit, np.where(present, value, 0.0), units)
    m = np.bincount(unit, present.astype(float), units)
    k = m > 0
    y, m = y[k], m[k]
    return RatioSums(
        int(k.sum()), float(y.sum()), float(m.sum()), float(y @ y), float(m @ m), float(y @ m)
    )


def one_experiment(ev: Events, e: int) -> dict[str, np.ndarray]:
    """Its conversations in time order, units numbered from 0."""
    rows = np.flatnonzero(ev.exp == e)
    rows = rows[np.argsort(ev.time[rows], kind="stable")]
    out = {
        "arm": ev.arm[rows],
        "segment": ev.segment[rows],
        "time": ev.time[rows],
        **{m: v[rows] for m, v in ev.values.items()},
    }
    _, out["unit"] = np.unique(ev.unit[rows], return_inverse=True)
    return out


def arm_data(
    ev: Events, x: dict[str, np.ndarray], check: int, stop_at: list[int], caps: dict[str, float]
) -> list[ArmData]:
    """aggregate.arm_data for one experiment at one check, straight from its conversations."""
    units = int(x["unit"].max()) + 1
    x = {k: v[: np.searchsorted(x["time"], check)] for k, v in x.items()}  # time < check
    arms = []
    for a in range(ev.arms):
        in_slice = x["arm"] == a
        own = in_slice & (x["time"] < stop_at[a])  # after a stop its units are served control
        metrics = {}
        for metric in NAMES:
            v = x[metric][own]
            if metric in caps:
                v = np.where(v > caps[metric], caps[metric], v)
            metrics[metric] = ratio_sums(x["unit"][own], v, units)
        strata = {}
        for seg in np.unique(x["segment"][in_slice]):
            key = f"s{seg}" if ev.segments > 1 else None
            rows = own & (x["segment"] == seg)
            strata[key] = ratio_sums(x["unit"][rows], x["success"][rows], units)
        arms.append(
            ArmData(
                arm_id=a + 1,
                version=a + 1,
                is_control=a == 0,
                weight=1.0,
                active=stop_at[a] > check,
                units=int(np.count_nonzero(np.bincount(x["unit"][in_slice]))),
                conversations=int(own.sum()),
                metrics=metrics,
                strata=strata,
            )
        )
    return arms


def fix_caps(
    x: dict[str, np.ndarray], check: int, control: ArmData, caps: dict[str, float]
) -> dict[str, float]:
    """caps.fix_missing_caps: the CAP_QUANTILE of the control's first CAP_SAMPLE values."""
    new = {}
    for metric in CAPPED:
        if metric in caps or control.metrics[metric].observations < MIN_CAP_SAMPLE:
            continue
        v = x[metric]
        rows = np.flatnonzero((x["arm"] == 0) & (x["time"] < check) & ~np.isnan(v))
        early = np.sort(v[rows[:CAP_SAMPLE]])  # x is in time order
        if len(early) >= MIN_CAP_SAMPLE:
            value = float(early[max(0, math.ceil(CAP_QUANTILE * len(early)) - 1)])
            if math.isfinite(value) and value > 0:
                new[metric] = value
    return new


def same_sums(data: list[ArmData], seen: list[dict]) -> None:
    """The benchmark's incremental per-unit sums equal the direct aggregation."""
    for arm, view in zip(data, seen, strict=True):
        assert arm.units == view["units"] and arm.conversations == view["conversations"]
        for metric, sums in arm.metrics.items():
            assert [getattr(sums, f) for f in RATIO] == pytest.approx(
                list(view["metrics"][metric]), rel=1e-9, abs=1e-9
            ), metric
        for key, sums in arm.strata.items():
            k = int(key[1:]) if key is not None else 0
            if key is not None:
                assert [getattr(sums, f) for f in RATIO] == pytest.approx(
                    list(view["strata"][:, k]), rel=1e-9, abs=1e-9
                ), key


def same_interval(analysis: ExperimentAnalysis, seen: list[dict], stratify: bool) -> None:
    """The benchmark's primary interval is compare()'s, post-stratification included."""
    alpha = alpha_per_arm(RULE.confidence, len(seen) - 1)
    rule = dataclasses.replace(RULE, stratify=stratify)
    c = seen[0]
    for cmp in analysis.comparisons:
        a = seen[cmp.arm_id - 1]
        strata = (c["strata"], a["strata"]) if c["strata"].shape[1] > 1 else (None, None)
        ok, low, high = primary_interval(
            c["metrics"]["success"], a["metrics"]["success"], *strata, alpha, rule
        )
        assert bool(ok) == (cmp.error is None)
        if cmp.error is None:
            assert (float(low), float(high)) == pytest.approx(
                (cmp.diff_low, cmp.diff_high), rel=1e-9, abs=1e-12
            )


def replay(
    ev: Events, sums: Sums, e: int, stratify: bool, strata: set[int]
) -> list[tuple[str, int, tuple[int, ...]]]:
    """Every check of experiment e through analyze() and decide(), carrying out each
    decision as transitions.apply_decision does: (kind, winner arm index, stopped arm indexes).
    Checks the benchmark's sums on the way; adds to `strata` the numbers of segment strata
    the comparisons used."""
    x = one_experiment(ev, e)
    stop_at = [CHECKS + 1] * ev.arms
    caps: dict[str, float] = {}
    settings = AnalysisSettings(stratify=stratify)
    out = []
    for check in range(1, CHECKS + 1):
        data = arm_data(ev, x, check, stop_at, caps)
        if fixed := fix_caps(x, check, data[0], caps):
            caps.update(fixed)
            data = arm_data(ev, x, check, stop_at, caps)
        same_sums(data, sums_at(sums, e, check, stop_at))
        analysis = analyze(data, settings, caps)
        same_interval(analysis, sums_at(sums, e, check, stop_at), stratify)
        strata.update(c.strata for c in analysis.comparisons)
        d = decide(analysis, data, SETTINGS, T0, T0 + timedelta(minutes=15 * check))
        winner = d.winner_arm_id - 1 if d.winner_arm_id is not None else -1
        stopped = tuple(i - 1 for i in d.stopped_arm_ids)
        out.append((d.kind, winner, stopped))
        for a in stopped:
            stop_at[a] = check
        if d.kind in ("promote", "pause_srm", "inconclusive") or all(
            stop_at[a] <= CHECKS for a in range(1, ev.arms)
        ):
            break
    return out


def vectorised(ev: Events, e: int, outcome) -> list[tuple[str, int, tuple[int, ...]]]:
    assert outcome.path is not None and outcome.detail is not None
    out = []
    for j in range(CHECKS):
        code, detail = int(outcome.path[e, j]), int(outcome.detail[e, j])
        if code == ENDED:
            break
        winner = detail if code == PROMOTE else -1
        stopped = tuple(a for a in range(ev.arms) if code == STOP and detail >> a & 1)
        out.append((KINDS[code], winner, stopped))
    return out


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_vectorised_rule_matches_analyze_and_decide(name):
    world = WORLDS[name]
    experiments = 2
    ev = simulate(np.random.default_rng([7, len(name)]), world, experiments)
    sums = accumulate(ev)
    stratified = [True, False] if world.segments > 1 else [True]
    kinds: set[str] = set()
    strata: set[int] = set()
    for stratify in stratified:
        rule = dataclasses.replace(RULE, stratify=stratify)
        outcome = per_unit_rule(sums, rule, path=True)
        for e in range(experiments):
            expected = replay(ev, sums, e, stratify, strata)
            assert vectorised(ev, e, outcome) == expected, (name, e, stratify)
            kinds.update(k for k, _, _ in expected)
    assert "continue" in kinds
    if name == "segments":
        assert "promote" in kinds and {2, 3} <= strata
    elif name.startswith("three"):
        assert {"stop_arms", "promote"} <= kinds
    elif not name.startswith("aa"):
        assert "stop_arms" in kinds
