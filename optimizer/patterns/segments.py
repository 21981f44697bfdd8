"""The tests of one pattern-analysis run and what counts as a finding worth acting on. Pure.

For every value of every dimension (the `segment` column, each tag) and each window (last
24 hours, last 7 days), the active version's conversations inside the group are compared
with the rest of its conversations in the same window: success rate by the two-proportion
z test, mean rating by Welch's t test. The regression check compares the last 24 hours
with the 6 days before. Every test of the run forms one family whose false discovery rate
is held at `Rules.fdr` by Benjamini-Hochberg.

A finding is actionable when it is BH-significant, the group is worse than the rest, the
size of the gap is at least `Rules.min_effect` and the group has at least
`Rules.min_conversations` observations of the metric. The effect is on one scale for both
metrics: a success-rate difference as is, a rating difference divided by the range of the
1-5 scale (4 points), so 0.05 means five points of success rate or a fifth of a star.

A group enters the family only with MIN_GROUP_N observations on both sides: below that the
normal approximations behind both tests say little, and leaving such groups out (a choice
made on counts alone, which say nothing about the outcome under the null) keeps BH valid
without spending its power on tests that could never be acted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optimizer.patterns.significance import (
    Significance,
    benjamini_hochberg,
    two_proportion_z,
    welch_t,
)
from optimizer.stats import MetricSums

METRICS = ("success", "rating")
WINDOWS = ("24h", "7d")
REGRESSION_WINDOW = "24h_vs_prior_6d"
WINDOW_HOURS = {"24h": 24, "7d": 168}
RATING_RANGE = 4.0
MIN_GROUP_N = 10


@dataclass(frozen=True)
class WindowSums:
    """One group's conversations in one window, with both metrics' sufficient statistics."""

    conversations: int
    success: MetricSums
    rating: MetricSums

    def metric(self, name: str) -> MetricSums:
        return self.success if name == "success" else self.rating

    def minus(self, other: WindowSums) -> WindowSums:
        return WindowSums(self.conversations - other.conversations,
                          _minus(self.success, other.success), _minus(self.rating, other.rating))


EMPTY = WindowSums(0, MetricSums(0, 0.0, 0.0), MetricSums(0, 0.0, 0.0))


def _minus(a: MetricSums, b: MetricSums) -> MetricSums:
    return MetricSums(a.n - b.n, a.total - b.total, a.total_sq - b.total_sq)


@dataclass(frozen=True)
class GroupSums:
    dimension: str                       # "segment" or "tag"
    value: str
    windows: Mapping[str, WindowSums]    # by window name: "24h", "7d"


@dataclass(frozen=True)
class Rules:
    fdr: float
    min_effect: float
    min_conversations: int


@dataclass(frozen=True)
class GroupTest:
    kind: str                 # "segment" or "regression"
    dimension: str | None     # "segment", "tag"; None for a regression
    value: str | None
    metric: str               # "success" or "rating"
    window: str               # "24h", "7d" or REGRESSION_WINDOW
    conversations: int        # conversations inside the group in the window
    result: Significance


@dataclass(frozen=True)
class Finding:
    test: GroupTest
    q_value: float | None
    significant: bool
    worse: bool
    effect: float | None      # normalised (see the module docstring); inside minus outside
    actionable: bool
    reasons: tuple[str, ...]  # why it is not actionable; empty when it is

    @property
    def reportable(self) -> bool:
        """Worth storing: a significant gap on the bad side (a better group needs no fix)."""
        return self.significant and self.worse


def run_test(metric: str, inside: MetricSums, outside: MetricSums) -> Significance:
    if metric == "success":
        return two_proportion_z(inside.total, inside.n, outside.total, outside.n)
    return welch_t(inside.n, inside.total, inside.total_sq,
                   outside.n, outside.total, outside.total_sq)


def _testable(inside: MetricSums, outside: MetricSums) -> bool:
    return inside.n >= MIN_GROUP_N and outside.n >= MIN_GROUP_N


def build_tests(groups: Sequence[GroupSums],
                totals: Mapping[str, WindowSums]) -> list[GroupTest]:
    """Segment tests for every group and window, then the two regression tests.
    `totals`: the whole active version per window."""
    tests: list[GroupTest] = []
    for group in groups:
        for window in WINDOWS:
            inside = group.windows.get(window, EMPTY)
            outside = totals.get(window, EMPTY).minus(inside)
            for metric in METRICS:
                a, b = inside.metric(metric), outside.metric(metric)
                if _testable(a, b):
                    tests.append(GroupTest("segment", group.dimension, group.value, metric,
                                           window, inside.conversations,
                                           run_test(metric, a, b)))
    recent = totals.get("24h", EMPTY)
    before = totals.get("7d", EMPTY).minus(recent)
    for metric in METRICS:
        a, b = recent.metric(metric), before.metric(metric)
        if _testable(a, b):
            tests.append(GroupTest("regression", None, None, metric, REGRESSION_WINDOW,
                                   recent.conversations, run_test(metric, a, b)))
    return tests


def normalised_effect(metric: str, difference: float | None) -> float | None:
    if difference is None:
        return None
    return difference if metric == "success" else difference / RATING_RANGE


def assess(test: GroupTest, q_value: float | None, rules: Rules) -> Finding:
    """The actionability rules, each one checked and, when it fails, named."""
    result = test.result
    effect = normalised_effect(test.metric, result.difference)
    significant = q_value is not None and q_value <= rules.fdr
    worse = result.difference is not None and result.difference < 0
    reasons = []
    if result.error is not None:
        reasons.append(f"not testable ({result.error.replace('_', ' ')})")
    elif not significant:
        shown = "n/a" if q_value is None else f"{q_value:.3g}"
        reasons.append(f"not significant at FDR {rules.fdr:g} (q = {shown})")
    if result.difference is not None and not worse:
        reasons.append("the group is not worse than the rest")
    if effect is not None and abs(effect) < rules.min_effect:
        reasons.append(f"effect {abs(effect):.3f} is below the minimum {rules.min_effect:g}")
    if result.n_inside < rules.min_conversations:
        reasons.append(f"{result.n_inside} observations, fewer than the minimum "
                       f"{rules.min_conversations}")
    return Finding(test, q_value, significant, worse, effect, not reasons, tuple(reasons))


def evaluate(tests: Sequence[GroupTest], rules: Rules) -> list[Finding]:
    """BH across every test that produced a p-value, then the rules for each test."""
    tested = [i for i, test in enumerate(tests) if test.result.p_value is not None]
    q_values = benjamini_hochberg([tests[i].result.p_value for i in tested])  # type: ignore[misc]
    q_of: dict[int, float] = {i: float(q) for i, q in zip(tested, q_values, strict=True)}
    return [assess(test, q_of.get(i), rules) for i, test in enumerate(tests)]
