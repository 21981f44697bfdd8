"""analyze(): every comparison, guardrail and the SRM check of one experiment check.

Pure: sufficient statistics in, an ExperimentAnalysis out. Degenerate input (no control,
no data, zero variance, bad settings) gives results with an error code, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optimizer.stats.bayes import expected_loss, prob_beat_control
from optimizer.stats.sequential import (
    CS_TARGET_N,
    difference,
    mixture_eta,
    moments,
    one_sided_halfwidth,
    relative_difference,
    two_sided_halfwidth,
)
from optimizer.stats.srm import SRM_ALPHA, SRM_PRIOR_CONCENTRATION, srm_log_bayes_factor
from optimizer.stats.types import (
    AnalysisSettings,
    ArmData,
    Comparison,
    ExperimentAnalysis,
    Guardrail,
    GuardrailCheck,
    MetricSums,
    SrmCheck,
    higher_is_better,
)


def alpha_per_arm(confidence: float, variant_arms: int) -> float:
    """Bonferroni: the error budget 1 - confidence split evenly over the variant arms."""
    return (1.0 - confidence) / max(1, variant_arms)


def difference_stats(n_c, total_c, sq_c, n_t, total_t, sq_t, alpha,
                     target_n: float = CS_TARGET_N) -> dict[str, Any]:
    """Vectorised core shared by analyze() and the benchmark: means, variances, the
    difference arm - control, its variance, the mixture's eta and the two-sided
    always-valid half-width at `alpha`."""
    mean_c, var_c = moments(n_c, total_c, sq_c)
    mean_t, var_t = moments(n_t, total_t, sq_t)
    n_c = np.asarray(n_c, dtype=float)
    n_t = np.asarray(n_t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff, var = difference(mean_c, var_c, n_c, mean_t, var_t, n_t)
        eta = mixture_eta(n_c, n_t, alpha, target_n)
        half = two_sided_halfwidth(var, eta, alpha)
    return {"mean_c": mean_c, "var_c": var_c, "mean_t": mean_t, "var_t": var_t,
            "n_c": n_c, "n_t": n_t, "diff": diff, "var": var, "eta": eta, "half": half}


def _f(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def _error(control: MetricSums | None, arm: MetricSums | None) -> str | None:
    if control is None or arm is None:
        return "missing_metric"
    if control.n < 2 or arm.n < 2:
        return "too_few_observations"
    return None


def compare(arm_id: int, metric: str, control: MetricSums | None, arm: MetricSums | None,
            alpha: float, target_n: float = CS_TARGET_N) -> Comparison:
    hib = higher_is_better(metric)
    level = 1.0 - alpha
    n_c = control.n if control is not None else 0
    n_t = arm.n if arm is not None else 0
    error = _error(control, arm)
    empty = dict(diff=None, diff_low=None, diff_high=None, relative=None, relative_low=None,
                 relative_high=None, prob_beat_control=None, expected_loss=None)
    if error is not None:
        mean_c = control.total / control.n if control is not None and control.n else None
        mean_t = arm.total / arm.n if arm is not None and arm.n else None
        return Comparison(arm_id, metric, n_c, n_t, mean_c, mean_t, **empty, error=error,
                          higher_is_better=hib, level=level)
    s = difference_stats(control.n, control.total, control.total_sq,
                         arm.n, arm.total, arm.total_sq, alpha, target_n)
    mean_c, mean_t = _f(s["mean_c"]), _f(s["mean_t"])
    var = float(s["var"])
    if not (math.isfinite(var) and var > 0.0) or mean_c is None or mean_t is None:
        return Comparison(arm_id, metric, n_c, n_t, mean_c, mean_t, **empty,
                          error="zero_variance", higher_is_better=hib, level=level)
    diff, half = float(s["diff"]), float(s["half"])
    rel = rel_low = rel_high = None
    if mean_c != 0.0:
        r, rvar = relative_difference(s["mean_c"], s["var_c"], s["n_c"], s["mean_t"],
                                      s["var_t"], s["n_t"])
        rhalf = two_sided_halfwidth(rvar, s["eta"], alpha)
        rel, rel_low, rel_high = _f(r), _f(r - rhalf), _f(r + rhalf)
    return Comparison(
        arm_id, metric, n_c, n_t, mean_c, mean_t, diff, diff - half, diff + half,
        rel, rel_low, rel_high,
        _f(prob_beat_control(diff, var, hib)), _f(expected_loss(diff, var, hib)), None,
        higher_is_better=hib, level=level)


def check_guardrail(arm_id: int, guardrail: Guardrail, control: MetricSums | None,
                    arm: MetricSums | None, alpha: float,
                    target_n: float = CS_TARGET_N) -> GuardrailCheck:
    """One-sided sequential test of harm at `alpha` (not split over two sides)."""
    hib = guardrail.higher_is_better
    level = 1.0 - alpha
    error = _error(control, arm)
    if error is None and not (math.isfinite(guardrail.tolerance) and guardrail.tolerance >= 0):
        error = "invalid_tolerance"
    if error is not None:
        return GuardrailCheck(arm_id, guardrail.metric, False, None, None, error,
                              higher_is_better=hib, level=level)
    s = difference_stats(control.n, control.total, control.total_sq,
                         arm.n, arm.total, arm.total_sq, alpha, target_n)
    var, diff, mean_c = float(s["var"]), _f(s["diff"]), _f(s["mean_c"])
    if not (math.isfinite(var) and var > 0.0) or diff is None or mean_c is None:
        return GuardrailCheck(arm_id, guardrail.metric, False, diff, None, "zero_variance",
                              higher_is_better=hib, level=level)
    half = float(one_sided_halfwidth(var, s["eta"], alpha))
    limit = guardrail.tolerance * abs(mean_c)
    if hib:
        bound, threshold = diff + half, -limit
        harmed = bound < threshold
    else:
        bound, threshold = diff - half, limit
        harmed = bound > threshold
    return GuardrailCheck(arm_id, guardrail.metric, bool(harmed), diff, bound, None,
                          threshold=threshold, higher_is_better=hib, level=level)


def check_srm(arms: Sequence[ArmData], alpha: float = SRM_ALPHA,
              concentration: float = SRM_PRIOR_CONCENTRATION) -> SrmCheck:
    """All arms against their weights while every arm is active. Once an arm is stopped its
    traffic goes to control, so only the remaining variant arms keep their ratio: they are
    tested among themselves (when there are two or more)."""
    threshold = 1.0 / alpha
    if all(a.active for a in arms):
        tested = list(arms)
    else:
        tested = [a for a in arms if a.active and not a.is_control]
        if len(tested) < 2:
            return SrmCheck(False, None, "not_testable_after_arm_stop", threshold=threshold)
    if len(tested) < 2:
        return SrmCheck(False, None, "no_arms", threshold=threshold)
    weights = [float(a.weight) for a in tested]
    ids = tuple(a.arm_id for a in tested)
    counts = tuple(int(a.conversations) for a in tested)
    if not all(math.isfinite(w) and w > 0 for w in weights) or any(c < 0 for c in counts):
        return SrmCheck(False, None, "invalid_weights", threshold=threshold, arm_ids=ids,
                        counts=counts)
    shares = np.asarray(weights) / sum(weights)
    log_bf = float(srm_log_bayes_factor(np.asarray(counts, dtype=float), shares,
                                        concentration))
    return SrmCheck(log_bf >= math.log(threshold), math.exp(min(log_bf, 700.0)), None,
                    log_bayes_factor=log_bf, threshold=threshold, arm_ids=ids,
                    counts=counts, expected_shares=tuple(float(p) for p in shares))


def analyze(arms: Sequence[ArmData], settings: AnalysisSettings) -> ExperimentAnalysis:
    controls = [a for a in arms if a.is_control]
    variants = [a for a in arms if not a.is_control and a.active]
    confidence = settings.confidence
    srm = check_srm(arms)
    valid_conf = isinstance(confidence, int | float) and 0.0 < confidence < 1.0
    alpha = alpha_per_arm(confidence, len(variants)) if valid_conf else None
    control = controls[0] if len(controls) == 1 else None
    comparisons: list[Comparison] = []
    checks: list[GuardrailCheck] = []
    for arm in variants:
        metric = settings.primary_metric
        if alpha is None or control is None:
            code = "invalid_confidence" if alpha is None else "no_control"
            comparisons.append(Comparison(arm.arm_id, metric, 0, 0, None, None, None, None,
                                          None, None, None, None, None, None, code,
                                          higher_is_better=higher_is_better(metric)))
            checks.extend(GuardrailCheck(arm.arm_id, g.metric, False, None, None, code,
                                         higher_is_better=g.higher_is_better)
                          for g in settings.guardrails)
            continue
        comparisons.append(compare(arm.arm_id, metric, _get(control.metrics, metric),
                                   _get(arm.metrics, metric), alpha))
        checks.extend(check_guardrail(arm.arm_id, g, _get(control.metrics, g.metric),
                                      _get(arm.metrics, g.metric), alpha)
                      for g in settings.guardrails)
    return ExperimentAnalysis(tuple(comparisons), tuple(checks), srm,
                              confidence=float(confidence) if valid_conf else float("nan"),
                              alpha_per_arm=alpha)


def _get(metrics: Mapping[str, MetricSums] | None, name: str) -> MetricSums | None:
    if not metrics:
        return None
    m = metrics.get(name)
    if m is None or m.n <= 0:
        return None
    return m
