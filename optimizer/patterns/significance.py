"""Fixed-horizon tests for comparing one group of conversations with the rest, and the
Benjamini-Hochberg adjustment across all tests of a run. Pure: numpy and scipy only.

Pattern analysis looks at a snapshot (the last 24 hours, the last 7 days) and reports; it
decides nothing irreversible, so the classical tests are the right tool here, unlike the
always-valid inference that experiment monitoring needs for its repeated looks. What keeps
the many comparisons of a run honest is the false discovery rate control below.

Degenerate input (too few observations, no variation) gives a result with an error code
and p_value None; it never raises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from scipy.stats import norm, t

CI_LEVEL = 0.95
MIN_OBSERVATIONS = 2


@dataclass(frozen=True)
class Significance:
    """Group (inside) against the rest (outside): estimates, their difference inside minus
    outside, a CI_LEVEL confidence interval for it, the test statistic and its two-sided p.
    error: None, too_few_observations, no_variation."""

    test: str                      # "two_proportion_z" or "welch_t"
    n_inside: int
    n_outside: int
    inside: float | None           # rate or mean
    outside: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    statistic: float | None
    p_value: float | None
    df: float | None = None        # Welch's degrees of freedom
    error: str | None = None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def two_proportion_z(successes_in: float, n_in: int, successes_out: float,
                     n_out: int) -> Significance:
    """Pooled two-proportion z test (equivalent to the 2x2 chi-square without continuity
    correction); the interval is the unpooled Wald interval of the difference."""
    name = "two_proportion_z"
    p_in = successes_in / n_in if n_in else None
    p_out = successes_out / n_out if n_out else None
    if n_in < MIN_OBSERVATIONS or n_out < MIN_OBSERVATIONS or p_in is None or p_out is None:
        return Significance(name, n_in, n_out, p_in, p_out, None, None, None, None, None,
                              error="too_few_observations")
    pooled = (successes_in + successes_out) / (n_in + n_out)
    se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_in + 1.0 / n_out))
    diff = p_in - p_out
    if se0 == 0.0:
        return Significance(name, n_in, n_out, p_in, p_out, diff, None, None, None, None,
                              error="no_variation")
    z = diff / se0
    se = math.sqrt(p_in * (1.0 - p_in) / n_in + p_out * (1.0 - p_out) / n_out)
    half = float(ndtri(0.5 + CI_LEVEL / 2.0)) * se
    p = 2.0 * float(norm.sf(abs(z)))
    return Significance(name, n_in, n_out, p_in, p_out, diff, diff - half, diff + half,
                          _finite(z), p)


def _moments(n: int, total: float, total_sq: float) -> tuple[float, float]:
    mean = total / n
    # Clipped: rounding can make the sum-of-squares form a hair negative for constant data.
    var = max(0.0, (total_sq - total * total / n) / (n - 1))
    return mean, var


def welch_t(n_in: int, total_in: float, sq_in: float, n_out: int, total_out: float,
            sq_out: float) -> Significance:
    """Welch's unequal-variance t test from sufficient statistics (n, sum, sum of squares),
    with the Welch-Satterthwaite degrees of freedom and the matching t interval."""
    name = "welch_t"
    if n_in < MIN_OBSERVATIONS or n_out < MIN_OBSERVATIONS:
        return Significance(name, n_in, n_out, total_in / n_in if n_in else None,
                              total_out / n_out if n_out else None, None, None, None, None,
                              None, error="too_few_observations")
    mean_in, var_in = _moments(n_in, total_in, sq_in)
    mean_out, var_out = _moments(n_out, total_out, sq_out)
    diff = mean_in - mean_out
    a, b = var_in / n_in, var_out / n_out
    se = math.sqrt(a + b)
    if se == 0.0:
        return Significance(name, n_in, n_out, mean_in, mean_out, diff, None, None, None, None,
                              error="no_variation")
    df = (a + b) ** 2 / (a * a / (n_in - 1) + b * b / (n_out - 1))
    statistic = diff / se
    half = float(t.ppf(0.5 + CI_LEVEL / 2.0, df)) * se
    p = 2.0 * float(t.sf(abs(statistic), df))
    return Significance(name, n_in, n_out, mean_in, mean_out, diff, diff - half, diff + half,
                          _finite(statistic), p, df=_finite(df))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """BH-adjusted p-values (q-values): q_(i) = min over j >= i of m p_(j) / j, at most 1.
    A test is significant at false discovery rate alpha when its q-value is <= alpha."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    # The running minimum from the largest p down makes the q-values monotone in p.
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(adjusted, 1.0)
    return q
