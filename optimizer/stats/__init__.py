"""Statistics for experiments: pure functions of sufficient statistics (numpy/scipy only).

analyze() gives, per variant arm, an always-valid (confidence-sequence) interval for the
difference from control on the primary metric (a per-conversation mean over randomised
units, post-stratified by segment), absolute and relative, Bonferroni-corrected across
every variant arm the experiment has had; one-sided sequential non-inferiority and harm
tests per guardrail; an anytime-valid SRM test on units; and a Bayesian probability to
beat control with its expected loss, for people to read. Every metric is defined once,
in the registry (optimizer.stats.metrics).
"""

from optimizer.stats.analysis import (
    alpha_per_arm,
    analyze,
    check_guardrail,
    check_srm,
    compare,
    contrast_stats,
)
from optimizer.stats.finite import finite_only
from optimizer.stats.metrics import REGISTRY, Metric, higher_is_better, metric
from optimizer.stats.ratio import EMPTY_RATIO, RatioSums, ratio_moments
from optimizer.stats.sequential import CS_TARGET_N
from optimizer.stats.srm import SRM_ALPHA, SRM_PRIOR_CONCENTRATION
from optimizer.stats.stratify import MIN_STRATUM_UNITS, post_stratify
from optimizer.stats.types import (
    DEFAULT_GUARDRAILS,
    AnalysisSettings,
    ArmData,
    Comparison,
    ExperimentAnalysis,
    Guardrail,
    GuardrailCheck,
    SrmCheck,
)

__all__ = [
    "CS_TARGET_N",
    "DEFAULT_GUARDRAILS",
    "EMPTY_RATIO",
    "MIN_STRATUM_UNITS",
    "REGISTRY",
    "SRM_ALPHA",
    "SRM_PRIOR_CONCENTRATION",
    "AnalysisSettings",
    "ArmData",
    "Comparison",
    "ExperimentAnalysis",
    "Guardrail",
    "GuardrailCheck",
    "Metric",
    "RatioSums",
    "SrmCheck",
    "alpha_per_arm",
    "analyze",
    "check_guardrail",
    "check_srm",
    "compare",
    "contrast_stats",
    "finite_only",
    "higher_is_better",
    "metric",
    "post_stratify",
    "ratio_moments",
]
