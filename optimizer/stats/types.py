"""The statistics' inputs and outputs: sufficient statistics in, frozen dataclasses out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optimizer.stats.finite import finite_only
from optimizer.stats.metrics import DEFAULT_PRIMARY, REGISTRY
from optimizer.stats.ratio import RatioSums


@dataclass(frozen=True)
class ArmData:
    """One arm as a check sees it.

    `units`: units whose assignment slice is this arm (what the sample-ratio test counts;
    a stopped arm's slice keeps counting although its units are served control).
    `conversations` and `metrics`: only conversations served this arm's own version to
    units of its slice. `strata`: the primary metric per unit segment (post-stratification).
    """

    arm_id: int
    version: int
    is_control: bool
    weight: float
    active: bool
    units: int
    conversations: int
    metrics: Mapping[str, RatioSums]
    strata: Mapping[str | None, RatioSums] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Guardrail:
    """Non-inferiority gate: the arm may be at most `tolerance` (relative to the control's
    mean; 0.10 allows 10% worse) worse than control. `required`: an experiment without any
    data for the metric cannot promote. `cap`: values above it count as the cap (None: the
    cap is fixed from the control's early data for heavy-tailed metrics)."""

    metric: str
    higher_is_better: bool
    tolerance: float
    required: bool = False
    cap: float | None = None


DEFAULT_GUARDRAILS = tuple(
    Guardrail(m.name, m.higher_is_better, m.tolerance)
    for m in REGISTRY
    if m.guardrail and m.tolerance is not None
)


@dataclass(frozen=True)
class AnalysisSettings:
    primary_metric: str = DEFAULT_PRIMARY
    confidence: float = 0.90
    guardrails: tuple[Guardrail, ...] = DEFAULT_GUARDRAILS
    stratify: bool = True


@dataclass(frozen=True)
class Comparison:
    """Arm minus control on one metric (per-conversation mean over units), with an
    always-valid interval at `level` (the confidence after the Bonferroni split across
    every variant arm the experiment has had).

    `relative` is arm/control - 1 (delta method). `prob_beat_control` and `expected_loss`
    are a normal-approximation Bayesian reading for people; decisions never use them.
    `strata`: how many segment strata the estimate is post-stratified over (1: none).
    `error` is None or a code: no_control, missing_metric, too_few_units, zero_variance,
    invalid_confidence. Fields that cannot be computed are None.
    """

    arm_id: int
    metric: str
    n_control: int  # units
    n_arm: int
    mean_control: float | None
    mean_arm: float | None
    diff: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    relative: float | None = None
    relative_low: float | None = None
    relative_high: float | None = None
    prob_beat_control: float | None = None
    expected_loss: float | None = None
    error: str | None = None
    higher_is_better: bool = True
    level: float | None = None
    strata: int = 1

    @property
    def improves(self) -> bool:
        """The whole interval lies on the better side of zero."""
        if self.error is not None or self.diff_low is None or self.diff_high is None:
            return False
        return self.diff_low > 0 if self.higher_is_better else self.diff_high < 0

    @property
    def hurts(self) -> bool:
        """The whole interval lies on the worse side of zero."""
        if self.error is not None or self.diff_low is None or self.diff_high is None:
            return False
        return self.diff_high < 0 if self.higher_is_better else self.diff_low > 0


# GuardrailCheck.status values
NON_INFERIOR, HARMED, UNDECIDED, NO_DATA, NOT_COMPUTABLE = (
    "non_inferior",
    "harmed",
    "undecided",
    "no_data",
    "not_computable",
)


@dataclass(frozen=True)
class GuardrailCheck:
    """One guardrail of one arm, tested on the margin contrast
    gain = +-(arm - (1 -+ tolerance) * control), oriented so that a positive gain means
    "within tolerance". With a one-sided always-valid bound on each side at `level`:
    non_inferior when the lower bound of the gain is above zero; harmed when its upper
    bound is below zero (worse than the tolerance allows); undecided otherwise; no_data when
    no arm reported the metric; not_computable (with `error`) when only some did or the
    data cannot give a variance.

    `relative` is arm/control - 1; `relative_low`/`relative_high` bound it (the margin's
    one-sided bounds translated back to the arm/control scale)."""

    arm_id: int
    metric: str
    status: str
    tolerance: float
    required: bool
    higher_is_better: bool = True
    mean_control: float | None = None
    mean_arm: float | None = None
    relative: float | None = None
    gain_low: float | None = None
    gain_high: float | None = None
    error: str | None = None
    level: float | None = None
    cap: float | None = None

    @property
    def harmed(self) -> bool:
        return self.status == HARMED

    @property
    def passes(self) -> bool:
        """Does not block promotion: shown within tolerance, or absent and not required."""
        return self.status == NON_INFERIOR or (self.status == NO_DATA and not self.required)


@dataclass(frozen=True)
class SrmCheck:
    """Sequential sample-ratio-mismatch test: Dirichlet-multinomial Bayes factor (an
    e-value) of the arms' unit counts (by assignment slice) against the configured
    weights. detected: bayes_factor >= threshold (1/alpha). error: None, no_arms,
    invalid_weights."""

    detected: bool
    bayes_factor: float | None
    error: str | None
    log_bayes_factor: float | None = None
    threshold: float | None = None
    arm_ids: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    expected_shares: tuple[float, ...] = ()


@dataclass(frozen=True)
class ExperimentAnalysis:
    comparisons: tuple[Comparison, ...]
    guardrails: tuple[GuardrailCheck, ...]
    srm: SrmCheck
    confidence: float = 0.90
    alpha_per_arm: float | None = None

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        """JSON-safe (NaN and infinities become None), with `extra` keys beside the fields:
        cleaned once, together."""
        clean: dict[str, Any] = finite_only({**dataclasses.asdict(self), **extra})
        return clean
