"""A/A and A/B simulation of the experiment rule, checked every 15 minutes for 14 days.

Users (the randomisation units) come back: each simulated experiment is a stream of
conversations of returning users, and the figures compare two rules on the same streams:

- new: the rule the service runs (per-unit ratio metrics with delta-method variances,
  post-stratification by segment, always-valid intervals Bonferroni-split over every variant
  arm, guardrails as non-inferiority gates, harm stops the arm, SRM on units, caps on cost
  and latency), through `per_unit_rule`: a numpy transcription of
  optimizer.stats.analyze() + optimizer.experiments.decide.decide() over every check of
  many experiments at once, built on the same library functions (ratio_moments,
  contrast_stats, srm_log_bayes_factor, alpha_per_arm, the constants of decide, stratify
  and caps). tests/unit/test_simulation_matches_decide.py checks, check by check, that it
  gives exactly the decisions analyze() and decide() give.
- old: the rule before per-unit analysis (git 31edbe6), transcribed below in
  `per_conversation_rule` for comparison only: conversations as independent observations,
  SRM on conversation counts, guardrails as vetoes ("no harm shown at this check") with
  the old tolerances, only the primary metric stops an arm, no caps.

Traffic (stated in `World`): 50 conversations per 15 minutes (4,800 a day) from the start,
split over the arms by unit. Users have a geometric number of conversations (mean 3, or
10), spaced by exponential gaps of mean 12 h; the process is stationary, so the
experiment starts amid returning users (users who began before the start are assigned at
their first conversation after it). A user's success probability is drawn from a Beta
with the segment's base rate as mean and intra-class correlation 0.2. Rating (1-5) is
reported on 30% of conversations; cost (median $0.01) and latency (median 2 s) are
lognormal; all three are independent of success and identical in every arm unless a
scenario says otherwise.

Sums are tracked per unit: each conversation moves its unit's totals from (y, m) to
(y + dy, m + dm), which adds 2*y*dy + dy^2 to sum_yy, 2*m*dm + dm^2 to sum_mm and
y*dm + m*dy + dy*dm to sum_ym; the increments are summed per (experiment, arm, check) and
cumulated over checks. A stopped arm's sums freeze (its units are served control from then
on) while its units keep counting for the SRM test. Caps follow caps.py: fixed at the first
check where the control has MIN_CAP_SAMPLE values, from its first CAP_SAMPLE values.

Usage: python -m benchmarks.aa_ab_simulation [--experiments N] [--seed 1] [--jobs 2]
       [--target-n N] [--min-stratum-units N] (candidate constants, shown as extra rows)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from optimizer.experiments.caps import CAP_QUANTILE, CAP_SAMPLE, MIN_CAP_SAMPLE
from optimizer.experiments.decide import MIN_UNITS_PER_ARM
from optimizer.stats import (
    CS_TARGET_N,
    DEFAULT_GUARDRAILS,
    MIN_STRATUM_UNITS,
    REGISTRY,
    SRM_ALPHA,
    Guardrail,
    alpha_per_arm,
    contrast_stats,
    ratio_moments,
)
from optimizer.stats.metrics import CAPPED, NAMES
from optimizer.stats.sequential import mixture_eta, one_sided_halfwidth, two_sided_halfwidth
from optimizer.stats.srm import SRM_PRIOR_CONCENTRATION, srm_log_bayes_factor

CHECK_MINUTES = 15
CHECKS = 14 * 24 * 4  # 1344 checks: 14 days
PER_CHECK = 50  # conversations per check, all arms together
RETURN_GAP_HOURS = 12.0
ICC = 0.2
RATING_SHARE = 0.3
RATING_PROBS = (0.05, 0.10, 0.20, 0.35, 0.30)
COST_MEDIAN, LATENCY_MEDIAN, LATENCY_SIGMA = 0.01, 2000.0, 0.5
PRIMARY = "success"

# decision codes; ENDED marks checks after the experiment ended
CONTINUE, PROMOTE, STOP, PAUSE, INCONCLUSIVE, ENDED = 0, 1, 2, 3, 4, -1
KINDS = {
    CONTINUE: "continue",
    PROMOTE: "promote",
    STOP: "stop_arms",
    PAUSE: "pause_srm",
    INCONCLUSIVE: "inconclusive",
}
RATIO = ("units", "sum_y", "sum_m", "sum_yy", "sum_mm", "sum_ym")


@dataclass(frozen=True)
class World:
    """Traffic and truth of one scenario. Arm 0 is the control; every variant gets `lift`
    (relative, on each segment's success rate) and `cost_factor` (on every cost value)."""

    arms: int = 2
    conversations_per_user: float = 3.0
    icc: float = ICC
    base_rates: tuple[float, ...] = (0.30,)
    segment_shares: tuple[float, ...] = (1.0,)
    lift: float | tuple[float, ...] = 0.0  # a tuple: one value per variant
    cost_factor: float | tuple[float, ...] = 1.0
    cost_sigma: float = 1.0
    per_check: float = PER_CHECK
    checks: int = CHECKS

    @property
    def segments(self) -> int:
        return len(self.base_rates)

    def per_arm(self, value: float | tuple[float, ...], control: float) -> np.ndarray:
        variants = value if isinstance(value, tuple) else (value,) * (self.arms - 1)
        return np.asarray((control, *variants), dtype=float)


@dataclass(frozen=True)
class Rule:
    """The experiment settings the transcriptions take (defaults: the service's)."""

    confidence: float = 0.90
    min_conversations: int = 100
    min_runtime_hours: float = 24.0
    max_runtime_hours: float = 336.0
    guardrails: tuple[Guardrail, ...] = DEFAULT_GUARDRAILS
    stratify: bool = True
    target_n: float = CS_TARGET_N
    min_stratum_units: int = MIN_STRATUM_UNITS
    min_units: int = MIN_UNITS_PER_ARM


# The old rule's defaults (git 31edbe6): rating had no tolerance.
OLD_GUARDRAILS = (
    Guardrail("rating", True, 0.0),
    Guardrail("cost_usd", False, 0.10),
    Guardrail("latency_ms", False, 0.10),
)


@dataclass(frozen=True)
class Events:
    """Conversations of `experiments` experiments, grouped by unit, in time order within
    each unit. `time` is in checks since the start; `values` are NaN where a conversation
    did not report the metric (or reported a value outside its bounds)."""

    experiments: int
    arms: int
    segments: int
    checks: int
    exp: np.ndarray
    unit: np.ndarray
    arm: np.ndarray
    segment: np.ndarray
    time: np.ndarray
    position: np.ndarray  # index of the conversation within its unit
    values: dict[str, np.ndarray]


def simulate(rng: np.random.Generator, world: World, experiments: int) -> Events:
    gap = RETURN_GAP_HOURS * 60 / CHECK_MINUTES  # in checks
    mu, checks = world.conversations_per_user, world.checks
    rate = world.per_check / mu  # new users per check
    new = rng.poisson(rate * checks, experiments)
    # Users active at the start (stationary process): by memorylessness their next
    # conversation is an exponential gap away and their remaining count is geometric.
    old = rng.poisson(rate * (mu - 1.0) * gap, experiments)
    per_exp = new + old
    users = int(per_exp.sum())
    exp = np.repeat(np.arange(experiments), per_exp)
    is_new = np.arange(users) - np.repeat(np.cumsum(per_exp) - per_exp, per_exp) < new[exp]
    start = np.empty(users)
    start[is_new] = rng.uniform(0.0, checks, int(is_new.sum()))
    start[~is_new] = rng.exponential(gap, users - int(is_new.sum()))
    arm = rng.integers(0, world.arms, users)
    segment = rng.choice(world.segments, users, p=np.asarray(world.segment_shares))
    mean = np.asarray(world.base_rates)[segment] * (1.0 + world.per_arm(world.lift, 0.0)[arm])
    kappa = 1.0 / world.icc - 1.0  # Beta(kappa p, kappa (1 - p)): ICC 1 / (kappa + 1)
    p_user = rng.beta(kappa * mean, kappa * (1.0 - mean))
    count = rng.geometric(1.0 / mu, users)
    user = np.repeat(np.arange(users), count)
    first = np.cumsum(count) - count
    gaps = rng.exponential(gap, len(user))
    gaps[first] = 0.0
    elapsed = np.cumsum(gaps)
    t = start[user] + elapsed - elapsed[first][user]
    keep = t < checks  # later conversations fall after the experiment (a prefix per unit)
    position = (np.arange(len(user)) - first[user])[keep]
    user, t = user[keep], t[keep]
    n = len(user)
    arm_c = arm[user]
    rated = rng.random(n, dtype=np.float32) < RATING_SHARE
    rating = np.full(n, np.nan)
    rating[rated] = (
        np.searchsorted(np.cumsum(RATING_PROBS)[:-1], rng.random(int(rated.sum())), side="right")
        + 1.0
    )
    values = {
        "success": (rng.random(n, dtype=np.float32) < p_user[user]).astype(float),
        "rating": rating,
        "cost_usd": np.exp(np.log(COST_MEDIAN) + world.cost_sigma * rng.standard_normal(n))
        * world.per_arm(world.cost_factor, 1.0)[arm_c],
        "latency_ms": np.exp(np.log(LATENCY_MEDIAN) + LATENCY_SIGMA * rng.standard_normal(n)),
    }
    for metric, (low, high) in ((m.name, m.bounds) for m in REGISTRY):
        # A metric the simulated application does not report is missing in every record.
        v = values.get(metric, np.full(n, np.nan))
        values[metric] = np.where((v < low) | (v > high), np.nan, v)
    return Events(
        experiments,
        world.arms,
        world.segments,
        checks,
        exp[user],
        user,
        arm_c,
        segment[user],
        t,
        position,
        values,
    )


@dataclass
class Sums:
    """Cumulative sums after each check; index j along the last axis is check j + 1.

    units, conversations: (E, A, J) units per assignment slice and their conversations;
    ratio[m]: (6, E, A, J) RatioSums fields (RATIO order) without caps (for heavy-tailed
    metrics only valid before the cap's check); capped[m]: the same with the experiment's
    cap, in force from check cap_check[m] (1-based; J + 1: never); per_conversation[m]:
    (3, E, A, J) count, sum and sum of squares of the reported values, uncapped (the old
    rule); strata: (6, E, A, S, J) the primary metric per segment."""

    units: np.ndarray
    conversations: np.ndarray
    ratio: dict[str, np.ndarray]
    capped: dict[str, np.ndarray]
    cap_check: dict[str, np.ndarray]
    cap: dict[str, np.ndarray]
    per_conversation: dict[str, np.ndarray]
    strata: np.ndarray
    weights: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        e, a, j = self.units.shape
        return e, a, j

    def subset(self, sel: np.ndarray) -> Sums:
        def pick(x: np.ndarray, axis: int) -> np.ndarray:
            return np.take(x, sel, axis=axis)

        return Sums(
            pick(self.units, 0),
            pick(self.conversations, 0),
            {k: pick(v, 1) for k, v in self.ratio.items()},
            {k: pick(v, 1) for k, v in self.capped.items()},
            {k: v[sel] for k, v in self.cap_check.items()},
            {k: v[sel] for k, v in self.cap.items()},
            {k: pick(v, 1) for k, v in self.per_conversation.items()},
            pick(self.strata, 1),
            self.weights,
        )


def _before(v: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The unit's running total of v before each of its conversations (units are
    contiguous; head: index of the unit's first conversation)."""
    prefix = np.concatenate(([0.0], np.cumsum(v)[:-1]))
    return prefix - prefix[head]


def _head(position: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(np.where(position == 0, np.arange(len(position)), 0))


def _increments(value: np.ndarray, head: np.ndarray) -> list[np.ndarray]:
    """What each conversation adds to the RatioSums fields (RATIO order) of its arm: its
    unit's totals go from (y0, m0) to (y0 + y, m0 + m), m in {0, 1} and y = 0 when m = 0."""
    m = (~np.isnan(value)).astype(float)
    y = np.where(m > 0, value, 0.0)
    y0, m0 = _before(y, head), _before(m, head)
    return [m * (m0 == 0), y, m, y * (2.0 * y0 + y), m * (2.0 * m0 + 1.0), y0 * m + y * (m0 + 1.0)]


def _caps(
    ev: Events, metric: str, control_m: np.ndarray, min_sample: int
) -> tuple[np.ndarray, np.ndarray]:
    """caps.py's rule: at the first check where the control has MIN_CAP_SAMPLE values, the
    CAP_QUANTILE of its first CAP_SAMPLE values by time. (cap check 1-based, cap)."""
    e_count, checks = control_m.shape
    reached = control_m >= min_sample
    fix = np.where(reached.any(1), reached.argmax(1) + 1, checks + 1)
    n_at = np.where(fix <= checks, control_m[np.arange(e_count), np.minimum(fix, checks) - 1], 0)
    n_early = np.minimum(CAP_SAMPLE, n_at).astype(np.int64)
    v = ev.values[metric]
    sel = np.flatnonzero((ev.arm == 0) & ~np.isnan(v) & (ev.time < fix[ev.exp]))
    sel = sel[np.lexsort((ev.time[sel], ev.exp[sel]))]
    exps = ev.exp[sel]
    starts = np.searchsorted(exps, np.arange(e_count))
    rank = np.arange(len(sel)) - starts[exps]
    sel = sel[rank < n_early[exps]]
    sel = sel[np.lexsort((v[sel], ev.exp[sel]))]
    starts = np.searchsorted(ev.exp[sel], np.arange(e_count))
    offset = np.maximum(0, np.ceil(CAP_QUANTILE * n_early).astype(np.int64) - 1)
    has = n_early >= min_sample
    cap = np.full(e_count, np.nan)
    cap[has] = v[sel[starts[has] + offset[has]]]
    ok = has & np.isfinite(cap) & (cap > 0)
    return np.where(ok, fix, checks + 1), cap


def accumulate(ev: Events, min_cap_sample: int = MIN_CAP_SAMPLE) -> Sums:
    e_count, arms, checks, segs = ev.experiments, ev.arms, ev.checks, ev.segments
    bins = np.minimum(ev.time.astype(np.int64), checks - 1)  # check j sees time < j
    key = (ev.exp * arms + ev.arm) * checks + bins
    shape = (e_count, arms, checks)

    def cum(
        w: np.ndarray | None, k: np.ndarray = key, shape: tuple[int, ...] = shape
    ) -> np.ndarray:
        return np.bincount(k, w, math.prod(shape)).reshape(shape).cumsum(-1)

    head = _head(ev.position)
    units = cum((ev.position == 0).astype(float))
    conversations = cum(None)
    ratio, capped, cap_check, caps, per_conversation = {}, {}, {}, {}, {}
    strata = np.zeros((6, e_count, arms, 1, checks))
    for metric in NAMES:
        v = ev.values[metric]
        present = ~np.isnan(v)
        n, total = cum(present.astype(float)), cum(np.where(present, v, 0.0))
        per_conversation[metric] = np.stack(
            [n, total, total if metric == PRIMARY else cum(np.where(present, v * v, 0.0))]
        )
        if metric not in CAPPED:
            inc = _increments(v, head)
            ratio[metric] = np.stack(
                [cum(w) if k not in (1, 2) else (total, n)[k - 1] for k, w in enumerate(inc)]
            )
            if metric == PRIMARY and segs > 1:
                skey = ((ev.exp * arms + ev.arm) * segs + ev.segment) * checks + bins
                strata = np.stack([cum(w, skey, (e_count, arms, segs, checks)) for w in inc])
            continue
        cap_check[metric], caps[metric] = _caps(ev, metric, n[:, 0], min_cap_sample)
        capped_v = np.minimum(v, np.nan_to_num(caps[metric], nan=np.inf)[ev.exp])
        capped[metric] = np.stack([cum(w) for w in _increments(capped_v, head)])
        # Uncapped sums only matter before the cap is fixed: the early conversations (a
        # prefix of each unit's, so the running totals hold).
        early = bins < int(cap_check[metric].max()) - 1
        ratio[metric] = np.stack(
            [cum(w, key[early]) for w in _increments(v[early], _head(ev.position[early]))]
        )
    return Sums(
        units,
        conversations,
        ratio,
        capped,
        cap_check,
        caps,
        per_conversation,
        strata,
        np.ones(arms),
    )


# ---------------------------------------------------------------------------------------
# The new rule: analyze() + decide() over all checks at once.


@dataclass
class Outcome:
    """Per experiment: how it ended (kind, 1-based check), the winner arm (-1: none), the
    check each arm was stopped at (0: never), and conversations/units per arm at the end
    (the winner's and the control's, averaged). `path`: the decision at every check (ENDED
    after the end), with `detail` the winner arm (promote) or a bitmask of stopped arms."""

    kind: np.ndarray
    check: np.ndarray
    winner: np.ndarray
    stopped_at: np.ndarray
    conversations: np.ndarray
    units: np.ndarray
    path: np.ndarray | None = None
    detail: np.ndarray | None = None


def _frozen(x: np.ndarray, stop_at: np.ndarray) -> np.ndarray:
    """x (E, A, J), (6, E, A, J) or (6, E, A, S, J) with each stopped arm's values frozen at
    its stop check (from then on its units are served control: not its own traffic)."""
    if (stop_at > x.shape[-1]).all():
        return x
    idx = np.minimum(np.arange(x.shape[-1]), stop_at[:, :, None] - 1)
    if x.ndim == 4:
        idx = idx[None]
    elif x.ndim == 5:
        idx = idx[None, :, :, None, :]
    return np.take_along_axis(x, np.broadcast_to(idx, x.shape), axis=-1)


def _metric_view(s: Sums, metric: str, stop_at: np.ndarray) -> np.ndarray:
    """(6, E, A, J) sums as the check sees them: capped from the cap's check on."""
    raw = _frozen(s.ratio[metric], stop_at)
    if metric not in s.capped:
        return raw
    checks = raw.shape[-1]
    on = (np.arange(1, checks + 1) >= s.cap_check[metric][:, None])[None, :, None, :]
    return np.where(on, _frozen(s.capped[metric], stop_at), raw)


def sums_at(s: Sums, e: int, check: int, stop_at: Sequence[int]) -> list[dict]:
    """What check `check` (1-based) of experiment e sees, per arm, given the checks its arms
    were stopped at (for tests): units, conversations, metric -> RatioSums fields, strata
    (primary metric per segment, fields x segments)."""
    sub = s.subset(np.array([e]))
    stops = np.asarray(stop_at)[None]
    col = check - 1
    views = {m: _metric_view(sub, m, stops)[:, 0, :, col] for m in NAMES}
    conversations = _frozen(sub.conversations, stops)[0, :, col]
    strata = _frozen(sub.strata, stops)[:, 0, :, :, col]
    return [
        {
            "units": sub.units[0, a, col],
            "conversations": conversations[a],
            "metrics": {m: views[m][:, a] for m in NAMES},
            "strata": strata[:, a],
        }
        for a in range(s.shape[1])
    ]


def _present(x: np.ndarray) -> np.ndarray:
    """analysis._get: the metric has data (units and conversations)."""
    return (x[0] > 0) & (x[2] > 0)


def _post_stratify(c: np.ndarray, a: np.ndarray, min_units: int):
    """stratify.post_stratify over (6, ..., S) arrays, in the same order of operations.
    Returns (used, mean_c, var_c, mean_t, var_t)."""
    segs = c.shape[-1]
    kept = np.minimum(c[0], a[0]) >= min_units
    pool_c, pool_a = np.zeros(c.shape[:-1]), np.zeros(a.shape[:-1])
    for k in range(segs):
        pool_c = pool_c + np.where(kept[..., k], 0.0, c[..., k])
        pool_a = pool_a + np.where(kept[..., k], 0.0, a[..., k])
    n_kept = kept.sum(-1)
    nonempty = (pool_c[0] > 0) | (pool_a[0] > 0)
    alone = nonempty & ((np.minimum(pool_c[0], pool_a[0]) >= min_units) | (n_kept == 0))
    merge = nonempty & ~alone
    largest = np.where(kept, c[0] + a[0], -1.0).argmax(-1)
    strata = []  # (present, control sums, arm sums) in the library's order
    for k in range(segs):
        into = merge & (largest == k)
        strata.append(
            (
                kept[..., k],
                np.where(into, c[..., k] + pool_c, c[..., k]),
                np.where(into, a[..., k] + pool_a, a[..., k]),
            )
        )
    strata.append((alone, pool_c, pool_a))
    total = np.zeros(kept.shape[:-1])
    for present, sc, sa in strata:
        total = total + np.where(present, sc[2] + sa[2], 0.0)
    used = (n_kept + alone >= 2) & (total > 0)
    mean_c, var_c, mean_t, var_t = (np.zeros(total.shape) for _ in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        for present, sc, sa in strata:
            w = (sc[2] + sa[2]) / total
            rc, vc = ratio_moments(*sc)
            ra, va = ratio_moments(*sa)
            mean_c = mean_c + np.where(present, w * rc, 0.0)
            var_c = var_c + np.where(present, w * w * vc, 0.0)
            mean_t = mean_t + np.where(present, w * ra, 0.0)
            var_t = var_t + np.where(present, w * w * va, 0.0)
    return used, mean_c, var_c, mean_t, var_t


def primary_interval(c, a, cs, as_, alpha, rule: Rule):
    """analysis.compare on the primary metric, from RatioSums fields (6, ...) of control and
    arm and, when stratifying, per segment (6, ..., S): (computable, low, high) of the
    always-valid interval on arm - control."""
    mc, vc = ratio_moments(*c)
    mt, vt = ratio_moments(*a)
    if rule.stratify and cs is not None:
        used, smc, svc, smt, svt = _post_stratify(cs, as_, rule.min_stratum_units)
        mc, vc = np.where(used, smc, mc), np.where(used, svc, vc)
        mt, vt = np.where(used, smt, mt), np.where(used, svt, vt)
    s = contrast_stats(mc, vc, c[0], mt, vt, a[0], alpha, target_n=rule.target_n)
    with np.errstate(invalid="ignore"):
        ok = (
            _present(c)
            & _present(a)
            & (c[0] >= 2)
            & (a[0] >= 2)
            & np.isfinite(s["var"])
            & (s["var"] > 0)
            & np.isfinite(mc)
            & np.isfinite(mt)
        )
    return ok, s["diff"] - s["half"], s["diff"] + s["half"]


def _primary(c, a, cs, as_, alpha, rule: Rule):
    """(improves, hurts, guaranteed gain)."""
    ok, low, high = primary_interval(c, a, cs, as_, alpha, rule)
    with np.errstate(invalid="ignore"):
        return ok & (low > 0), ok & (high < 0), np.where(ok, low, -np.inf)


def _guardrail(g: Guardrail, c, a, any_data, alpha, rule: Rule):
    """analysis.check_guardrail: (passes, harmed)."""
    mc, vc = ratio_moments(*c)
    mt, vt = ratio_moments(*a)
    sign = 1.0 if g.higher_is_better else -1.0
    s = contrast_stats(mc, vc, c[0], mt, vt, a[0], alpha, 1.0 - sign * g.tolerance, rule.target_n)
    var, gain, half = s["var"], sign * s["diff"], s["half1"]
    valid = math.isfinite(g.tolerance) and g.tolerance >= 0
    with np.errstate(invalid="ignore"):
        ok = (
            valid
            & _present(c)
            & _present(a)
            & (c[0] >= 2)
            & (a[0] >= 2)
            & np.isfinite(var)
            & (var >= 0)
            & np.isfinite(gain)
        )
        low = np.where(var == 0, gain, gain - half)
        high = np.where(var == 0, gain, gain + half)
        non_inferior = ok & (low > 0)
        harmed = ok & ~(low > 0) & (high < 0)
    return np.where(any_data, non_inferior, not g.required), any_data & harmed


def srm_flags(units: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """analysis.check_srm on units per slice, every arm: (E, J) detected."""
    shares = np.asarray(weights) / sum(weights)
    counts = np.ascontiguousarray(np.moveaxis(units, 1, -1))
    return srm_log_bayes_factor(counts, shares, SRM_PRIOR_CONCENTRATION) >= math.log(
        1.0 / SRM_ALPHA
    )


def _hours(checks: int) -> np.ndarray:
    return (np.arange(1, checks + 1) * (CHECK_MINUTES * 60.0)) / 3600.0


def _new_checks(s: Sums, stop_at: np.ndarray, srm: np.ndarray, rule: Rule):
    """decide(analyze(...)) at every check given which arms are stopped: (kind, detail)."""
    e_count, arms, checks = s.shape
    active = stop_at > checks  # (E, A); only checks after the last stop are used
    alpha = alpha_per_arm(rule.confidence, arms - 1)
    views = {
        m: _metric_view(s, m, stop_at) for m in {PRIMARY, *(g.metric for g in rule.guardrails)}
    }
    conversations = _frozen(s.conversations, stop_at)
    strata = _frozen(s.strata, stop_at) if s.strata.shape[3] > 1 else None
    enough_arm = (conversations >= rule.min_conversations) & (s.units >= rule.min_units)
    any_data = {g.metric: _present(views[g.metric]).any(1) for g in rule.guardrails}
    improves = np.zeros((e_count, arms, checks), bool)
    hurts, guaranteed = improves.copy(), np.full(improves.shape, -np.inf)
    for arm in range(1, arms):
        p = views[PRIMARY]
        cs = as_ = None
        if strata is not None:
            cs, as_ = np.moveaxis(strata[:, :, 0], 2, -1), np.moveaxis(strata[:, :, arm], 2, -1)
        imp, hurt, low = _primary(p[:, :, 0], p[:, :, arm], cs, as_, alpha, rule)
        passes = np.ones((e_count, checks), bool)
        harmed = np.zeros((e_count, checks), bool)
        for g in rule.guardrails:
            x = views[g.metric]
            ok, bad = _guardrail(g, x[:, :, 0], x[:, :, arm], any_data[g.metric], alpha, rule)
            passes &= ok
            harmed |= bad
        on = active[:, arm, None]
        improves[:, arm] = on & imp & passes
        guaranteed[:, arm] = np.where(improves[:, arm], low, -np.inf)
        hurts[:, arm] = on & (hurt | harmed) & enough_arm[:, arm] & enough_arm[:, 0]
    enough = np.where(active[:, :, None], enough_arm, True).all(1)
    hours = _hours(checks)
    promote = improves.any(1) & enough & (hours >= rule.min_runtime_hours)
    stop = hurts.any(1)
    kind = np.full((e_count, checks), CONTINUE, np.int8)
    kind[stop] = STOP
    kind[:, hours >= rule.max_runtime_hours] = INCONCLUSIVE
    kind[promote] = PROMOTE
    kind[srm] = PAUSE
    mask = (hurts * (1 << np.arange(arms))[None, :, None]).sum(1)
    detail = np.where(kind == PROMOTE, guaranteed.argmax(1), np.where(kind == STOP, mask, 0))
    return kind, detail


def _run_states(s: Sums, decide_all, path: bool) -> Outcome:
    """Walks every experiment's checks. `decide_all(rows, stop_at)` gives (kind, detail) at
    every check of those experiments with those arms stopped; a stop freezes the arm from
    the next check on and the rest is decided again. The experiment ends on promote, pause,
    inconclusive, or when no variant arm is left (transitions.apply_decision)."""
    e_count, arms, checks = s.shape
    stop_at = np.full((e_count, arms), checks + 1)
    start = np.ones(e_count, np.int64)
    kind_end = np.full(e_count, CONTINUE, np.int8)
    check_end = np.zeros(e_count, np.int64)
    winner = np.full(e_count, -1)
    out_path = np.full((e_count, checks), ENDED, np.int8) if path else None
    out_detail = np.zeros((e_count, checks), np.int64) if path else None
    pending = np.arange(e_count)
    cols = np.arange(1, checks + 1)
    while len(pending):
        kind, detail = decide_all(pending, stop_at[pending])
        event = (kind != CONTINUE) & (cols >= start[pending][:, None])
        j = event.argmax(1)  # the last check is always an event (maximum runtime)
        rows = np.arange(len(pending))
        k, d = kind[rows, j], detail[rows, j]
        if out_path is not None and out_detail is not None:
            span = (cols >= start[pending][:, None]) & (cols <= j[:, None] + 1)
            out_path[pending] = np.where(span, kind, out_path[pending])
            out_detail[pending] = np.where(span, detail, out_detail[pending])
        again = np.zeros(len(pending), bool)
        for i, e in enumerate(pending):
            if k[i] == STOP:
                for arm in range(1, arms):
                    if d[i] >> arm & 1:
                        stop_at[e, arm] = j[i] + 1
                if (stop_at[e, 1:] <= checks).all():
                    kind_end[e], check_end[e] = STOP, j[i] + 1
                else:
                    again[i], start[e] = True, j[i] + 2
            else:
                kind_end[e], check_end[e] = k[i], j[i] + 1
                winner[e] = d[i] if k[i] == PROMOTE else -1
        pending = pending[again]
    idx = np.arange(e_count)
    col = check_end - 1
    arm = np.where(winner >= 0, winner, 1)
    conv = _frozen(s.conversations, stop_at)
    return Outcome(
        kind_end,
        check_end,
        winner,
        np.where(stop_at <= checks, stop_at, 0),
        (conv[idx, 0, col] + conv[idx, arm, col]) / 2.0,
        (s.units[idx, 0, col] + s.units[idx, arm, col]) / 2.0,
        out_path,
        out_detail,
    )


def per_unit_rule(s: Sums, rule: Rule = Rule(), *, path: bool = False) -> Outcome:
    """The new rule (analyze + decide, as the service runs them) on every experiment."""
    srm = srm_flags(s.units, s.weights)  # units keep counting per slice after a stop

    def decide_all(rows: np.ndarray, stop_at: np.ndarray):
        return _new_checks(s.subset(rows), stop_at, srm[rows], rule)

    return _run_states(s, decide_all, path)


# ---------------------------------------------------------------------------------------
# The old rule (git 31edbe6: optimizer/stats/analysis.py and optimizer/experiments/
# decide.py), transcribed for comparison only. Per conversation: mean and sample variance
# of the conversations that reported the metric, variance of the difference
# var_t/n_t + var_c/n_c, the mixture tuned in conversations; Bonferroni over the active
# variants; SRM on conversations served per arm (after a stop: the remaining variants among
# themselves); a guardrail only vetoes promotion while its one-sided bound shows harm beyond
# tolerance * |control mean| at that check; only the primary metric stops an arm; a stopped
# arm's later traffic counts for the control; no caps.


def _old_moments(n, total, sq):
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        var = np.maximum(sq - total * mean, 0.0) / (n - 1.0)
    return mean, np.where(n >= 2, var, np.nan)


def _old_served(x: np.ndarray, stop_at: np.ndarray) -> np.ndarray:
    """Per served arm: a stopped arm's later conversations are the control's."""
    frozen = _frozen(x, stop_at)
    if frozen is x:
        return x
    frozen[..., 0, :] += (x - frozen)[..., 1:, :].sum(-2)
    return frozen


def _old_checks(s: Sums, stop_at: np.ndarray, rule: Rule):
    e_count, arms, checks = s.shape
    active = stop_at > checks
    alpha = ((1.0 - rule.confidence) / np.maximum(1, active[:, 1:].sum(1)))[:, None]
    sums = {m: _old_served(s.per_conversation[m], stop_at) for m in NAMES}
    conv = _old_served(s.conversations, stop_at)
    srm = np.zeros((e_count, checks), bool)
    for pattern in np.unique(active, axis=0):
        tested = np.ones(arms, bool) if pattern.all() else pattern & (np.arange(arms) > 0)
        rows = (active == pattern).all(1)
        if tested.sum() >= 2:
            srm[rows] = srm_flags(conv[rows][:, tested], s.weights[tested])
    enough_arm = conv >= rule.min_conversations
    enough = np.where(active[:, :, None], enough_arm, True).all(1)
    candidate = np.zeros((e_count, arms, checks), bool)
    hurts, low_bound = candidate.copy(), np.full(candidate.shape, -np.inf)
    for arm in range(1, arms):
        stats = {}
        for m in NAMES:
            n, total, sq = sums[m]
            mc, vc = _old_moments(n[:, 0], total[:, 0], sq[:, 0])
            mt, vt = _old_moments(n[:, arm], total[:, arm], sq[:, arm])
            with np.errstate(divide="ignore", invalid="ignore"):
                diff, var = mt - mc, vt / n[:, arm] + vc / n[:, 0]
                eta = mixture_eta(n[:, 0], n[:, arm], alpha, rule.target_n)
                ok = (
                    (n[:, 0] >= 2)
                    & (n[:, arm] >= 2)
                    & np.isfinite(var)
                    & (var > 0)
                    & np.isfinite(mc)
                    & np.isfinite(mt)
                )
            stats[m] = (diff, var, eta, ok, mc)
        diff, var, eta, ok, _ = stats[PRIMARY]
        with np.errstate(divide="ignore", invalid="ignore"):
            half = two_sided_halfwidth(var, eta, alpha)
        harmed = np.zeros((e_count, checks), bool)
        for g in rule.guardrails:
            gd, gv, ge, gok, gmc = stats[g.metric]
            with np.errstate(divide="ignore", invalid="ignore"):
                h = one_sided_halfwidth(gv, ge, alpha)
                limit = g.tolerance * np.abs(gmc)
                harmed |= gok & ((gd + h < -limit) if g.higher_is_better else (gd - h > limit))
        on = active[:, arm, None]
        with np.errstate(invalid="ignore"):
            candidate[:, arm] = on & ok & (diff - half > 0) & ~harmed
            hurts[:, arm] = on & ok & (diff + half < 0) & enough_arm[:, arm] & enough_arm[:, 0]
        low_bound[:, arm] = np.where(candidate[:, arm], diff - half, -np.inf)
    hours = _hours(checks)
    kind = np.full((e_count, checks), CONTINUE, np.int8)
    kind[hurts.any(1)] = STOP
    kind[:, hours >= rule.max_runtime_hours] = INCONCLUSIVE
    kind[candidate.any(1) & enough & (hours >= rule.min_runtime_hours)] = PROMOTE
    kind[srm] = PAUSE
    mask = (hurts * (1 << np.arange(arms))[None, :, None]).sum(1)
    detail = np.where(kind == PROMOTE, low_bound.argmax(1), np.where(kind == STOP, mask, 0))
    return kind, detail


def per_conversation_rule(s: Sums, rule: Rule = Rule(guardrails=OLD_GUARDRAILS)) -> Outcome:
    """The old rule on every experiment (for comparison only; nothing tests it against the
    old code, which is gone from the tree)."""

    def decide_all(rows: np.ndarray, stop_at: np.ndarray):
        return _old_checks(s.subset(rows), stop_at, rule)

    return _run_states(s, decide_all, False)


# ---------------------------------------------------------------------------------------
# Scenarios, the runner and the table.

OLD = "old: per conversation"
NEW = "new: per unit"
NO_GUARDRAILS = "diagnostic: new, no guardrails"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    world: World
    rules: tuple[tuple[str, Rule | None], ...] = ((OLD, None), (NEW, Rule()))
    size: float = 1.0  # experiments, as a multiple of --experiments
    aa: bool = False
    fixed_horizon: bool = False


SEGMENTED = World(base_rates=(0.10, 0.30, 0.60), segment_shares=(1 / 3, 1 / 3, 1 / 3), lift=0.10)
SCENARIOS = (
    Scenario("1a", "A/A, users average 3 conversations", World(), size=2.0, aa=True),
    Scenario(
        "1b",
        "A/A, users average 10 conversations",
        World(conversations_per_user=10.0),
        size=2.0,
        aa=True,
    ),
    Scenario(
        "2a",
        "+10% success, +25% cost (lognormal sigma 1)",
        World(lift=0.10, cost_factor=1.25, cost_sigma=1.0),
    ),
    Scenario(
        "2b",
        "+10% success, +25% cost (lognormal sigma 2)",
        World(lift=0.10, cost_factor=1.25, cost_sigma=2.0),
    ),
    Scenario(
        "3",
        "+10% success, guardrails unchanged",
        World(lift=0.10),
        rules=((OLD, None), (NEW, Rule()), (NO_GUARDRAILS, Rule(guardrails=()))),
        fixed_horizon=True,
    ),
    Scenario(
        "4",
        "+10% success, segments 10%/30%/60%",
        SEGMENTED,
        rules=(
            (OLD, None),
            ("new, post-stratified", Rule()),
            ("new, not stratified", Rule(stratify=False)),
            (NO_GUARDRAILS, Rule(guardrails=())),
        ),
        fixed_horizon=True,
    ),
    Scenario("5", "A/A, 3 arms (control + 2 variants)", World(arms=3), size=2.0, aa=True),
)


def _summary(o: Outcome) -> dict[str, np.ndarray]:
    first_stop = np.where(o.stopped_at > 0, o.stopped_at, np.iinfo(np.int64).max).min(1)
    return {
        "kind": o.kind,
        "check": o.check,
        "conversations": o.conversations,
        "units": o.units,
        "stopped": (o.stopped_at > 0).any(1),
        "first_stop": np.where(first_stop < np.iinfo(np.int64).max, first_stop, 0),
    }


def _horizon_stats(s: Sums) -> dict[str, np.ndarray]:
    """Per check, summed over experiments (no arm stopped): what the fixed-horizon size
    needs (conversations and units per arm, sum of m^2 and m over units) and how often a
    single look at that check rejects (two-sided alpha 0.10, the variant ahead)."""
    p = s.ratio[PRIMARY]
    mc, vc = ratio_moments(*p[:, :, 0])
    mt, vt = ratio_moments(*p[:, :, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mt - mc) / np.sqrt(vc + vt)
    return {
        "conversations": s.conversations[:, :2].mean(1).sum(0),
        "units": s.units[:, :2].mean(1).sum(0),
        "sum_mm": p[4, :, :2].sum((0, 1)),
        "sum_m": p[2, :, :2].sum((0, 1)),
        "rejects": (np.nan_to_num(z) > norm.ppf(0.95)).sum(0).astype(float),
    }


def run_chunk(task: tuple[Scenario, int, int, int]) -> dict:
    scenario, chunk, experiments, seed = task
    rng = np.random.default_rng([seed, ord(scenario.key[0]), ord(scenario.key[-1]), chunk])
    sums = accumulate(simulate(rng, scenario.world, experiments))
    day = min(sums.shape[2], round(24 * 60 / CHECK_MINUTES)) - 1
    out: dict = {
        "rules": {},
        "traffic": np.array(
            [
                sums.units[:, :, day].mean(1).sum(),
                sums.conversations[:, :, day].mean(1).sum(),
                sums.units[:, :, -1].mean(1).sum(),
                sums.conversations[:, :, -1].mean(1).sum(),
            ]
        ),
    }
    for label, rule in scenario.rules:
        outcome = per_conversation_rule(sums) if rule is None else per_unit_rule(sums, rule)
        out["rules"][label] = _summary(outcome)
    if scenario.fixed_horizon:
        out["horizon"] = _horizon_stats(sums)
    return out


def srm_only(task: tuple[World, int, int, int]) -> int:
    """Experiments (of `experiments`) whose SRM test fires within 14 days, from unit counts
    alone: units appear (first conversation in the experiment) as in `simulate`."""
    world, chunk, experiments, seed = task
    rng = np.random.default_rng([seed, 99, world.arms, int(world.conversations_per_user), chunk])
    gap, mu = RETURN_GAP_HOURS * 60 / CHECK_MINUTES, world.conversations_per_user
    rate = world.per_check / mu
    b = np.arange(world.checks)
    lam = rate + rate * (mu - 1.0) * gap * (np.exp(-b / gap) - np.exp(-(b + 1) / gap))
    counts = rng.multinomial(
        rng.poisson(lam, (experiments, world.checks)), np.full(world.arms, 1.0 / world.arms)
    ).cumsum(1)
    return int(srm_flags(np.moveaxis(counts, -1, 1), np.ones(world.arms)).any(1).sum())


def fixed_horizon(
    world: World,
    horizon: dict[str, np.ndarray],
    experiments: int,
    power: float = 0.80,
    alpha: float = 0.10,
) -> dict[str, float]:
    """Conversations per arm a single two-sided z-test at `alpha` needs for `power`:
    n = (z_{1-alpha/2} + z_power)^2 (s_c^2 + s_t^2) / (p_t - p_c)^2 with s^2 = p (1 - p) DEFF,
    DEFF = 1 + rho (sum m^2 / sum m - 1) the design effect of units with m conversations
    each (rho: the intra-unit correlation of success, segments included; sum m^2 / sum m
    from the simulated units at that check); the first check where the arms have n."""
    shares, base = np.asarray(world.segment_shares), np.asarray(world.base_rates)
    variance, means = [], []
    for lift in world.per_arm(world.lift, 0.0)[:2]:
        rates = base * (1.0 + lift)
        mean = float(shares @ rates)
        between = (
            float(shares @ (rates * (1 - rates))) * world.icc + float(shares @ rates**2) - mean**2
        )
        means.append(mean)
        variance.append((mean * (1 - mean), between / (mean * (1 - mean))))
    ratio = horizon["sum_mm"] / horizon["sum_m"]
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    need = (
        z * z * sum(v * (1 + rho * (ratio - 1)) for v, rho in variance) / (means[1] - means[0]) ** 2
    )
    have = horizon["conversations"] / experiments
    j = int(np.argmax(have >= need))
    return {
        "n": float(need[j]),
        "units": float(horizon["units"][j] / experiments),
        "hours": (j + 1) * CHECK_MINUTES / 60,
        "deff": float(1 + variance[0][1] * (ratio[j] - 1)),
        "power": float(horizon["rejects"][j] / experiments),
        "rho": variance[0][1],
    }


def _median(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """Median and its bootstrap standard error."""
    if len(values) == 0:
        return None
    boot = np.median(rng.choice(values, (200, len(values))), axis=1)
    return float(np.median(values)), float(boot.std())


def _share(hits: np.ndarray) -> str:
    n, k = len(hits), int(hits.sum())
    p = k / n
    return f"{100 * p:5.1f}% ±{100 * math.sqrt(p * (1 - p) / n):.1f} ({k:>4})"


def _med(m: tuple[float, float] | None, digits: int = 0) -> str:
    return "-" if m is None else f"{m[0]:,.{digits}f} ±{m[1]:,.{digits}f}"


def scenario_rows(scenario: Scenario, result: dict, experiments: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for label, r in result["rules"].items():
        promoted = r["kind"] == PROMOTE
        stop = r["first_stop"][r["stopped"]] * CHECK_MINUTES / 60
        rows.append(
            {
                "scenario": scenario,
                "rule": label,
                "n": len(r["kind"]),
                "promoted": promoted,
                "stopped": r["stopped"],
                "srm": r["kind"] == PAUSE,
                "stop_hours": _median(stop, rng),
                "units": _median(r["units"][promoted], rng),
                "conversations": _median(r["conversations"][promoted], rng),
            }
        )
    rows[0]["traffic"] = result["traffic"]
    if "horizon" in result:
        rows[0]["fixed"] = fixed_horizon(scenario.world, result["horizon"], experiments)
    return rows


HEAD = (
    f"{'rule':<33} {'exps':>5} {'promoted (n)':>18} {'arm stopped (n)':>18} "
    f"{'SRM paused (n)':>18} {'h to stop':>11} {'units/arm at prom.':>18} "
    f"{'convs/arm at prom.':>18}"
)


def table(rows: list[dict]) -> list[str]:
    lines = [HEAD, "-" * len(HEAD)]
    for r in rows:
        s = r["scenario"]
        if "traffic" in r:
            u1, c1, u14, c14 = r["traffic"]
            lines.append(
                f"{s.key} {s.title} (per arm: {u1:,.0f} units and {c1:,.0f} "
                f"conversations after 24 h, {u14:,.0f} and {c14:,.0f} after 14 days)"
            )
        lines.append(
            f"  {r['rule']:<31} {r['n']:>5} {_share(r['promoted']):>18} "
            f"{_share(r['stopped']):>18} {_share(r['srm']):>18} "
            f"{_med(r['stop_hours'], 1):>11} {_med(r['units']):>18} "
            f"{_med(r['conversations']):>18}"
        )
        if r is rows[-1] or rows[rows.index(r) + 1]["scenario"] is not s:
            fixed = next((x["fixed"] for x in rows if x["scenario"] is s and "fixed" in x), None)
            if fixed:
                lines.append(
                    f"  fixed horizon (two-sided alpha 0.10, 80% power): {fixed['n']:,.0f} "
                    f"conversations/arm = {fixed['units']:,.0f} units/arm, reached after "
                    f"{fixed['hours']:.1f} h (rho {fixed['rho']:.3f}, design effect "
                    f"{fixed['deff']:.2f}); a single look there rejects in "
                    f"{100 * fixed['power']:.1f}% of experiments"
                )
    return lines


def aims(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        s, rule = r["scenario"], r["rule"]
        if not rule.startswith("new"):
            continue
        p = r["promoted"].mean()
        if s.aa:
            out.append(_aim(f"{s.key} {rule}: false promotions", p, "<=", 0.05))
            out.append(_aim(f"{s.key} {rule}: SRM false pauses", r["srm"].mean(), "<=", 0.001))
        elif s.key.startswith("2"):
            out.append(_aim(f"{s.key} {rule}: promoted", p, "<=", 0.01))
        elif s.key == "3":
            out.append(_aim(f"{s.key} {rule}: promoted within 14 days", p, ">=", 0.95))
        elif s.key == "4" and "not stratified" not in rule and r["conversations"]:
            fixed = next(x["fixed"]["n"] for x in rows if x["scenario"] is s and "fixed" in x)
            ratio = r["conversations"][0] / fixed
            out.append(
                f"{s.key} {rule}: median conversations at promotion / fixed-horizon n "
                f"= {ratio:.2f} (aim <= 0.95): {'met' if ratio <= 0.95 else 'MISSED'}"
            )
    return out


def _aim(name: str, value: float, op: str, limit: float) -> str:
    ok = value <= limit if op == "<=" else value >= limit
    return f"{name} {100 * value:.2f}% (aim {op} {100 * limit:g}%): {'met' if ok else 'MISSED'}"


def _guardrails_text(guardrails: Sequence[Guardrail]) -> str:
    return ", ".join(
        f"{g.metric} {('-' if g.higher_is_better else '+') * (g.tolerance > 0)}"
        f"{100 * g.tolerance:g}%"
        for g in guardrails
    )


def header() -> list[str]:
    rule = Rule()
    return [
        f"Each experiment: checked every {CHECK_MINUTES} min for 14 days ({CHECKS} checks); "
        f"{PER_CHECK} conversations per check ({PER_CHECK * 96:,}/day), units split evenly "
        "over the arms; users have geometric conversation counts and return after "
        f"exponential gaps (mean {RETURN_GAP_HOURS:g} h), stationary from the start; success "
        f"probability per user ~ Beta (ICC {ICC}) around the base rate (30% unless stated); "
        f"rating on {RATING_SHARE:.0%} of conversations; cost lognormal (median "
        f"${COST_MEDIAN}, sigma 1 unless stated); latency lognormal (median "
        f"{LATENCY_MEDIAN / 1000:g} s, sigma {LATENCY_SIGMA}).",
        f"Settings: confidence {rule.confidence}, {rule.min_conversations} conversations and "
        f"{rule.min_units} units per arm, {rule.min_runtime_hours:g} h to "
        f"{rule.max_runtime_hours:g} h; guardrails {_guardrails_text(rule.guardrails)} (old "
        f"rule: {_guardrails_text(OLD_GUARDRAILS)}).",
        "Shares are of experiments (± standard error, count); medians ± bootstrap standard "
        "error; 'h to stop': median hours to the first arm stop; per-arm figures at "
        "promotion average the control and the winner (each arm's own conversations).",
    ]


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    out = []
    for s in SCENARIOS:
        if args.only and s.key not in args.only.split(","):
            continue
        extra = [(f"new, target_n={x:g}", Rule(target_n=x)) for x in args.target_n]
        if s.key == "4":
            extra += [
                (f"new, stratum units {k}", Rule(min_stratum_units=k))
                for k in args.min_stratum_units
            ]
        out.append(dataclasses.replace(s, rules=s.rules + tuple(extra)))
    return out


def _merge(s: Scenario, mine: list[dict], experiments: int) -> dict:
    merged: dict = {
        "rules": {
            label: {
                k: np.concatenate([m["rules"][label][k] for m in mine])
                for k in mine[0]["rules"][label]
            }
            for label, _ in s.rules
        },
        "traffic": sum(m["traffic"] for m in mine) / experiments,
    }
    if s.fixed_horizon:
        merged["horizon"] = {k: sum(m["horizon"][k] for m in mine) for k in mine[0]["horizon"]}
    return merged


def run(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """(table rows, lines about the unit-count-only SRM runs)."""
    scenarios, chunk = _scenarios(args), 25
    tasks, sizes = [], {}
    for s in scenarios:
        sizes[s.key] = n = max(1, round(args.experiments * s.size))
        tasks += [(s, i, min(chunk, n - i * chunk), args.seed) for i in range(math.ceil(n / chunk))]
    srm_worlds = [World(), World(conversations_per_user=10.0), World(arms=3)]
    per_world = math.ceil(args.srm_experiments / 1000)
    srm_tasks = [
        (w, i, min(1000, args.srm_experiments - i * 1000), args.seed)
        for w in srm_worlds
        for i in range(per_world)
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_chunk, tasks))
        srm_counts = list(pool.map(srm_only, srm_tasks))
    rows = []
    for s in scenarios:
        mine = [r for t, r in zip(tasks, results, strict=True) if t[0] is s]
        rows += scenario_rows(s, _merge(s, mine, sizes[s.key]), sizes[s.key])
    srm = []
    for k, w in enumerate(srm_worlds if args.srm_experiments else []):
        hits = sum(srm_counts[k * per_world : (k + 1) * per_world])
        srm.append(
            f"  {w.arms} arms, {w.conversations_per_user:g} conversations per user: "
            f"{hits} of {args.srm_experiments:,} = "
            f"{100 * hits / args.srm_experiments:.3f}%"
        )
    return rows, srm


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiments",
        type=int,
        default=1000,
        help="experiments per A/B scenario (A/A scenarios get twice as many)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--srm-experiments",
        type=int,
        default=20_000,
        help="A/A experiments per unit-count-only SRM run (0: none)",
    )
    parser.add_argument("--only", default="", help="scenario keys to run, e.g. 1a,4")
    parser.add_argument(
        "--target-n",
        type=float,
        action="append",
        default=[],
        help="also show the new rule with this CS_TARGET_N (a candidate)",
    )
    parser.add_argument(
        "--min-stratum-units",
        type=int,
        action="append",
        default=[],
        help="also show scenario 4 with this MIN_STRATUM_UNITS (a candidate)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows, srm = run(args)
    print("\n".join([*header(), *table(rows)]))
    if srm:
        print(
            "\nSRM test on unit counts alone (the new rule's SRM input), A/A experiments "
            "paused within 14 days (aim <= 0.1%):"
        )
        print("\n".join(srm))
    print("\nAims (new rule):")
    print("\n".join("  " + line for line in aims(rows)))
    print(f"\n({time.perf_counter() - started:.0f} s with {args.jobs} processes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
