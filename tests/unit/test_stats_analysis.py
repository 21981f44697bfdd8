"""analyze() against independent reference values, and its degenerate inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from optimizer.stats import (
    AnalysisSettings,
    ArmData,
    Guardrail,
    RatioSums,
    analyze,
    ratio_moments,
)
from optimizer.stats.sequential import mixture_eta, one_sided_halfwidth, two_sided_halfwidth


def per_unit(values_per_unit) -> RatioSums:
    ys = np.array([float(np.sum(v)) for v in values_per_unit])
    ms = np.array([float(len(v)) for v in values_per_unit])
    keep = ms > 0
    ys, ms = ys[keep], ms[keep]
    return RatioSums(
        int(keep.sum()),
        float(ys.sum()),
        float(ms.sum()),
        float(ys @ ys),
        float(ms @ ms),
        float(ys @ ms),
    )


def sums(values) -> RatioSums:
    """One conversation per unit."""
    return per_unit([[v] for v in np.asarray(values, dtype=float)])


def arm(arm_id, control=False, conversations=None, weight=1.0, active=True, **metrics):
    ms = {k: sums(v) if not isinstance(v, RatioSums) else v for k, v in metrics.items()}
    n = conversations if conversations is not None else max([m.units for m in ms.values()] or [0])
    return ArmData(arm_id, arm_id, control, weight, active, n, n, ms)


def binary(successes, n):
    return [1.0] * successes + [0.0] * (n - successes)


def test_primary_comparison_against_reference():
    c, t = binary(301, 1000), binary(352, 1010)
    result = analyze([arm(1, True, success=c), arm(2, success=t)], AnalysisSettings())
    (cmp,) = result.comparisons
    m_c, m_t = np.mean(c), np.mean(t)
    v = np.var(c, ddof=1) / len(c) + np.var(t, ddof=1) / len(t)
    d = m_t - m_c
    assert cmp.error is None and cmp.level == pytest.approx(0.9)
    assert cmp.mean_control == pytest.approx(m_c) and cmp.mean_arm == pytest.approx(m_t)
    assert cmp.diff == pytest.approx(d)
    # the half-width from the closed form with rho^2 = K(alpha) V* (V* at the target size)
    half = two_sided_halfwidth(v, mixture_eta(1000, 1010, 0.1), 0.1)
    assert cmp.diff_low == pytest.approx(d - half) and cmp.diff_high == pytest.approx(d + half)
    assert cmp.diff_high - cmp.diff_low > 2 * stats.norm.ppf(0.95) * math.sqrt(v)  # wider
    rel_var = (np.var(t, ddof=1) / len(t)) / m_c**2 + m_t**2 * (np.var(c, ddof=1) / len(c)) / m_c**4
    rel_half = two_sided_halfwidth(rel_var, mixture_eta(1000, 1010, 0.1), 0.1)
    assert cmp.relative == pytest.approx(m_t / m_c - 1)
    assert cmp.relative_low == pytest.approx(m_t / m_c - 1 - rel_half)
    assert cmp.prob_beat_control == pytest.approx(stats.norm.cdf(d / math.sqrt(v)))
    loss = integrate.quad(
        lambda x: max(0.0, -x) * stats.norm.pdf(x, d, math.sqrt(v)),
        d - 12 * math.sqrt(v),
        d + 12 * math.sqrt(v),
        points=[0.0],
    )[0]
    assert cmp.expected_loss == pytest.approx(loss, rel=1e-5, abs=1e-12)
    # Beta posteriors (uniform priors) agree with the normal approximation at this size
    rng = np.random.default_rng(0)
    beta = (rng.beta(1 + 352, 1 + 658, 200_000) > rng.beta(1 + 301, 1 + 699, 200_000)).mean()
    assert cmp.prob_beat_control == pytest.approx(beta, abs=0.01)
    json.dumps(result.to_dict(), allow_nan=False)


def test_bonferroni_across_every_variant_arm_ever():
    c = binary(300, 1000)
    arms = [
        arm(1, True, success=c),
        arm(2, success=binary(330, 1000)),
        arm(3, success=binary(310, 1000)),
        arm(4, active=False, success=binary(1, 10)),
    ]
    result = analyze(arms, AnalysisSettings(confidence=0.9, guardrails=()))
    assert [x.arm_id for x in result.comparisons] == [2, 3]  # the stopped arm is not compared
    assert result.alpha_per_arm == pytest.approx(0.1 / 3)  # but it still takes its share
    assert all(x.level == pytest.approx(1 - 0.1 / 3) for x in result.comparisons)
    v = np.var(c, ddof=1) / 1000 + np.var(binary(330, 1000), ddof=1) / 1000
    half = two_sided_halfwidth(v, mixture_eta(1000, 1000, 0.1 / 3), 0.1 / 3)
    assert result.comparisons[0].diff_high - result.comparisons[0].diff == pytest.approx(half)


@pytest.mark.parametrize(
    "control,variant,code",
    [
        ({}, {}, "missing_metric"),
        ({"success": RatioSums(0, 0, 0, 0, 0, 0)}, {"success": binary(3, 10)}, "missing_metric"),
        ({"success": binary(1, 1)}, {"success": binary(3, 10)}, "too_few_units"),
        ({"success": binary(10, 10)}, {"success": binary(20, 20)}, "zero_variance"),
        ({"success": binary(0, 50)}, {"success": binary(0, 60)}, "zero_variance"),
    ],
)
def test_degenerate_primary_inputs_give_error_codes(control, variant, code):
    result = analyze(
        [arm(1, True, 10, **control), arm(2, conversations=10, **variant)], AnalysisSettings()
    )
    (cmp,) = result.comparisons
    assert cmp.error == code and cmp.diff_low is None and not cmp.improves and not cmp.hurts
    assert all(g.status == "no_data" and not g.harmed for g in result.guardrails)
    json.dumps(result.to_dict(), allow_nan=False)


def test_no_control_bad_confidence_and_empty_experiment():
    no_control = analyze(
        [arm(1, success=binary(3, 10)), arm(2, success=binary(4, 10))], AnalysisSettings()
    )
    assert {c.error for c in no_control.comparisons} == {"no_control"}
    bad = analyze(
        [arm(1, True, success=binary(3, 10)), arm(2, success=binary(4, 10))],
        AnalysisSettings(confidence=1.5),
    )
    assert bad.comparisons[0].error == "invalid_confidence"
    json.dumps(bad.to_dict(), allow_nan=False)
    empty = analyze([], AnalysisSettings())
    assert empty.comparisons == () and empty.srm.error == "no_arms"
    zero_control = analyze(
        [arm(1, True, rating=[0.0, 0.0, 0.0]), arm(2, rating=[1.0, 2, 0])],
        AnalysisSettings(primary_metric="rating"),
    )
    assert zero_control.comparisons[0].error is None, zero_control.comparisons[0]
    assert zero_control.comparisons[0].relative is None  # relative to a zero mean


def test_guardrail_margin_contrast_counts_the_controls_uncertainty():
    rng = np.random.default_rng(5)
    n = 4000
    lat_c, lat_t = rng.normal(1000, 200, n), rng.normal(1030, 200, n)
    control = arm(1, True, success=binary(1200, n), latency_ms=lat_c)
    variant = arm(2, success=binary(1300, n), latency_ms=lat_t)
    guard = Guardrail("latency_ms", False, 0.10)
    [check] = analyze([control, variant], AnalysisSettings(guardrails=(guard,))).guardrails
    # gain = 1.1 * control - arm (lower is better), variance Var(arm) + 1.1^2 Var(control)
    v = np.var(lat_t, ddof=1) / n + 1.1**2 * np.var(lat_c, ddof=1) / n
    gain = 1.1 * lat_c.mean() - lat_t.mean()
    half = one_sided_halfwidth(v, mixture_eta(n, n, 0.1), 0.1)
    assert check.gain_low == pytest.approx(gain - half)
    assert check.gain_high == pytest.approx(gain + half)
    assert check.status == "non_inferior" and check.passes and not check.harmed
    assert check.relative == pytest.approx(lat_t.mean() / lat_c.mean() - 1)


def test_guardrail_statuses():
    rng = np.random.default_rng(6)
    n = 4000
    control = arm(
        1,
        True,
        success=binary(1200, n),
        rating=rng.normal(4.0, 0.8, n),
        latency_ms=rng.normal(1000, 200, n),
        cost_usd=rng.lognormal(0, 2, n),
    )
    slow = arm(
        2,
        success=binary(1300, n),
        rating=rng.normal(3.5, 0.8, n),
        latency_ms=rng.normal(1300, 200, n),
        cost_usd=rng.lognormal(0, 2, n),
    )
    checks = {g.metric: g for g in analyze([control, slow], AnalysisSettings()).guardrails}
    assert checks["latency_ms"].status == "harmed"  # +30% against a 10% tolerance
    assert checks["rating"].status == "harmed"  # -12.5% against a 5% tolerance
    assert checks["cost_usd"].status == "undecided"  # too noisy to show either
    assert not checks["cost_usd"].passes
    lenient = analyze(
        [control, slow], AnalysisSettings(guardrails=(Guardrail("latency_ms", False, 0.5),))
    )
    assert lenient.guardrails[0].status == "non_inferior"


def test_delta_method_variance_matches_the_spread_of_clustered_estimates():
    """Users with many, correlated conversations: the delta-method variance of the
    per-conversation rate matches its spread over replications; the naive binomial
    variance (conversations as independent) is far too small."""
    rng = np.random.default_rng(11)
    estimates, deltas, naive = [], [], []
    for _ in range(400):
        k = rng.geometric(1 / 10, 300)
        p = rng.beta(0.3 * 4, 0.7 * 4, 300)  # intra-class correlation 1/(1+4) = 0.2
        y = rng.binomial(k, p).astype(float)
        r, v = ratio_moments(300, y.sum(), k.sum(), y @ y, k @ k.astype(float), y @ k)
        estimates.append(float(r))
        deltas.append(float(v))
        naive.append(float(r * (1 - r) / k.sum()))
    spread = np.var(estimates, ddof=1)
    assert np.mean(deltas) == pytest.approx(spread, rel=0.2)
    assert np.mean(naive) < 0.5 * spread


def test_ratio_with_one_conversation_per_unit_is_the_textbook_variance():
    x = np.asarray(binary(301, 1000))
    r, v = ratio_moments(1000, x.sum(), 1000.0, x @ x, 1000.0, x.sum())
    assert r == pytest.approx(x.mean()) and v == pytest.approx(np.var(x, ddof=1) / 1000)


def test_lower_is_better_primary_metric():
    rng = np.random.default_rng(2)
    result = analyze(
        [
            arm(1, True, latency_ms=rng.normal(1000, 100, 500)),
            arm(2, latency_ms=rng.normal(900, 100, 500)),
        ],
        AnalysisSettings(primary_metric="latency_ms", guardrails=()),
    )
    cmp = result.comparisons[0]
    assert not cmp.higher_is_better and cmp.improves and cmp.diff < 0
    assert cmp.prob_beat_control > 0.99
