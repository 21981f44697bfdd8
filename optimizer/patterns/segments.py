"""The tests of one pattern-analysis run and what counts as a finding worth acting on. Pure.

For every value of every dimension (the `segment` column, each tag) and each window (last
24 hours, last 7 days), the active version's conversations inside the group are compared
with the rest of its conversations in the same window, on every metric the registry marks
for pattern analysis (the success rate and the mean rating), with users (units) as the
independent observations (see significance). The
regression check compares the last 24 hours with the 6 days before in the same way: there
the "group" is each unit's last 24 hours within its 7 days. Every test of the run forms one
family whose false discovery rate is held at `Rules.fdr` by Benjamini-Hochberg.

A finding is actionable when it is BH-significant, the group is worse than the rest, the
size of the gap is at least `Rules.min_effect` and the group has at least
`Rules.min_conversations` observations of the metric. The effect is on one scale for every
metric: the difference divided by the width of the metric's bounds (a success-rate
difference as is, a rating difference by the 4 points of the 1-5 scale), so 0.05 means five
points of success rate or a fifth of a star.

A group enters the family only with MIN_GROUP_N observations and MIN_GROUP_UNITS units on
both sides. Leaving the others out (a choice made on counts alone, which say nothing about
the outcome under the null) keeps BH valid without spending its power on tests that could
never be acted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optimizer.patterns.significance import (
    GroupMoments,
    Significance,
    WindowMoments,
    benjamini_hochberg,
    compare,
    outside_units,
)
from optimizer.stats import metrics as registry

# The metrics pattern analysis compares, by name (optimizer.stats.metrics).
METRICS = tuple(m.name for m in registry.PATTERNS)
WINDOWS = ("24h", "7d")
REGRESSION_WINDOW = "24h_vs_prior_6d"
WINDOW_HOURS = {"24h": 24, "7d": 168}
MIN_GROUP_N = 10
# The variance of a difference of rates rests on the units on each side. With fewer than
# about ten, its estimate is so noisy (a t with a handful of df at best) that no test could
# pass the BH correction of a run of dozens of tests, and the working model behind the df
# is least trustworthy; so such groups are not tested at all.
MIN_GROUP_UNITS = 10

NO_WINDOW = WindowMoments(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
NO_GROUP = GroupMoments(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0)


@dataclass(frozen=True)
class WindowSums:
    """The active version in one window: conversations, units and each metric's moments."""

    conversations: int
    units: int
    metrics: Mapping[str, WindowMoments]

    def metric(self, name: str) -> WindowMoments:
        return self.metrics.get(name, NO_WINDOW)


@dataclass(frozen=True)
class GroupWindow:
    """One group in one window: its conversations and each metric's moments."""

    conversations: int
    metrics: Mapping[str, GroupMoments]

    def metric(self, name: str) -> GroupMoments:
        return self.metrics.get(name, NO_GROUP)


EMPTY_WINDOW = WindowSums(0, 0, {})
EMPTY_GROUP = GroupWindow(0, {})


@dataclass(frozen=True)
class GroupSums:
    dimension: str  # "segment" or "tag"
    value: str
    windows: Mapping[str, GroupWindow]  # by window name: "24h", "7d"


@dataclass(frozen=True)
class VersionTotals:
    """The whole active version per window, and its last 24 hours as a group of the 7-day
    window (what the regression test compares with the 6 days before)."""

    windows: Mapping[str, WindowSums]
    recent: GroupWindow

    def window(self, name: str) -> WindowSums:
        return self.windows.get(name, EMPTY_WINDOW)


@dataclass(frozen=True)
class Rules:
    fdr: float
    min_effect: float
    min_conversations: int


@dataclass(frozen=True)
class GroupTest:
    kind: str  # "segment" or "regression"
    dimension: str | None  # "segment", "tag"; None for a regression
    value: str | None
    metric: str  # one of METRICS
    window: str  # "24h", "7d" or REGRESSION_WINDOW
    conversations: int  # conversations inside the group in the window
    result: Significance


@dataclass(frozen=True)
class Finding:
    test: GroupTest
    q_value: float | None
    significant: bool
    worse: bool
    effect: float | None  # normalised (see the module docstring); inside minus outside
    actionable: bool
    reasons: tuple[str, ...]  # why it is not actionable; empty when it is

    @property
    def reportable(self) -> bool:
        """Worth storing: a significant gap on the bad side (a better group needs no fix)."""
        return self.significant and self.worse


def testable(group: GroupMoments, window: WindowMoments) -> bool:
    return (
        group.m >= MIN_GROUP_N
        and window.m - group.m >= MIN_GROUP_N
        and group.units >= MIN_GROUP_UNITS
        and outside_units(group, window) >= MIN_GROUP_UNITS
    )


def build_tests(groups: Sequence[GroupSums], totals: VersionTotals) -> list[GroupTest]:
    """Segment tests for every group and window, then the two regression tests."""
    tests: list[GroupTest] = []
    for group in groups:
        for window in WINDOWS:
            part = group.windows.get(window, EMPTY_GROUP)
            for metric in METRICS:
                inside, whole = part.metric(metric), totals.window(window).metric(metric)
                if testable(inside, whole):
                    tests.append(
                        GroupTest(
                            "segment",
                            group.dimension,
                            group.value,
                            metric,
                            window,
                            part.conversations,
                            compare(inside, whole),
                        )
                    )
    for metric in METRICS:
        inside, whole = totals.recent.metric(metric), totals.window("7d").metric(metric)
        if testable(inside, whole):
            tests.append(
                GroupTest(
                    "regression",
                    None,
                    None,
                    metric,
                    REGRESSION_WINDOW,
                    totals.recent.conversations,
                    compare(inside, whole),
                )
            )
    return tests


def untested_metrics(totals: VersionTotals) -> dict[str, str]:
    """Metrics no test could look at, with the reason (a log without ratings is normal)."""
    week = totals.window("7d")
    return {
        metric: f"no conversation of the active version reports {metric} in the last 7 days"
        for metric in METRICS
        if week.metric(metric).m <= 0
    }


def normalised_effect(name: str, difference: float | None) -> float | None:
    """The difference on the metric's scale (the width of its bounds)."""
    if difference is None:
        return None
    return difference / registry.metric(name).scale


def assess(test: GroupTest, q_value: float | None, rules: Rules) -> Finding:
    """The actionability rules, each one checked and, when it fails, named."""
    result = test.result
    effect = normalised_effect(test.metric, result.difference)
    significant = q_value is not None and q_value <= rules.fdr
    worse = result.difference is not None and (
        result.difference < 0
        if registry.metric(test.metric).higher_is_better
        else result.difference > 0
    )
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
        reasons.append(
            f"{result.n_inside} observations, fewer than the minimum {rules.min_conversations}"
        )
    return Finding(test, q_value, significant, worse, effect, not reasons, tuple(reasons))


def evaluate(tests: Sequence[GroupTest], rules: Rules) -> list[Finding]:
    """BH across every test that produced a p-value, then the rules for each test."""
    tested = [i for i, test in enumerate(tests) if test.result.p_value is not None]
    q_values = benjamini_hochberg([tests[i].result.p_value for i in tested])  # type: ignore[misc]
    q_of: dict[int, float] = {i: float(q) for i, q in zip(tested, q_values, strict=True)}
    return [assess(test, q_of.get(i), rules) for i, test in enumerate(tests)]
