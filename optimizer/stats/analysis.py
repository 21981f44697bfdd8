"""analyze(): every comparison, guardrail and the SRM check of one experiment check.

Pure: sufficient statistics per unit in, an ExperimentAnalysis out. Degenerate input (no
control, no data, zero variance, bad settings) gives results with an error code, never an
exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from optimizer.stats.bayes import expected_loss, prob_beat_control
from optimizer.stats.metrics import higher_is_better
from optimizer.stats.ratio import RatioSums
from optimizer.stats.sequential import (
    CS_TARGET_N,
    mixture_eta,
    one_sided_halfwidth,
    relative_difference,
    two_sided_halfwidth,
)
from optimizer.stats.srm import SRM_ALPHA, SRM_PRIOR_CONCENTRATION, srm_log_bayes_factor
from optimizer.stats.stratify import post_stratify
from optimizer.stats.types import (
    HARMED,
    NO_DATA,
    NON_INFERIOR,
    NOT_COMPUTABLE,
    UNDECIDED,
    AnalysisSettings,
    ArmData,
    Comparison,
    ExperimentAnalysis,
    Guardrail,
    GuardrailCheck,
    SrmCheck,
)


def alpha_per_arm(confidence: float, variant_arms: int) -> float:
    """Bonferroni: the error budget 1 - confidence split evenly over every variant arm the
    experiment has had (stopped ones included: each had its chances to be picked)."""
    return (1.0 - confidence) / max(1, variant_arms)


def contrast_stats(
    mean_c: ArrayLike,
    var_c: ArrayLike,
    n_c: ArrayLike,
    mean_t: ArrayLike,
    var_t: ArrayLike,
    n_t: ArrayLike,
    alpha: ArrayLike,
    factor: ArrayLike = 1.0,
    target_n: float = CS_TARGET_N,
) -> dict[str, Any]:
    """Vectorised core shared by analyze() and the benchmark: the contrast
    arm - factor * control of two estimates (var_*: variances of the estimates, n_*: units),
    its variance, the mixture's eta and the two- and one-sided always-valid half-widths."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        f = np.asarray(factor, dtype=float)
        diff = np.asarray(mean_t, dtype=float) - f * np.asarray(mean_c, dtype=float)
        var = np.asarray(var_t, dtype=float) + f * f * np.asarray(var_c, dtype=float)
        eta = mixture_eta(n_c, n_t, alpha, target_n)
        half = two_sided_halfwidth(var, eta, alpha)
        half1 = one_sided_halfwidth(var, eta, alpha)
    return {"diff": diff, "var": var, "eta": eta, "half": half, "half1": half1}


def _f(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def _error(control: RatioSums | None, arm: RatioSums | None) -> str | None:
    if control is None or arm is None:
        return "missing_metric"
    if control.units < 2 or arm.units < 2:
        return "too_few_units"
    return None


def _estimates(
    control: RatioSums,
    arm: RatioSums,
    control_strata: Mapping[Any, RatioSums],
    arm_strata: Mapping[Any, RatioSums],
) -> tuple[float, float, float, float, int]:
    """(mean_c, var_c, mean_t, var_t, strata): post-stratified when two or more strata
    are big enough, else the plain per-conversation means."""
    stratified = post_stratify(control_strata, arm_strata) if control_strata else None
    if stratified is not None:
        return (
            stratified.mean_control,
            stratified.var_control,
            stratified.mean_arm,
            stratified.var_arm,
            stratified.strata,
        )
    return (*control.moments(), *arm.moments(), 1)


def compare(
    arm_id: int,
    metric: str,
    control: RatioSums | None,
    arm: RatioSums | None,
    alpha: float,
    control_strata: Mapping[Any, RatioSums] | None = None,
    arm_strata: Mapping[Any, RatioSums] | None = None,
    target_n: float = CS_TARGET_N,
) -> Comparison:
    hib = higher_is_better(metric)
    level = 1.0 - alpha
    n_c = control.units if control is not None else 0
    n_t = arm.units if arm is not None else 0
    error = _error(control, arm)
    if error is not None:
        mean_c = _f(control.mean) if control is not None else None
        mean_t = _f(arm.mean) if arm is not None else None
        return Comparison(
            arm_id, metric, n_c, n_t, mean_c, mean_t, error=error, higher_is_better=hib, level=level
        )
    assert control is not None and arm is not None
    mc, vc, mt, vt, strata = _estimates(control, arm, control_strata or {}, arm_strata or {})
    s = contrast_stats(mc, vc, n_c, mt, vt, n_t, alpha, target_n=target_n)
    var = float(s["var"])
    if not (math.isfinite(var) and var > 0.0) or _f(mc) is None or _f(mt) is None:
        return Comparison(
            arm_id,
            metric,
            n_c,
            n_t,
            _f(mc),
            _f(mt),
            error="zero_variance",
            higher_is_better=hib,
            level=level,
            strata=strata,
        )
    diff, half = float(s["diff"]), float(s["half"])
    rel = rel_low = rel_high = None
    if mc != 0.0:
        r, rvar = relative_difference(mc, vc, mt, vt)
        rhalf = two_sided_halfwidth(rvar, s["eta"], alpha)
        rel, rel_low, rel_high = _f(r), _f(r - rhalf), _f(r + rhalf)
    return Comparison(
        arm_id,
        metric,
        n_c,
        n_t,
        mc,
        mt,
        diff,
        diff - half,
        diff + half,
        rel,
        rel_low,
        rel_high,
        _f(prob_beat_control(diff, var, hib)),
        _f(expected_loss(diff, var, hib)),
        None,
        higher_is_better=hib,
        level=level,
        strata=strata,
    )


def check_guardrail(
    arm_id: int,
    guardrail: Guardrail,
    control: RatioSums | None,
    arm: RatioSums | None,
    alpha: float,
    *,
    any_data: bool = True,
    cap: float | None = None,
    target_n: float = CS_TARGET_N,
) -> GuardrailCheck:
    """Non-inferiority and harm, each a one-sided always-valid test at `alpha`, on the
    margin contrast gain = sign * (arm - (1 - sign * tolerance) * control), sign = +1 when
    higher is better: the control's own uncertainty counts (factor^2 * Var(control))."""
    hib, tol = guardrail.higher_is_better, guardrail.tolerance
    no_data = GuardrailCheck(
        arm_id, guardrail.metric, NO_DATA, tol, guardrail.required, hib, level=1.0 - alpha, cap=cap
    )
    if not any_data:
        return no_data
    error = _error(control, arm)
    if error is None and not (math.isfinite(tol) and tol >= 0):
        error = "invalid_tolerance"
    if error is not None:
        return replace(no_data, status=NOT_COMPUTABLE, error=error)
    assert control is not None and arm is not None
    mc, vc = control.moments()
    mt, vt = arm.moments()
    sign = 1.0 if hib else -1.0
    factor = 1.0 - sign * tol
    s = contrast_stats(mc, vc, control.units, mt, vt, arm.units, alpha, factor, target_n)
    var, gain, half = float(s["var"]), sign * float(s["diff"]), float(s["half1"])
    relative = _f(mt / mc - 1.0) if mc else None
    measured = replace(no_data, mean_control=_f(mc), mean_arm=_f(mt), relative=relative)
    if not (math.isfinite(var) and var >= 0.0 and math.isfinite(gain)):
        return replace(measured, status=NOT_COMPUTABLE, error="zero_variance")
    # Zero variance (every unit reported the same value): the gain is known exactly.
    low, high = (gain, gain) if var == 0.0 else (gain - half, gain + half)
    status = NON_INFERIOR if low > 0 else HARMED if high < 0 else UNDECIDED
    return replace(measured, status=status, gain_low=low, gain_high=high)


def check_srm(
    arms: Sequence[ArmData],
    alpha: float = SRM_ALPHA,
    concentration: float = SRM_PRIOR_CONCENTRATION,
) -> SrmCheck:
    """Units per assignment slice against the configured weights, every arm included: a
    stopped arm's slice still receives its share of units (served control), so the test
    neither goes blind nor raises a false alarm after a stop."""
    threshold = 1.0 / alpha
    if len(arms) < 2:
        return SrmCheck(False, None, "no_arms", threshold=threshold)
    weights = [float(a.weight) for a in arms]
    ids = tuple(a.arm_id for a in arms)
    counts = tuple(int(a.units) for a in arms)
    if not all(math.isfinite(w) and w > 0 for w in weights) or any(c < 0 for c in counts):
        return SrmCheck(
            False, None, "invalid_weights", threshold=threshold, arm_ids=ids, counts=counts
        )
    shares = np.asarray(weights) / sum(weights)
    log_bf = float(srm_log_bayes_factor(np.asarray(counts, dtype=float), shares, concentration))
    return SrmCheck(
        log_bf >= math.log(threshold),
        math.exp(min(log_bf, 700.0)),
        None,
        log_bayes_factor=log_bf,
        threshold=threshold,
        arm_ids=ids,
        counts=counts,
        expected_shares=tuple(float(p) for p in shares),
    )


def analyze(
    arms: Sequence[ArmData], settings: AnalysisSettings, caps: Mapping[str, float] | None = None
) -> ExperimentAnalysis:
    """`caps`: the metric caps the sums were computed with (recorded in the checks)."""
    controls = [a for a in arms if a.is_control]
    variants = [a for a in arms if not a.is_control and a.active]
    ever = sum(1 for a in arms if not a.is_control)
    confidence = settings.confidence
    valid_conf = isinstance(confidence, int | float) and 0.0 < confidence < 1.0
    alpha = alpha_per_arm(confidence, ever) if valid_conf else None
    control = controls[0] if len(controls) == 1 else None
    comparisons: list[Comparison] = []
    checks: list[GuardrailCheck] = []
    for arm in variants:
        if alpha is None or control is None:
            code = "invalid_confidence" if alpha is None else "no_control"
            comparisons.append(_failed(arm.arm_id, settings.primary_metric, code))
            checks.extend(
                GuardrailCheck(
                    arm.arm_id,
                    g.metric,
                    NOT_COMPUTABLE,
                    g.tolerance,
                    g.required,
                    g.higher_is_better,
                    error=code,
                )
                for g in settings.guardrails
            )
            continue
        comparisons.append(_primary(control, arm, settings, alpha))
        checks.extend(
            check_guardrail(
                arm.arm_id,
                g,
                _get(control.metrics, g.metric),
                _get(arm.metrics, g.metric),
                alpha,
                any_data=any(_get(a.metrics, g.metric) for a in arms),
                cap=(caps or {}).get(g.metric),
            )
            for g in settings.guardrails
        )
    return ExperimentAnalysis(
        tuple(comparisons),
        tuple(checks),
        check_srm(arms),
        confidence=float(confidence) if valid_conf else float("nan"),
        alpha_per_arm=alpha,
    )


def _primary(
    control: ArmData, arm: ArmData, settings: AnalysisSettings, alpha: float
) -> Comparison:
    metric = settings.primary_metric
    strata = settings.stratify and bool(control.strata) and bool(arm.strata)
    return compare(
        arm.arm_id,
        metric,
        _get(control.metrics, metric),
        _get(arm.metrics, metric),
        alpha,
        control.strata if strata else None,
        arm.strata if strata else None,
    )


def _failed(arm_id: int, metric: str, code: str) -> Comparison:
    return Comparison(
        arm_id, metric, 0, 0, None, None, error=code, higher_is_better=higher_is_better(metric)
    )


def _get(metrics: Mapping[str, RatioSums] | None, name: str) -> RatioSums | None:
    if not metrics:
        return None
    m = metrics.get(name)
    if m is None or m.units <= 0 or m.sum_m <= 0:
        return None
    return m
