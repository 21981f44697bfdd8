"""The statistics of pattern analysis against scipy, BH against an independent step-up
computation, and every actionability rule on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from optimizer.patterns.segments import (
    MIN_GROUP_N,
    REGRESSION_WINDOW,
    GroupSums,
    GroupTest,
    Rules,
    WindowSums,
    assess,
    build_tests,
    evaluate,
)
from optimizer.patterns.significance import (
    CI_LEVEL,
    Significance,
    benjamini_hochberg,
    two_proportion_z,
    welch_t,
)
from optimizer.stats import MetricSums

RULES = Rules(fdr=0.05, min_effect=0.05, min_conversations=50)


@pytest.mark.parametrize("x1,n1,x2,n2", [(38, 100, 720, 1000), (5, 40, 9, 41),
                                         (500, 1000, 480, 1000), (0, 30, 12, 60)])
def test_two_proportion_z_matches_the_chi_square(x1: int, n1: int, x2: int, n2: int) -> None:
    result = two_proportion_z(x1, n1, x2, n2)
    chi2, p, _, _ = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.statistic is not None and result.statistic ** 2 == pytest.approx(chi2)
    assert math.copysign(1, result.statistic) == math.copysign(1, x1 / n1 - x2 / n2)
    p1, p2 = x1 / n1, x2 / n2
    half = stats.norm.ppf(0.975) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    assert (result.ci_low, result.ci_high) == pytest.approx((p1 - p2 - half, p1 - p2 + half))
    assert CI_LEVEL == 0.95


def test_welch_from_sums_matches_scipy_on_raw_data() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(1, 6, 80).astype(float)
    b = rng.integers(2, 6, 300).astype(float)
    result = welch_t(len(a), a.sum(), (a * a).sum(), len(b), b.sum(), (b * b).sum())
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert result.df == pytest.approx(df)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = a.mean() - b.mean()
    assert (result.ci_low, result.ci_high) == pytest.approx((diff - half, diff + half))


def test_welch_matches_ttest_ind_from_stats() -> None:
    result = welch_t(50, 50 * 3.1, 49 * 1.2 ** 2 + 50 * 3.1 ** 2,
                     400, 400 * 3.6, 399 * 0.9 ** 2 + 400 * 3.6 ** 2)
    expected = stats.ttest_ind_from_stats(3.1, 1.2, 50, 3.6, 0.9, 400, equal_var=False)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.difference == pytest.approx(-0.5)


def test_degenerate_input_gives_an_error_code_not_an_exception() -> None:
    assert two_proportion_z(1, 1, 5, 10).error == "too_few_observations"
    assert two_proportion_z(10, 10, 20, 20).error == "no_variation"
    assert two_proportion_z(0, 0, 5, 10).p_value is None
    assert welch_t(1, 3.0, 9.0, 10, 30.0, 100.0).error == "too_few_observations"
    flat = welch_t(10, 30.0, 90.0, 10, 40.0, 160.0)
    assert flat.error == "no_variation" and flat.difference == pytest.approx(-1.0)


def _step_up(p: list[float], alpha: float) -> set[int]:
    """BH written out as the textbook step-up rule: reject the k smallest p-values for the
    largest k with p_(k) <= k alpha / m."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    k = max((r for r in range(1, len(p) + 1) if p[order[r - 1]] <= r * alpha / len(p)),
            default=0)
    return set(order[:k])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bh_matches_scipy_and_the_step_up_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 60), rng.uniform(0, 0.002, 8)])
    q = benjamini_hochberg(p)
    assert q == pytest.approx(stats.false_discovery_control(p, method="bh"))
    for alpha in (0.01, 0.05, 0.2):
        assert {i for i, v in enumerate(q) if v <= alpha} == _step_up(list(p), alpha)


def test_bh_by_hand() -> None:
    # m = 5: q_(i) = min_{j >= i} 5 p_(j) / j
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.5, 0.02])
    assert q == pytest.approx([0.05, 0.05, 0.05, 0.5, 0.05])
    assert benjamini_hochberg([]).size == 0
    assert benjamini_hochberg([0.9, 0.95]) == pytest.approx([0.95, 0.95])


def _test(metric: str, difference: float, n_inside: int = 200, p: float = 1e-6) -> GroupTest:
    result = Significance("two_proportion_z" if metric == "success" else "welch_t", n_inside,
                            1000, 0.4, 0.4 - difference, difference, difference - 0.01,
                            difference + 0.01, -5.0, p)
    return GroupTest("segment", "segment", "billing", metric, "7d", n_inside, result)


def test_actionable_when_every_rule_holds() -> None:
    finding = assess(_test("success", -0.2), 0.001, RULES)
    assert finding.actionable and finding.significant and finding.worse
    assert finding.reasons == () and finding.effect == pytest.approx(-0.2)


@pytest.mark.parametrize("test,q,reason", [
    (_test("success", -0.2), 0.2, "not significant at FDR 0.05"),
    (_test("success", 0.2), 0.001, "not worse"),
    (_test("success", -0.03), 0.001, "below the minimum 0.05"),
    (_test("success", -0.2, n_inside=49), 0.001, "fewer than the minimum 50"),
    (_test("rating", -0.16), 0.001, "effect 0.040 is below"),  # 0.16 stars / 4 = 0.04
])
def test_each_rule_alone_blocks_actionability(test: GroupTest, q: float, reason: str) -> None:
    finding = assess(test, q, RULES)
    assert not finding.actionable
    assert len(finding.reasons) == 1 and reason in finding.reasons[0]


def test_rating_effect_is_a_share_of_the_scale() -> None:
    finding = assess(_test("rating", -0.4), 0.001, RULES)
    assert finding.actionable and finding.effect == pytest.approx(-0.1)


def test_significant_but_better_is_not_reportable() -> None:
    finding = assess(_test("success", 0.2), 0.001, RULES)
    assert finding.significant and not finding.reportable


def _window(n: int, successes: int, ratings: list[int]) -> WindowSums:
    return WindowSums(n, MetricSums(n, float(successes), float(successes)),
                      MetricSums(len(ratings), float(sum(ratings)),
                                 float(sum(r * r for r in ratings))))


def test_build_tests_compares_with_the_rest_and_checks_regressions() -> None:
    ratings = [1, 2, 3, 4, 5] * 40
    totals = {"24h": _window(300, 200, ratings), "7d": _window(1000, 700, ratings * 3)}
    billing = GroupSums("segment", "billing", {"24h": _window(100, 40, ratings[:100]),
                                               "7d": _window(300, 120, ratings[:300])})
    tiny = GroupSums("tag", "rare", {"24h": _window(MIN_GROUP_N - 1, 1, []),
                                     "7d": _window(MIN_GROUP_N, 2, [])})
    tests = build_tests([billing, tiny], totals)
    keys = [(t.kind, t.value, t.metric, t.window) for t in tests]
    assert ("segment", "billing", "success", "24h") in keys
    assert ("segment", "rare", "success", "7d") in keys          # exactly at the floor
    assert ("segment", "rare", "success", "24h") not in keys      # below it
    assert ("segment", "rare", "rating", "7d") not in keys        # no ratings at all
    by_key = {(t.kind, t.value, t.metric, t.window): t for t in tests}
    seven = by_key[("segment", "billing", "success", "7d")].result
    assert (seven.n_inside, seven.n_outside) == (300, 700)
    assert seven.outside == pytest.approx((700 - 120) / 700)
    regression = by_key[("regression", None, "success", REGRESSION_WINDOW)].result
    assert (regression.n_inside, regression.n_outside) == (300, 700)
    assert regression.inside == pytest.approx(200 / 300)
    assert regression.outside == pytest.approx(500 / 700)


def test_evaluate_adjusts_across_the_whole_family() -> None:
    tests = [_test("success", -0.2, p=p) for p in (0.001, 0.02, 0.03, 0.04, 0.5)]
    broken = GroupTest("segment", "segment", "x", "success", "7d", 0,
                  two_proportion_z(0, 0, 0, 0))
    findings = evaluate([*tests, broken], RULES)
    expected = stats.false_discovery_control([0.001, 0.02, 0.03, 0.04, 0.5])
    assert [f.q_value for f in findings[:5]] == pytest.approx(list(expected))
    assert findings[-1].q_value is None and not findings[-1].actionable
    assert [f.actionable for f in findings[:5]] == [True, True, True, True, False]
