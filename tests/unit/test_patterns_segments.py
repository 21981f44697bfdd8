"""Pattern analysis's family of tests: which groups are tested, BH against an independent
step-up computation, and every actionability rule on its own. The statistic itself is in
test_patterns_significance.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from optimizer.patterns.segments import (
    MIN_GROUP_N,
    MIN_GROUP_UNITS,
    REGRESSION_WINDOW,
    GroupSums,
    GroupTest,
    GroupWindow,
    Rules,
    VersionTotals,
    WindowSums,
    assess,
    build_tests,
    evaluate,
    untested_metrics,
)
from optimizer.patterns.significance import (
    Significance,
    benjamini_hochberg,
    compare,
    moments_of_units,
)

RULES = Rules(fdr=0.05, min_effect=0.05, min_conversations=50)


def _step_up(p: list[float], alpha: float) -> set[int]:
    """BH written out as the textbook step-up rule: reject the k smallest p-values for the
    largest k with p_(k) <= k alpha / m."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    k = max((r for r in range(1, len(p) + 1) if p[order[r - 1]] <= r * alpha / len(p)), default=0)
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
    result = Significance(
        "unit_delta_t",
        n_inside,
        1000,
        40,
        300,
        0.4,
        0.4 - difference,
        difference,
        difference - 0.01,
        difference + 0.01,
        -5.0,
        p,
        df=39.0,
    )
    return GroupTest("segment", "segment", "billing", metric, "7d", n_inside, result)


def test_actionable_when_every_rule_holds() -> None:
    finding = assess(_test("success", -0.2), 0.001, RULES)
    assert finding.actionable and finding.significant and finding.worse
    assert finding.reasons == () and finding.effect == pytest.approx(-0.2)


@pytest.mark.parametrize(
    "test,q,reason",
    [
        (_test("success", -0.2), 0.2, "not significant at FDR 0.05"),
        (_test("success", 0.2), 0.001, "not worse"),
        (_test("success", -0.03), 0.001, "below the minimum 0.05"),
        (_test("success", -0.2, n_inside=49), 0.001, "fewer than the minimum 50"),
        (_test("rating", -0.16), 0.001, "effect 0.040 is below"),  # 0.16 stars / 4 = 0.04
    ],
)
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


def _version(
    per_unit: dict[str, tuple[np.ndarray, np.ndarray]], groups: dict[str, np.ndarray]
) -> tuple[list[GroupSums], VersionTotals]:
    """Success sums per window from per-unit (y, m) arrays; a group is a mask of its units."""
    windows = {
        w: WindowSums(
            int(m.sum()), int((m > 0).sum()), {"success": moments_of_units(y, m, y, m)[1]}
        )
        for w, (y, m) in per_unit.items()
    }
    recent = moments_of_units(*per_unit["24h"], *per_unit["7d"])[0]
    totals = VersionTotals(windows, GroupWindow(round(recent.m), {"success": recent}))
    sums = []
    for value, mask in groups.items():
        parts = {}
        for w, (y, m) in per_unit.items():
            part = moments_of_units(y * mask, m * mask, y, m)[0]
            parts[w] = GroupWindow(round(part.m), {"success": part})
        sums.append(GroupSums("segment", value, parts))
    return sums, totals


def test_build_tests_compares_with_the_rest_and_checks_regressions() -> None:
    rng = np.random.default_rng(3)
    m7 = rng.integers(1, 6, 100).astype(float)
    y7 = rng.binomial(m7.astype(int), 0.6).astype(float)
    m24 = np.minimum(m7, 1.0)
    y24 = np.minimum(y7, m24)
    units = np.arange(100)
    billing = (units < 30).astype(float)
    per_unit = {"24h": (y24, m24), "7d": (y7, m7)}
    groups, totals = _version(per_unit, {"billing": billing})
    tests = build_tests(groups, totals)
    keys = {(t.kind, t.value, t.metric, t.window) for t in tests}
    assert keys == {
        ("segment", "billing", "success", "24h"),
        ("segment", "billing", "success", "7d"),
        ("regression", None, "success", REGRESSION_WINDOW),
    }  # no ratings logged
    seven = next(t for t in tests if t.window == "7d").result
    assert (seven.units_inside, seven.units_outside) == (30, 70)
    assert seven.n_inside == m7[:30].sum() and seven.outside == pytest.approx(
        y7[30:].sum() / m7[30:].sum()
    )
    regression = next(t for t in tests if t.kind == "regression").result
    assert regression.n_inside == 100 and regression.n_outside == m7.sum() - 100
    assert regression.units_inside == 100  # every unit has a part on both sides


def test_a_group_needs_enough_units_on_both_sides() -> None:
    """However many conversations they have: 30 users with 40 conversations each."""
    y, m = np.full(30, 20.0), np.full(30, 40.0)
    for inside, expected in (
        (MIN_GROUP_UNITS, True),
        (MIN_GROUP_UNITS - 1, False),
        (30 - MIN_GROUP_UNITS, True),
        (30 - MIN_GROUP_UNITS + 1, False),
    ):
        mask = (np.arange(30) < inside).astype(float)
        groups, totals = _version({"24h": (y, m), "7d": (y, m)}, {"g": mask})
        tested = [t for t in build_tests(groups, totals) if t.kind == "segment"]
        assert bool(tested) is expected, inside
    assert MIN_GROUP_N <= 2 * MIN_GROUP_UNITS


def test_untested_metrics_name_the_reason() -> None:
    y, m = np.ones(20), np.ones(20)
    _, totals = _version({"24h": (y, m), "7d": (y, m)}, {})
    assert untested_metrics(totals) == {
        "rating": "no conversation of the active version reports rating in the last 7 days"
    }


def test_evaluate_adjusts_across_the_whole_family() -> None:
    tests = [_test("success", -0.2, p=p) for p in (0.001, 0.02, 0.03, 0.04, 0.5)]
    empty = moments_of_units(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3))
    broken = GroupTest("segment", "segment", "x", "success", "7d", 0, compare(*empty))
    findings = evaluate([*tests, broken], RULES)
    expected = stats.false_discovery_control([0.001, 0.02, 0.03, 0.04, 0.5])
    assert [f.q_value for f in findings[:5]] == pytest.approx(list(expected))
    assert findings[-1].q_value is None and not findings[-1].actionable
    assert [f.actionable for f in findings[:5]] == [True, True, True, True, False]
