"""Per-conversation means when units (users) are randomised: ratios of unit sums.

A user with many conversations contributes many correlated outcomes, so conversations are
not independent observations; units are. The per-conversation mean R = sum(y) / sum(m)
(y_i: the unit's total of the metric, m_i: its conversations that reported it) is a ratio
of two unit means, and its variance follows from the delta method (Deng, Knoblich & Lu
2018, "Applying the delta method in metric analytics"):

    Var(R) ~ sum_i (y_i - R m_i)^2 / (N (N - 1) mbar^2),   mbar = sum(m) / N,

where sum_i (y_i - R m_i)^2 = sum(yy) - 2 R sum(ym) + R^2 sum(mm). With one conversation
per unit this is the usual p (1 - p) / (N - 1). RatioSums holds one arm's sums and owns
its moments; ratio_moments() is the vectorised core, so the benchmark can run thousands of
simulated experiments through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def ratio_moments(
    units: ArrayLike,
    sum_y: ArrayLike,
    sum_m: ArrayLike,
    sum_yy: ArrayLike,
    sum_mm: ArrayLike,
    sum_ym: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """(estimate, variance of the estimate); NaN where fewer than two units reported."""
    n = np.asarray(units, dtype=float)
    sy, sm = np.asarray(sum_y, dtype=float), np.asarray(sum_m, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = sy / sm
        # Rounding can leave the residual sum of squares a hair below zero for constant data.
        resid = np.maximum(
            np.asarray(sum_yy, dtype=float)
            - 2.0 * r * np.asarray(sum_ym, dtype=float)
            + r * r * np.asarray(sum_mm, dtype=float),
            0.0,
        )
        var = resid * n / ((n - 1.0) * sm * sm)
    ok = (n >= 2) & (sm > 0)
    return np.where(sm > 0, r, np.nan), np.where(ok, var, np.nan)


@dataclass(frozen=True)
class RatioSums:
    """The statistic of one metric in one arm: sums over the units (users) that reported it.

    For unit i, y_i is the sum of its conversations' values and m_i how many of its
    conversations reported the metric. The per-conversation mean sum(y)/sum(m) is a ratio
    of unit sums; these are its sufficient statistics, and they add up over disjoint sets
    of units.
    """

    units: int
    sum_y: float
    sum_m: float
    sum_yy: float
    sum_mm: float
    sum_ym: float

    def __add__(self, other: RatioSums) -> RatioSums:
        return RatioSums(
            self.units + other.units,
            self.sum_y + other.sum_y,
            self.sum_m + other.sum_m,
            self.sum_yy + other.sum_yy,
            self.sum_mm + other.sum_mm,
            self.sum_ym + other.sum_ym,
        )

    @property
    def observations(self) -> int:
        """Conversations that reported the metric."""
        return int(round(self.sum_m))

    def moments(self) -> tuple[float, float]:
        """(the per-conversation mean, the variance of that estimate); NaN where fewer than
        two units reported (the variance) or none did (both)."""
        r, v = ratio_moments(
            self.units, self.sum_y, self.sum_m, self.sum_yy, self.sum_mm, self.sum_ym
        )
        return float(r), float(v)

    @property
    def mean(self) -> float:
        return self.moments()[0]

    @property
    def mean_variance(self) -> float:
        return self.moments()[1]

    @property
    def per_unit(self) -> float | None:
        """The metric's total per unit (for success: successes per user), for reading."""
        return self.sum_y / self.units if self.units else None


EMPTY_RATIO = RatioSums(0, 0.0, 0.0, 0.0, 0.0, 0.0)
