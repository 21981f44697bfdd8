"""A/A and A/B simulation: error rates and speed of the promotion rule under peeking.

Each simulated experiment has a control and one variant with a binary metric (base rate
30%). Every 15 minutes 50 conversations arrive, each assigned to an arm with probability
1/2 (about 25 per arm per check), for up to 14 days (1344 checks). Three rules are compared:

- naive: the seed's rule, a fixed-horizon two-proportion z-test with p < 0.10 ("confidence
  > 90%"), variant ahead and more than 100 conversations per arm, applied at every check;
  its SRM column is a chi-square test at p < 0.001 repeated at every check;
- single look: the same z-test once, at 14 days;
- ours: optimizer.stats.analyze() + optimizer.experiments.decide.decide() at every check
  (confidence 0.90, minimum 100 conversations per arm, minimum runtime 24 h, maximum 336 h).

Ours runs through `vector_decisions`, a numpy transcription of analyze()+decide() for this
two-arm, one-metric setting built on the same functions (difference_stats, the SRM Bayes
factor); tests/unit/test_decide.py checks that it gives exactly the decisions analyze() and
decide() give, check by check.

Usage: python -m benchmarks.aa_ab_simulation [--experiments 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2, norm

from optimizer.stats import CS_TARGET_N, SRM_ALPHA, alpha_per_arm, difference_stats
from optimizer.stats.srm import SRM_PRIOR_CONCENTRATION, srm_log_bayes_factor

CHECK_MINUTES = 15
PER_CHECK = 50  # conversations per check over both arms
BASE_RATE = 0.30
CHECKS = 14 * 24 * 4
LIFTS = (0.0, 0.05, 0.10, 0.20)

# decision codes of vector_decisions
CONTINUE, PROMOTE, STOP, PAUSE, INCONCLUSIVE = 0, 1, 2, 3, 4
KINDS = {CONTINUE: "continue", PROMOTE: "promote", STOP: "stop_arms", PAUSE: "pause_srm",
         INCONCLUSIVE: "inconclusive"}


@dataclass(frozen=True)
class Paths:
    """Cumulative counts after each check, shape (experiments, checks)."""

    n_c: np.ndarray
    s_c: np.ndarray
    n_t: np.ndarray
    s_t: np.ndarray


def simulate(rng: np.random.Generator, experiments: int, checks: int, lift: float,
             base: float = BASE_RATE, per_check: int = PER_CHECK) -> Paths:
    n_t = rng.binomial(per_check, 0.5, size=(experiments, checks))
    n_c = per_check - n_t
    s_c = rng.binomial(n_c, base)
    s_t = rng.binomial(n_t, base * (1.0 + lift))
    return Paths(*(np.cumsum(a, axis=1).astype(float) for a in (n_c, s_c, n_t, s_t)))


def vector_decisions(p: Paths, *, confidence: float = 0.90, min_conversations: int = 100,
                     min_runtime_hours: float = 24.0, max_runtime_hours: float = 336.0,
                     check_minutes: float = CHECK_MINUTES,
                     target_n: float = CS_TARGET_N) -> np.ndarray:
    """decide(analyze(...)) at every check, as codes; conversations == success.n (every
    conversation reports success), no guardrail data (so no harm), both arms active."""
    alpha = alpha_per_arm(confidence, 1)
    s = difference_stats(p.n_c, p.s_c, p.s_c, p.n_t, p.s_t, p.s_t, alpha, target_n)
    with np.errstate(invalid="ignore"):
        ok = (p.n_c >= 2) & (p.n_t >= 2) & np.isfinite(s["var"]) & (s["var"] > 0)
        low, high = s["diff"] - s["half"], s["diff"] + s["half"]
        improves = ok & (low > 0)
        hurts = ok & (high < 0)
    counts = np.stack([p.n_c, p.n_t], axis=-1)
    srm = srm_log_bayes_factor(counts, np.array([0.5, 0.5]),
                               SRM_PRIOR_CONCENTRATION) >= math.log(1.0 / SRM_ALPHA)
    hours = np.arange(1, p.n_c.shape[1] + 1) * check_minutes / 60.0
    enough = (p.n_c >= min_conversations) & (p.n_t >= min_conversations)
    out = np.full(p.n_c.shape, CONTINUE, dtype=np.int8)
    out[hurts & enough] = STOP
    out[np.broadcast_to(hours >= max_runtime_hours, out.shape)] = INCONCLUSIVE
    out[improves & enough & (hours >= min_runtime_hours)] = PROMOTE
    out[srm] = PAUSE
    return out


def first_event(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code, index) of the first non-continue decision per experiment (CONTINUE, last
    index when none)."""
    hit = codes != CONTINUE
    idx = np.where(hit.any(axis=1), hit.argmax(axis=1), codes.shape[1] - 1)
    return codes[np.arange(len(codes)), idx], idx


def z_test(p: Paths) -> np.ndarray:
    """Two-sided pooled two-proportion z-test p-value (the fixed-horizon test)."""
    pooled = (p.s_c + p.s_t) / (p.n_c + p.n_t)
    se = np.sqrt(pooled * (1 - pooled) * (1 / p.n_c + 1 / p.n_t))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p.s_t / p.n_t - p.s_c / p.n_c) / se
    return np.where(se > 0, 2 * norm.sf(np.abs(z)), 1.0)


def fixed_horizon_n(lift: float, base: float = BASE_RATE, alpha: float = 0.10,
                    power: float = 0.80) -> int:
    p1, p2 = base, base * (1 + lift)
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return math.ceil(z * z * (p1 * (1 - p1) + p2 * (1 - p2)) / (p2 - p1) ** 2)


def run(experiments: int, seed: int, checks: int = CHECKS) -> list[dict]:
    rows = []
    for k, lift in enumerate(LIFTS):
        rng = np.random.default_rng([seed, k])
        p = simulate(rng, experiments, checks, lift)
        per_arm = (p.n_c + p.n_t) / 2
        better = p.s_t / p.n_t > p.s_c / p.n_c
        pval = z_test(p)
        naive = (pval < 0.10) & better & (p.n_c > 100) & (p.n_t > 100)
        naive_any = naive.any(axis=1)
        naive_at = per_arm[np.arange(experiments), naive.argmax(axis=1)][naive_any]
        chi = ((p.n_t - p.n_c) ** 2 / (p.n_c + p.n_t))  # chi-square, 1 df, 50/50
        naive_srm = (chi2.sf(chi, 1) < 0.001).any(axis=1).mean()
        single = naive[:, -1]
        code, idx = first_event(vector_decisions(p))
        promoted = code == PROMOTE
        ours_at = per_arm[np.arange(experiments), idx][promoted]
        rows.append({
            "lift": lift, "fixed_n": fixed_horizon_n(lift) if lift else None,
            "naive_rate": naive_any.mean(), "naive_median": _median(naive_at),
            "naive_srm": naive_srm,
            "single_rate": single.mean(), "single_median": _median(per_arm[single, -1]),
            "ours_rate": promoted.mean(), "ours_median": _median(ours_at),
            "ours_srm": (code == PAUSE).mean(), "ours_stopped": (code == STOP).mean(),
            "ours_p90": float(np.percentile(ours_at, 90)) if len(ours_at) else None,
        })
    return rows


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _fmt_n(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def table(rows: list[dict], experiments: int) -> str:
    head = (f"{'lift':>5} {'fixed-n':>8} | {'naive: promoted':>15} {'median n':>9} | "
            f"{'single look':>11} {'median n':>9} | {'ours: promoted':>14} {'median n':>9} "
            f"{'p90 n':>7} {'stopped':>7} | {'SRM naive':>9} {'SRM ours':>8}")
    lines = [f"{experiments} experiments per row; binary metric, base {BASE_RATE:.0%}, "
             f"{PER_CHECK} conversations per {CHECK_MINUTES}-min check (~25 per arm), "
             f"{CHECKS} checks (14 days). n = conversations per arm at promotion; fixed-n = "
             "fixed-horizon size per arm for 80% power, two-sided alpha 0.10.", head,
             "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['lift']:>+5.0%} {_fmt_n(r['fixed_n']):>8} | {r['naive_rate']:>15.1%} "
            f"{_fmt_n(r['naive_median']):>9} | {r['single_rate']:>11.1%} "
            f"{_fmt_n(r['single_median']):>9} | {r['ours_rate']:>14.1%} "
            f"{_fmt_n(r['ours_median']):>9} {_fmt_n(r['ours_p90']):>7} "
            f"{r['ours_stopped']:>7.1%} | {r['naive_srm']:>9.2%} {r['ours_srm']:>8.2%}")
    lines.append("lift +0% is A/A: 'promoted' there is the false-promotion rate "
                 "(aim: ours <= 5%); SRM columns are false alarms (aim: ours <= 0.5%).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(args.experiments, args.seed)
    print(table(rows, args.experiments))
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
