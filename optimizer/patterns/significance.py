"""Comparing one group of conversations with the rest, with users (units) as the independent
observations, and the Benjamini-Hochberg adjustment across all tests of a run. Pure: numpy
and scipy only.

Why units. A user (`unit_id`) comes back many times and their conversations go alike, so a
test that counts conversations as independent sees a few heavy users' luck as a pattern.
For a metric (success: Y = successes, M = conversations reporting success; rating: Y = sum
of ratings, M = rated conversations) a unit i has window totals Y_i, M_i and, inside a group
g, the part Y_ig, M_ig (outside: Y_io = Y_i - Y_ig, M_io = M_i - M_ig). The rates are
ratios of unit sums, R_in = sum Y_ig / sum M_ig and R_out = sum Y_io / sum M_io, exactly the
per-conversation rates. By the delta method (Deng et al. 2018), with N the units that report
the metric in the window and mbar_in = sum M_ig / N, mbar_out = sum M_io / N, unit i's
influence on the difference is

    d_i = a_i / mbar_in - b_i / mbar_out,  a_i = Y_ig - R_in M_ig,  b_i = Y_io - R_out M_io

and Var(R_in - R_out) = sum d_i^2 / N^2 (N then cancels). This holds when a unit's
conversations fall on both sides. Expanded, the sums of a_i^2, a_i b_i and b_i^2 need only
sums over units of products of Y_ig, M_ig, Y_i and M_i: GroupMoments and WindowMoments hold
them, and the database computes them.

Small samples. Instead of one N / (N - 1) for the whole, each side's sum of squares is
divided by the share of its expectation that estimating the side's rate from the same units
leaves, 1 - 2 sum(w v) / sum v + sum w^2 (w = M / sum M over the side, v below). With one
conversation per unit that is (n - 1) / n, Welch's per-side correction; a side carried by a
few heavy units gets much more, since they largely set its rate and so hide their own
deviation from it.

Why Student t with effective degrees of freedom, not the normal. With a few heavy users on
a side the variance estimate is itself noisy, and a z test on it is far too eager: with 15
users a segment (about 30 conversations each, geometric) and within-user correlation 0.3,
it gives p < 0.001 about 20 times too often. Following Bell & McCaffrey (2002) and Imbens &
Kolesar (2016), the reference t takes the degrees of freedom of the variance estimate under
a working model where a unit with M observations has residual variance proportional to
v = (1 - rho) M + rho M^2, rho being the within-unit correlation (a moment estimate over the
window's units). On each side df = (sum v)^2 / sum v^2 - 1, its effective number of units
less one; the test takes the smaller side. One conversation per unit gives df = units - 1
(about the z test); a few heavy, alike users give a few df.

Pattern analysis looks at a snapshot (the last 24 hours, the last 7 days) and reports; it
decides nothing irreversible, so fixed-horizon tests are the right tool here, unlike the
always-valid inference of experiment monitoring. Benjamini-Hochberg keeps the many
comparisons of a run honest.

Degenerate input (no units, too few observations, no variation) gives a result with an
error code and p_value None; it never raises, and no field is ever NaN or infinite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import t as student_t

TEST_NAME = "unit_delta_t"
CI_LEVEL = 0.95
MIN_OBSERVATIONS = 2
# The sums of squares are differences of large sums; below this share of their size what
# is left is rounding (about 4,500 times the double precision), not variation.
NO_VARIATION = 1e-12


@dataclass(frozen=True)
class WindowMoments:
    """One metric over the units of a window. units: units with M_i > 0. Sums over units:
    y, m (of Y_i, M_i), yy, mm, ym (Y_i^2, M_i^2, Y_i M_i), m3, m4 (M_i^3, M_i^4); q: sum over
    conversations of the value squared (equal to y for success)."""

    units: int
    y: float
    m: float
    yy: float
    mm: float
    ym: float
    m3: float
    m4: float
    q: float


@dataclass(frozen=True)
class GroupMoments:
    """One metric in one group of a window; sums over units (a unit with no part in the group
    adds 0). units: units with M_ig > 0. y, m, yy, mm, ym, m3, m4: of Y_ig, M_ig and their
    powers as in WindowMoments. y_y, y_m, m_y, m_m: of Y_ig Y_i, Y_ig M_i, M_ig Y_i, M_ig M_i.
    The outside part corrects the window's figures: out_units_adj = sum of
    [M_io > 0] - [M_i > 0]; out_m3_adj, out_m4_adj = sums of M_io^k - M_i^k."""

    units: int
    y: float
    m: float
    yy: float
    mm: float
    ym: float
    y_y: float
    y_m: float
    m_y: float
    m_m: float
    m3: float
    m4: float
    out_units_adj: int
    out_m3_adj: float
    out_m4_adj: float


@dataclass(frozen=True)
class Significance:
    """Group (inside) against the rest (outside): rates (or mean ratings) as ratios of unit
    sums, their difference inside minus outside, a CI_LEVEL interval for it, the statistic,
    its two-sided p, the effective df and the within-unit correlation (icc) behind it.
    n_*: observations (conversations reporting the metric); units_*: units behind them.
    error: None, no_units, too_few_observations, no_variation."""

    test: str
    n_inside: int
    n_outside: int
    units_inside: int
    units_outside: int
    inside: float | None
    outside: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    statistic: float | None
    p_value: float | None
    df: float | None = None
    icc: float | None = None
    error: str | None = None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _ratio(top: float, bottom: float) -> float | None:
    return _finite(top / bottom) if bottom > 0 else None


def outside_units(group: GroupMoments, window: WindowMoments) -> int:
    return window.units + group.out_units_adj


@dataclass(frozen=True)
class Squares:
    """sum a_i^2, sum a_i b_i, sum b_i^2 over units, with a_i = Y_ig - R_in M_ig and
    b_i = Y_io - R_out M_io; and the size of the terms the inside and outside sums are
    differences of (the outside ones come from the window's sums)."""

    inside: float
    cross: float
    outside: float
    scale_in: float
    scale_out: float


def squares(group: GroupMoments, window: WindowMoments, r_in: float, r_out: float) -> Squares:
    g, w = group, window
    # Sums over units of the outside parts (Y_io, M_io) and their products.
    oyy, omm = w.yy - 2 * g.y_y + g.yy, w.mm - 2 * g.m_m + g.mm
    oym = w.ym - g.y_m - g.m_y + g.ym
    inside = g.yy - 2 * r_in * g.ym + r_in * r_in * g.mm
    outside = oyy - 2 * r_out * oym + r_out * r_out * omm
    cross = (
        (g.y_y - g.yy)
        - r_out * (g.y_m - g.ym)
        - r_in * (g.m_y - g.ym)
        + r_in * r_out * (g.m_m - g.mm)
    )
    return Squares(inside, cross, outside, g.yy + r_in * r_in * g.mm, w.yy + r_out * r_out * w.mm)


def within_unit_correlation(window: WindowMoments) -> float | None:
    """Moment estimate of the correlation between two observations of one unit: with
    sigma^2 the per-observation variance, E sum (Y_i - R M_i)^2 = sigma^2 (sum M_i + rho
    sum M_i (M_i - 1)). Clipped to [0, 1]; None when no unit has two observations or there
    is no variation."""
    w = window
    if w.m <= 0:
        return None
    rate = w.y / w.m
    variance = w.q / w.m - rate * rate
    pairs = w.mm - w.m
    if variance <= NO_VARIATION or pairs <= 0:
        return None
    residual = w.yy - 2 * rate * w.ym + rate * rate * w.mm
    rho = (residual / variance - w.m) / pairs
    return min(1.0, max(0.0, rho)) if math.isfinite(rho) else None


@dataclass(frozen=True)
class Side:
    """One side's units under the working model v = (1 - rho) M + rho M^2: how many
    independent units they are worth, and the share of sum a_i^2's expectation that is left
    after estimating the rate on the same units, 1 - 2 sum(w v) / sum v + sum w^2 with
    w = M / sum M ((n - 1) / n for one observation per unit)."""

    effective_units: float
    kept: float


def side(s1: float, s2: float, s3: float, s4: float, rho: float, units: int) -> Side:
    """From the sums of M^1..M^4 over the side's units. Effective units are kept within
    [1, units], which also absorbs rounding in the sums."""
    total = (1 - rho) * s1 + rho * s2
    total_sq = (1 - rho) ** 2 * s2 + 2 * rho * (1 - rho) * s3 + rho * rho * s4
    weighted = ((1 - rho) * s2 + rho * s3) / s1 if s1 > 0 else 0.0
    effective = total * total / total_sq if total_sq > 0 else 1.0
    effective = min(float(units), max(1.0, effective)) if math.isfinite(effective) else 1.0
    kept = 1 - 2 * weighted / total + s2 / (s1 * s1) if total > 0 and s1 > 0 else 0.0
    return Side(effective, kept if math.isfinite(kept) else 0.0)


def sides(group: GroupMoments, window: WindowMoments, rho: float) -> tuple[Side, Side]:
    g, w = group, window
    inside = side(g.m, g.mm, g.m3, g.m4, rho, g.units)
    outside = side(
        w.m - g.m,
        w.mm - 2 * g.m_m + g.mm,
        w.m3 + g.out_m3_adj,
        w.m4 + g.out_m4_adj,
        rho,
        outside_units(g, w),
    )
    return inside, outside


def compare(group: GroupMoments, window: WindowMoments) -> Significance:
    """The group against the rest of the window, units as the observations."""
    n_in, n_out = round(group.m), round(window.m - group.m)
    units_in, units_out = group.units, outside_units(group, window)
    r_in, r_out = _ratio(group.y, group.m), _ratio(window.y - group.y, window.m - group.m)
    base = Significance(
        TEST_NAME, n_in, n_out, units_in, units_out, r_in, r_out, None, None, None, None, None
    )
    if window.units <= 0:
        return _with(base, error="no_units")
    if (
        min(n_in, n_out) < MIN_OBSERVATIONS
        or min(units_in, units_out) < 2
        or r_in is None
        or r_out is None
    ):
        return _with(base, error="too_few_observations")
    difference, sq = r_in - r_out, squares(group, window, r_in, r_out)
    m_in, m_out = group.m, window.m - group.m
    raw = sq.inside / m_in**2 - 2 * sq.cross / (m_in * m_out) + sq.outside / m_out**2
    rounding = NO_VARIATION * (sq.scale_in / m_in**2 + sq.scale_out / m_out**2)
    if not math.isfinite(raw) or raw <= rounding:
        return _with(base, difference=_finite(difference), error="no_variation")
    icc = within_unit_correlation(window)
    # Without an estimate, the working model that trusts heavy units least.
    inside, outside = sides(group, window, 1.0 if icc is None else icc)
    if min(inside.kept, outside.kept) <= 0:  # a side rests on one unit
        return _with(base, difference=difference, error="too_few_observations")
    variance = (
        sq.inside / inside.kept / m_in**2
        - 2 * sq.cross / (m_in * m_out)
        + sq.outside / outside.kept / m_out**2
    )
    df = max(1.0, min(inside.effective_units, outside.effective_units) - 1.0)
    # kept <= 1, so variance >= raw up to rounding; the max keeps it so.
    return _tested(base, difference, math.sqrt(max(variance, raw)), df, icc)


def _tested(
    base: Significance, difference: float, se: float, df: float, icc: float | None
) -> Significance:
    statistic = difference / se
    half = float(student_t.ppf(0.5 + CI_LEVEL / 2.0, df)) * se
    p = 2.0 * float(student_t.sf(abs(statistic), df))
    return _with(
        base,
        difference=difference,
        ci_low=_finite(difference - half),
        ci_high=_finite(difference + half),
        statistic=_finite(statistic),
        p_value=_finite(p),
        df=float(df),
        icc=None if icc is None else float(icc),
    )


def _with(base: Significance, **changes: Any) -> Significance:
    return replace(base, **changes)


def moments_of_units(
    y_in: np.ndarray, m_in: np.ndarray, y: np.ndarray, m: np.ndarray, q: np.ndarray | None = None
) -> tuple[GroupMoments, WindowMoments]:
    """The sums the database returns, from per-unit arrays (group part and window totals;
    q per unit, the sum of squared values, defaults to y as for success). The reference
    definition, used by tests and the benchmark."""
    yi, mi, ya, ma = (np.asarray(a, dtype=float) for a in (y_in, m_in, y, m))
    mo = ma - mi

    def total(values: np.ndarray) -> float:
        return float(values.sum())

    window = WindowMoments(
        int((ma > 0).sum()),
        total(ya),
        total(ma),
        total(ya * ya),
        total(ma * ma),
        total(ya * ma),
        total(ma**3),
        total(ma**4),
        total(ya if q is None else np.asarray(q, dtype=float)),
    )
    group = GroupMoments(
        int((mi > 0).sum()),
        total(yi),
        total(mi),
        total(yi * yi),
        total(mi * mi),
        total(yi * mi),
        total(yi * ya),
        total(yi * ma),
        total(mi * ya),
        total(mi * ma),
        total(mi**3),
        total(mi**4),
        int((mo > 0).sum() - (ma > 0).sum()),
        total(mo**3 - ma**3),
        total(mo**4 - ma**4),
    )
    return group, window


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
