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


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class MetricSums:
    """n non-null values of one metric in one arm, their sum and their sum of squares."""

    n: int
    total: float
    total_sq: float


@dataclass(frozen=True)
class ArmData:
    arm_id: int
    is_control: bool
    weight: float
    active: bool
    conversations: int
    metrics: Mapping[str, MetricSums]


@dataclass(frozen=True)
class Guardrail:
    """`tolerance` is relative to the control's mean: 0.10 allows 10% worse."""

    metric: str
    higher_is_better: bool
    tolerance: float


DEFAULT_GUARDRAILS = (Guardrail("rating", True, 0.0), Guardrail("cost_usd", False, 0.10),
                      Guardrail("latency_ms", False, 0.10))


@dataclass(frozen=True)
class AnalysisSettings:
    primary_metric: str = "success"
    confidence: float = 0.90
    guardrails: tuple[Guardrail, ...] = DEFAULT_GUARDRAILS


@dataclass(frozen=True)
class Comparison:
    """Arm minus control on one metric, with an always-valid interval at `level`
    (the confidence after the Bonferroni split across variant arms).

    `relative` is arm/control - 1 (delta method). `prob_beat_control` and `expected_loss`
    are a normal-approximation Bayesian reading for people; decisions never use them.
    `error` is None or a code: no_control, missing_metric, too_few_observations,
    zero_variance, invalid_confidence. Fields that cannot be computed are None.
    """

    arm_id: int
    metric: str
    n_control: int
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


@dataclass(frozen=True)
class GuardrailCheck:
    """`estimate` is arm minus control; `bound` the one-sided always-valid bound on the
    side that shows harm (upper bound when higher is better, lower bound otherwise);
    `threshold` the harm limit (-tolerance*|control| or +tolerance*|control|).
    harmed: the bound is beyond the threshold. error: as in Comparison (harmed is False)."""

    arm_id: int
    metric: str
    harmed: bool
    estimate: float | None
    bound: float | None
    error: str | None
    threshold: float | None = None
    higher_is_better: bool = True
    level: float | None = None


@dataclass(frozen=True)
class SrmCheck:
    """Sequential sample-ratio-mismatch test: Dirichlet-multinomial Bayes factor (an
    e-value) of the arms' conversation counts against the configured weights.
    detected: bayes_factor >= threshold (1/alpha). error: None, no_arms, invalid_weights,
    not_testable_after_arm_stop."""

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
        return _json_safe(dataclasses.asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
