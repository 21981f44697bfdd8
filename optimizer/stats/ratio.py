"""Per-conversation means when units (users) are randomised: ratios of unit sums.

A user with many conversations contributes many correlated outcomes, so conversations are
not independent observations; units are. The per-conversation mean R = sum(y) / sum(m)
(y_i: the unit's total of the metric, m_i: its conversations that reported it) is a ratio
of two unit means, and its variance follows from the delta method (Deng, Knoblich & Lu
2018, "Applying the delta method in metric analytics"):

    Var(R) ~ sum_i (y_i - R m_i)^2 / (N (N - 1) mbar^2),   mbar = sum(m) / N,

where sum_i (y_i - R m_i)^2 = sum(yy) - 2 R sum(ym) + R^2 sum(mm). With one conversation
per unit this is the usual p (1 - p) / (N - 1). All functions broadcast over numpy arrays.
"""

from __future__ import annotations

import numpy as np

from optimizer.stats.types import RatioSums


def ratio_moments(units, sum_y, sum_m, sum_yy, sum_mm, sum_ym) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, variance of the estimate); NaN where fewer than two units reported."""
    n = np.asarray(units, dtype=float)
    sy, sm = np.asarray(sum_y, dtype=float), np.asarray(sum_m, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = sy / sm
        # Rounding can leave the residual sum of squares a hair below zero for constant data.
        resid = np.maximum(np.asarray(sum_yy, dtype=float) - 2.0 * r * np.asarray(sum_ym)
                           + r * r * np.asarray(sum_mm, dtype=float), 0.0)
        var = resid * n / ((n - 1.0) * sm * sm)
    ok = (n >= 2) & (sm > 0)
    return np.where(sm > 0, r, np.nan), np.where(ok, var, np.nan)


def moments_of(sums: RatioSums) -> tuple[float, float]:
    r, v = ratio_moments(sums.units, sums.sum_y, sums.sum_m, sums.sum_yy, sums.sum_mm,
                         sums.sum_ym)
    return float(r), float(v)


def per_unit_mean(sums: RatioSums) -> float | None:
    """The metric's total per unit (for success: successes per user), for reading."""
    return sums.sum_y / sums.units if sums.units else None
