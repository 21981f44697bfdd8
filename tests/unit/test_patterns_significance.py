"""The unit-level comparison of pattern analysis: the sufficient-statistic expansion against
the formula written out unit by unit, closed forms where there is one, units on both sides
of a group, degenerate input, and calibration with heavy, correlated users."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from optimizer.patterns.significance import (
    CI_LEVEL,
    TEST_NAME,
    compare,
    moments_of_units,
    side,
    within_unit_correlation,
)


def by_definition(
    y_in: list[float], m_in: list[float], y: list[float], m: list[float], rho: float
) -> tuple[float, float, float]:
    """The documented statistic computed unit by unit: (difference, standard error, df)."""
    yi, mi, ya, ma = (np.asarray(v, dtype=float) for v in (y_in, m_in, y, m))
    yo, mo = ya - yi, ma - mi
    r_in, r_out = yi.sum() / mi.sum(), yo.sum() / mo.sum()
    a, b = yi - r_in * mi, yo - r_out * mo

    def shape(sizes: np.ndarray) -> tuple[float, float]:
        sizes = sizes[sizes > 0]
        v = (1 - rho) * sizes + rho * sizes * sizes
        w = sizes / sizes.sum()
        return v.sum() ** 2 / (v * v).sum(), 1 - 2 * (w * v).sum() / v.sum() + (w * w).sum()

    (eff_in, kept_in), (eff_out, kept_out) = shape(mi), shape(mo)
    variance = (
        (a * a).sum() / kept_in / mi.sum() ** 2
        - 2 * (a * b).sum() / (mi.sum() * mo.sum())
        + (b * b).sum() / kept_out / mo.sum() ** 2
    )
    return r_in - r_out, math.sqrt(variance), max(1.0, min(eff_in, eff_out) - 1.0)


def test_one_conversation_per_unit_is_welch_with_per_side_df() -> None:
    # 20 users inside (8 succeed), 30 outside (21 succeed), one conversation each.
    y = [1.0] * 8 + [0.0] * 12 + [1.0] * 21 + [0.0] * 9
    inside = [1.0] * 20 + [0.0] * 30
    group, window = moments_of_units(np.multiply(y, inside), inside, y, [1.0] * 50)
    result = compare(group, window)
    se = math.sqrt(0.4 * 0.6 / 19 + 0.7 * 0.3 / 29)  # each side's unbiased variance
    assert result.test == TEST_NAME and result.error is None
    assert (result.n_inside, result.n_outside) == (20, 30)
    assert (result.units_inside, result.units_outside) == (20, 30)
    assert result.difference == pytest.approx(-0.3)
    assert result.statistic == pytest.approx(-0.3 / se)
    assert result.df == pytest.approx(19.0)  # the smaller side's units, less one
    assert result.p_value == pytest.approx(2 * stats.t.sf(0.3 / se, 19))
    half = stats.t.ppf(0.5 + CI_LEVEL / 2, 19) * se
    assert (result.ci_low, result.ci_high) == pytest.approx((-0.3 - half, -0.3 + half))


def test_small_example_by_hand() -> None:
    # Units A, B inside; C, D, E outside. Y = successes, M = conversations.
    y, m = [3.0, 1.0, 2.0, 4.0, 0.0], [4.0, 2.0, 5.0, 5.0, 1.0]
    inside = [1.0, 1.0, 0.0, 0.0, 0.0]
    group, window = moments_of_units(np.multiply(y, inside), np.multiply(m, inside), y, m)
    result = compare(group, window)
    # R_in = 4/6, R_out = 6/11.
    assert (result.inside, result.outside) == pytest.approx((4 / 6, 6 / 11))
    rho = within_unit_correlation(window)
    assert rho is not None
    difference, se, df = by_definition(np.multiply(y, inside), np.multiply(m, inside), y, m, rho)
    assert result.difference == pytest.approx(difference)
    assert result.statistic == pytest.approx(difference / se)
    assert result.df == pytest.approx(df) and result.icc == pytest.approx(rho)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(difference / se), df))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_units_on_both_sides_match_the_unit_by_unit_formula(seed: int) -> None:
    """A unit's conversations may fall inside and outside the group (a tag, the last 24 h):
    the expansion into sums stays exact."""
    rng = np.random.default_rng(seed)
    m = rng.geometric(0.1, 40).astype(float)
    y = rng.binomial(m.astype(int), rng.beta(1, 2, 40)).astype(float)
    m_in = rng.binomial(m.astype(int), 0.4).astype(float)
    y_in = rng.hypergeometric(y.astype(int), (m - y).astype(int), m_in.astype(int)).astype(float)
    group, window = moments_of_units(y_in, m_in, y, m)
    result = compare(group, window)
    rho = within_unit_correlation(window)
    difference, se, df = by_definition(
        list(y_in), list(m_in), list(y), list(m), 1.0 if rho is None else rho
    )
    assert result.units_inside == int((m_in > 0).sum())
    assert result.units_outside == int((m - m_in > 0).sum())
    assert result.difference == pytest.approx(difference)
    assert result.statistic == pytest.approx(difference / se, rel=1e-9)
    assert result.df == pytest.approx(df)


def test_ratings_use_their_own_squares_for_the_correlation() -> None:
    # Rating sums: Y = sum of stars, M = rated conversations, q = sum of stars squared.
    y, m, q = np.array([12.0, 4.0, 9.0, 20.0]), np.array([3.0, 2.0, 3.0, 4.0]), None
    q = np.array([50.0, 8.0, 27.0, 100.0])
    group, window = moments_of_units(
        np.array([12.0, 4.0, 0, 0]), np.array([3.0, 2.0, 0, 0]), y, m, q
    )
    assert window.q == 185.0
    rho = within_unit_correlation(window)
    assert rho is not None and 0.0 <= rho <= 1.0
    assert compare(group, window).inside == pytest.approx(16 / 5)


def test_within_unit_correlation_extremes() -> None:
    rng = np.random.default_rng(4)
    m = rng.geometric(0.1, 400).astype(float)
    alike = (rng.random(400) < 0.3).astype(float) * m  # each user all or nothing
    assert within_unit_correlation(moments_of_units(alike, m, alike, m)[1]) == pytest.approx(
        1.0, abs=0.02
    )
    independent = rng.binomial(m.astype(int), 0.3).astype(float)
    rho = within_unit_correlation(moments_of_units(independent, m, independent, m)[1])
    assert rho is not None and rho < 0.02
    ones = np.ones(50)
    assert within_unit_correlation(moments_of_units(ones, ones, ones, ones)[1]) is None


def test_effective_units_and_what_estimation_keeps() -> None:
    equal = side(10.0, 10.0, 10.0, 10.0, 0.3, 10)  # ten units with one observation each
    assert equal.effective_units == pytest.approx(10.0) and equal.kept == pytest.approx(0.9)
    sizes = np.array([100.0] + [1.0] * 9)  # one heavy unit among light ones
    heavy = side(*(float((sizes**k).sum()) for k in (1, 2, 3, 4)), 1.0, 10)
    assert heavy.effective_units < 1.1 and 0.0 < heavy.kept < 0.1


def _arrays(*columns: list[float]) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(c, dtype=float) for c in columns)


@pytest.mark.parametrize(
    "y_in,m_in,y,m,error",
    [
        ([0, 0], [0, 0], [0, 0], [0, 0], "no_units"),
        ([1, 0, 0], [2, 0, 0], [1, 1, 2], [2, 3, 3], "too_few_observations"),  # one unit inside
        ([0, 0, 0], [0, 0, 0], [1, 2, 3], [2, 3, 4], "too_few_observations"),  # none inside
        ([2, 3, 0, 0], [2, 3, 0, 0], [2, 3, 4, 5], [2, 3, 4, 5], "no_variation"),  # all succeed
        ([2, 3, 0, 0], [2, 3, 0, 0], [2, 3, 0, 0], [2, 3, 4, 5], "no_variation"),  # in 1, out 0
        ([1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1], "too_few_observations"),
    ],
)
def test_degenerate_input_gives_an_error_code_and_nothing_infinite(
    y_in: list[float], m_in: list[float], y: list[float], m: list[float], error: str
) -> None:
    result = compare(*moments_of_units(*_arrays(y_in, m_in, y, m)))
    assert result.error == error and result.p_value is None
    for value in (
        result.inside,
        result.outside,
        result.difference,
        result.ci_low,
        result.ci_high,
        result.statistic,
        result.df,
        result.icc,
    ):
        assert value is None or math.isfinite(value)


def test_extreme_but_allowed_sizes_stay_finite() -> None:
    m = np.array([1e6, 3.0, 2.0, 5.0, 1.0, 7.0, 4.0, 2.0])
    y = np.array([4e5, 1.0, 2.0, 1.0, 0.0, 7.0, 1.0, 1.0])
    inside = np.array([1.0, 1.0, 1.0, 0, 0, 0, 0, 0])
    result = compare(*moments_of_units(y * inside, m * inside, y, m))
    assert result.error is None and result.p_value is not None
    assert all(
        math.isfinite(v)
        for v in (result.statistic, result.p_value, result.df, result.ci_low, result.ci_high)
    )
    assert result.df == pytest.approx(1.0)  # one unit carries the inside: nothing to lean on


def test_heavy_correlated_users_keep_the_error_rate() -> None:
    """15 users inside, 285 outside, ~30 conversations each (geometric), within-user
    correlation 0.3, no true difference: the unit test rejects at 5% about 5% of the
    time on the bad side; counting conversations as independent rejects far more."""
    rng = np.random.default_rng(11)
    k = 1 / 0.3 - 1
    rejected = naive = 0
    draws = 1500
    for _ in range(draws):
        m = rng.geometric(1 / 30, 300).astype(float)
        y = rng.binomial(m.astype(int), rng.beta(0.3 * k, 0.7 * k, 300)).astype(float)
        inside = np.arange(300) < 15
        result = compare(*moments_of_units(y * inside, m * inside, y, m))
        rejected += (result.p_value or 1) < 0.05 and (result.difference or 0) < 0
        n1, n2, x1, x2 = m[inside].sum(), m[~inside].sum(), y[inside].sum(), y[~inside].sum()
        pooled = (x1 + x2) / (n1 + n2)
        z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        naive += 2 * stats.norm.sf(abs(z)) < 0.05 and z < 0
    assert rejected / draws < 0.04  # nominal 0.025 on one side
    assert naive / draws > 0.25
