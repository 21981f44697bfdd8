"""Statistics for experiments: pure functions of sufficient statistics (numpy/scipy only).

analyze() gives, per variant arm, an always-valid (confidence-sequence) interval for the
difference from control on the primary metric, absolute and relative, Bonferroni-corrected
across arms; one-sided sequential guardrail tests of harm; an anytime-valid SRM test; and a
Bayesian probability to beat control with its expected loss, for people to read.
"""

from optimizer.stats.analysis import (
    alpha_per_arm,
    analyze,
    check_guardrail,
    check_srm,
    compare,
    difference_stats,
)
from optimizer.stats.sequential import CS_TARGET_N
from optimizer.stats.srm import SRM_ALPHA, SRM_PRIOR_CONCENTRATION
from optimizer.stats.types import (
    DEFAULT_GUARDRAILS,
    LOWER_IS_BETTER,
    METRICS,
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

__all__ = [
    "CS_TARGET_N", "DEFAULT_GUARDRAILS", "LOWER_IS_BETTER", "METRICS", "SRM_ALPHA",
    "SRM_PRIOR_CONCENTRATION", "AnalysisSettings", "ArmData", "Comparison",
    "ExperimentAnalysis", "Guardrail", "GuardrailCheck", "MetricSums", "SrmCheck",
    "alpha_per_arm", "analyze", "check_guardrail", "check_srm", "compare",
    "difference_stats", "higher_is_better",
]
