"""One underlying problem, one insight: the reportable findings of a run gathered into
groups that describe the same conversations. Pure.

A finding is about a subject: a segment, a tag, or the version's last 24 hours (the
regression). The findings about one subject (its metrics and windows) always go together.
Findings about different subjects go together when the subjects share most of their
conversations: at least OVERLAP_TO_GROUP of the smaller one's conversations in the last 7
days are in both (the database counts them, see overlap). Segments never share a
conversation, so only a tag can join a segment or another tag; the regression joins nothing.

Grouping is greedy around anchors, not transitive: subjects are taken strongest first (see
`rank`), and each one not yet in a group starts one and takes in every subject not yet in a
group that overlaps it enough. Transitive grouping would chain two unrelated bad segments
into one insight through a broad tag that holds most of both (a "web" tag on 80% of all
conversations), which is the opposite of what an insight should say.

Each group's facets are its findings strongest first; the first is the main facet, whose
subject names the group and whose figures the insight shows. Strongest means actionable
first, then the largest effect (see segments.normalised_effect), then a fixed order of
subject, metric and window, so the result does not depend on the order of the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optimizer.patterns.segments import METRICS, REGRESSION_WINDOW, WINDOWS, Finding, GroupTest

OVERLAP_TO_GROUP = 0.8
# Subjects whose shared conversations one run counts (the strongest; C(30, 2) pairs at most).
# Beyond them a subject is grouped with its own findings only.
MAX_OVERLAP_SUBJECTS = 30
DIMENSIONS = ("segment", "tag", None)  # None: the regression
WINDOW_ORDER = (*WINDOWS, REGRESSION_WINDOW)


@dataclass(frozen=True)
class Subject:
    """What a finding is about: ("segment", "billing"), ("tag", "refund"), or the version's
    last 24 hours against the days before (the regression: dimension and value None)."""

    dimension: str | None
    value: str | None

    @staticmethod
    def of(test: GroupTest) -> Subject:
        if test.kind == "regression":
            return Subject(None, None)
        return Subject(test.dimension, test.value)

    def order(self) -> tuple[int, str]:
        return _index(DIMENSIONS, self.dimension), self.value or ""

    def label(self) -> str:
        """How the insight names it: "segment 'billing'", "tag 'refund'"."""
        if self.dimension is None:
            return "the last 24 h"
        return f"{self.dimension} {self.value!r}"


Pair = frozenset[Subject]


def _index(values: Sequence[Any], value: Any) -> int:
    return values.index(value) if value in values else len(values)


def rank(finding: Finding) -> tuple[Any, ...]:
    """Sort key, strongest first: actionable before not, larger |effect| before smaller,
    then subject, metric and window in a fixed order."""
    test = finding.test
    return (
        not finding.actionable,
        -abs(finding.effect or 0.0),
        Subject.of(test).order(),
        _index(METRICS, test.metric),
        test.metric,
        _index(WINDOW_ORDER, test.window),
        test.window,
    )


@dataclass(frozen=True)
class Group:
    """Findings about the same conversations. facets: strongest first (facets[0] is the
    main facet). overlaps: each other subject with the share of conversations it has in
    common with the main facet's subject (of the smaller of the two)."""

    facets: tuple[Finding, ...]
    overlaps: tuple[tuple[Subject, float], ...] = ()

    @property
    def main(self) -> Finding:
        return self.facets[0]

    @property
    def subject(self) -> Subject:
        return Subject.of(self.main.test)

    @property
    def subjects(self) -> tuple[Subject, ...]:
        """Every subject of the group, the main one first, then by their strongest facet."""
        return tuple(dict.fromkeys(Subject.of(f.test) for f in self.facets))

    @property
    def actionable(self) -> bool:
        return any(f.actionable for f in self.facets)

    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.test.metric for f in self.facets))


def _by_subject(findings: Iterable[Finding]) -> dict[Subject, list[Finding]]:
    out: dict[Subject, list[Finding]] = {}
    for finding in sorted(findings, key=rank):
        out.setdefault(Subject.of(finding.test), []).append(finding)
    return out


def overlap_candidates(findings: Iterable[Finding]) -> list[Subject]:
    """The subjects worth counting shared conversations for, strongest first: at most
    MAX_OVERLAP_SUBJECTS segments and tags; none unless a tag is among them and there are
    two (segments never share a conversation with each other)."""
    subjects = [s for s in _by_subject(findings) if s.dimension is not None]
    subjects = subjects[:MAX_OVERLAP_SUBJECTS]
    if len(subjects) < 2 or not any(s.dimension == "tag" for s in subjects):
        return []
    return subjects


def overlap_ratios(counts: Mapping[Pair, int], sizes: Mapping[Subject, int]) -> dict[Pair, float]:
    """Per pair of subjects, the conversations in both over the conversations of the smaller
    (its size in the same window), within [0, 1]; pairs with an empty side are left out."""
    ratios: dict[Pair, float] = {}
    for pair, both in counts.items():
        smaller = min(sizes.get(s, 0) for s in pair)
        if smaller > 0 and len(pair) == 2:
            ratios[pair] = min(1.0, max(0.0, both / smaller))
    return ratios


def group_findings(
    findings: Iterable[Finding],
    overlaps: Mapping[Pair, float],
    threshold: float = OVERLAP_TO_GROUP,
) -> list[Group]:
    """Every finding in exactly one group; groups strongest first (see the module)."""
    by_subject = _by_subject(findings)
    placed: set[Subject] = set()
    groups = []
    for anchor in by_subject:  # strongest first: dicts keep the sorted insertion order
        if anchor in placed:
            continue
        members = [anchor]
        shared: list[tuple[Subject, float]] = []
        for other in by_subject:
            share = overlaps.get(frozenset((anchor, other)), 0.0)
            if other not in placed and other != anchor and share >= threshold:
                members.append(other)
                shared.append((other, share))
        placed.update(members)
        facets = sorted((f for s in members for f in by_subject[s]), key=rank)
        groups.append(Group(tuple(facets), tuple(shared)))
    return groups
