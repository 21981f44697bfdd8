"""analyze() against independent reference values, and its degenerate inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from benchmarks.aa_ab_simulation import PROMOTE, first_event, simulate, vector_decisions
from optimizer.stats import (
    AnalysisSettings,
    ArmData,
    Guardrail,
    MetricSums,
    analyze,
)
from optimizer.stats.sequential import mixture_eta, two_sided_halfwidth


def sums(values) -> MetricSums:
    x = np.asarray(values, dtype=float)
    return MetricSums(len(x), float(x.sum()), float((x * x).sum()))


def arm(arm_id, control=False, conversations=None, weight=1.0, active=True, **metrics):
    ms = {k: sums(v) if not isinstance(v, MetricSums) else v for k, v in metrics.items()}
    n = conversations if conversations is not None else max([m.n for m in ms.values()] or [0])
    return ArmData(arm_id, control, weight, active, n, ms)


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
    rel_var = (np.var(t, ddof=1) / len(t)) / m_c**2 \
        + m_t**2 * (np.var(c, ddof=1) / len(c)) / m_c**4
    rel_half = two_sided_halfwidth(rel_var, mixture_eta(1000, 1010, 0.1), 0.1)
    assert cmp.relative == pytest.approx(m_t / m_c - 1)
    assert cmp.relative_low == pytest.approx(m_t / m_c - 1 - rel_half)
    assert cmp.prob_beat_control == pytest.approx(stats.norm.cdf(d / math.sqrt(v)))
    loss = integrate.quad(lambda x: max(0.0, -x) * stats.norm.pdf(x, d, math.sqrt(v)),
                          d - 12 * math.sqrt(v), d + 12 * math.sqrt(v), points=[0.0])[0]
    assert cmp.expected_loss == pytest.approx(loss, rel=1e-5, abs=1e-12)
    # Beta posteriors (uniform priors) agree with the normal approximation at this size
    rng = np.random.default_rng(0)
    beta = (rng.beta(1 + 352, 1 + 658, 200_000) > rng.beta(1 + 301, 1 + 699, 200_000)).mean()
    assert cmp.prob_beat_control == pytest.approx(beta, abs=0.01)
    json.dumps(result.to_dict(), allow_nan=False)


def test_bonferroni_across_variant_arms_and_inactive_arms_ignored():
    c = binary(300, 1000)
    arms = [arm(1, True, success=c), arm(2, success=binary(330, 1000)),
            arm(3, success=binary(310, 1000)), arm(4, active=False, success=binary(1, 10))]
    result = analyze(arms, AnalysisSettings(confidence=0.9))
    assert [x.arm_id for x in result.comparisons] == [2, 3]
    assert result.alpha_per_arm == pytest.approx(0.05)
    assert all(x.level == pytest.approx(0.95) for x in result.comparisons)
    v = np.var(c, ddof=1) / 1000 + np.var(binary(330, 1000), ddof=1) / 1000
    half = two_sided_halfwidth(v, mixture_eta(1000, 1000, 0.05), 0.05)
    assert result.comparisons[0].diff_high - result.comparisons[0].diff == pytest.approx(half)


@pytest.mark.parametrize("control,variant,code", [
    ({}, {}, "missing_metric"),
    ({"success": MetricSums(0, 0.0, 0.0)}, {"success": binary(3, 10)}, "missing_metric"),
    ({"success": binary(1, 1)}, {"success": binary(3, 10)}, "too_few_observations"),
    ({"success": binary(10, 10)}, {"success": binary(20, 20)}, "zero_variance"),
    ({"success": binary(0, 50)}, {"success": binary(0, 60)}, "zero_variance"),
])
def test_degenerate_primary_inputs_give_error_codes(control, variant, code):
    result = analyze([arm(1, True, 10, **control), arm(2, conversations=10, **variant)],
                     AnalysisSettings())
    (cmp,) = result.comparisons
    assert cmp.error == code and cmp.diff_low is None and not cmp.improves and not cmp.hurts
    assert all(g.error is not None and not g.harmed for g in result.guardrails)
    json.dumps(result.to_dict(), allow_nan=False)


def test_no_control_bad_confidence_and_empty_experiment():
    no_control = analyze([arm(1, success=binary(3, 10)), arm(2, success=binary(4, 10))],
                         AnalysisSettings())
    assert {c.error for c in no_control.comparisons} == {"no_control"}
    bad = analyze([arm(1, True, success=binary(3, 10)), arm(2, success=binary(4, 10))],
                  AnalysisSettings(confidence=1.5))
    assert bad.comparisons[0].error == "invalid_confidence"
    json.dumps(bad.to_dict(), allow_nan=False)
    empty = analyze([], AnalysisSettings())
    assert empty.comparisons == () and empty.srm.error == "no_arms"
    zero_control = analyze([arm(1, True, rating=[0.0, 0.0, 0.0]), arm(2, rating=[1.0, 2, 0])],
                           AnalysisSettings(primary_metric="rating"))
    assert zero_control.comparisons[0].error is None
    assert zero_control.comparisons[0].relative is None  # relative to a zero mean


def test_guardrails_one_sided_harm_with_tolerance():
    rng = np.random.default_rng(5)
    n = 4000
    control = arm(1, True, success=binary(1200, n), rating=rng.normal(4.0, 0.8, n),
                  latency_ms=rng.normal(1000, 200, n), cost_usd=rng.normal(0.010, 0.002, n))
    slow = arm(2, success=binary(1300, n), rating=rng.normal(4.0, 0.8, n),
               latency_ms=rng.normal(1300, 200, n), cost_usd=rng.normal(0.0105, 0.002, n))
    result = analyze([control, slow], AnalysisSettings())
    checks = {g.metric: g for g in result.guardrails}
    assert checks["latency_ms"].harmed  # +30% against a 10% tolerance
    assert checks["latency_ms"].bound > checks["latency_ms"].threshold > 0
    assert not checks["cost_usd"].harmed  # +5% is inside the 10% tolerance
    assert not checks["rating"].harmed
    worse = arm(3, success=binary(1300, n), rating=rng.normal(3.7, 0.8, n))
    result = analyze([control, worse], AnalysisSettings())
    rating = next(g for g in result.guardrails if g.metric == "rating")
    assert rating.harmed and rating.bound < rating.threshold == 0.0
    assert rating.level == pytest.approx(0.9)
    # one-sided: the upper bound is nearer the estimate than the two-sided interval's
    two_sided = analyze([control, worse], AnalysisSettings(primary_metric="rating"))
    assert rating.bound < two_sided.comparisons[0].diff_high
    lenient = analyze([control, slow], AnalysisSettings(
        guardrails=(Guardrail("latency_ms", False, 0.5),)))
    assert not lenient.guardrails[0].harmed


def test_lower_is_better_primary_metric():
    rng = np.random.default_rng(2)
    result = analyze([arm(1, True, latency_ms=rng.normal(1000, 100, 500)),
                      arm(2, latency_ms=rng.normal(900, 100, 500))],
                     AnalysisSettings(primary_metric="latency_ms", guardrails=()))
    cmp = result.comparisons[0]
    assert not cmp.higher_is_better and cmp.improves and cmp.diff < 0
    assert cmp.prob_beat_control > 0.99


def test_small_aa_simulation_rarely_promotes():
    """300 seeded A/A experiments checked every 15 minutes for 14 days."""
    paths = simulate(np.random.default_rng(99), 300, 1344, 0.0)
    code, _ = first_event(vector_decisions(paths))
    assert (code == PROMOTE).mean() <= 0.10
