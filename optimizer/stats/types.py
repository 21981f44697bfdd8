"""The statistics' inputs and outputs: sufficient statistics in, frozen dataclasses out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METRICS = ("success", "rating", "latency_ms", "cost_usd")
# Metrics where a smaller value is an improvement. Every other metric: larger is better.
LOWER_IS_BETTER = frozenset({"latency_ms", "cost_usd"})


# Plausible range of one conversation's value, for the metrics that have no natural bound:
# ingest refuses values outside it, and checks treat stored values outside it as missing.
VALUE_BOUNDS: dict[str, tuple[float, float]] = {
    "latency_ms": (0.0, 86_400_000.0),  # one day
    "cost_usd": (0.0, 1_000.0),
}
# Heavy-tailed metrics: capped in every check (optimizer.experiments.caps).
HEAVY_TAILED = ("latency_ms", "cost_usd")


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class RatioSums:
    """One metric in one arm, summed over the units (users) that reported it.

    For unit i, y_i is the sum of its conversations' values and m_i how many of its
    conversations reported the metric. The per-conversation mean sum(y)/sum(m) is a ratio
    of unit sums; these are its sufficient statistics (see optimizer.stats.ratio).
    """

    units: int
    sum_y: float
    sum_m: float
    sum_yy: float
    sum_mm: float
    sum_ym: float

    def __add__(self, other: RatioSums) -> RatioSums:
        """Sums over disjoint sets of units add up."""
        return RatioSums(self.units + other.units, self.sum_y + other.sum_y,
                         self.sum_m + other.sum_m, self.sum_yy + other.sum_yy,
                         self.sum_mm + other.sum_mm, self.sum_ym + other.sum_ym)

    @property
    def observations(self) -> int:
        """Conversations that reported the metric."""
        return int(round(self.sum_m))


EMPTY_RATIO = RatioSums(0, 0.0, 0.0, 0.0, 0.0, 0.0)


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


DEFAULT_GUARDRAILS = (Guardrail("rating", True, 0.05), Guardrail("cost_usd", False, 0.10),
                      Guardrail("latency_ms", False, 0.10))


@dataclass(frozen=True)
class AnalysisSettings:
    primary_metric: str = "success"
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
    diff: float | None
    diff_low: float | None
    diff_high: float | None
    relative: float | None
    relative_low: float | None
    relative_high: float | None
    prob_beat_control: float | None
    expected_loss: float | None
    error: str | None
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
    "non_inferior", "harmed", "undecided", "no_data", "not_computable")


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become None."""
        return json_safe(dataclasses.asdict(self))


def json_safe(value: Any) -> Any:
    """NaN and infinities become None, recursively: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
