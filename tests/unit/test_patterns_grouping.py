"""Findings into groups, pure: every finding in exactly one group, the result independent of
the input's order, subjects joined only around an anchor they overlap enough, and a group's
name stable when a facet weaker than its main one appears or disappears (fresh, and when it
continues a stored group)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from optimizer.patterns import fingerprints
from optimizer.patterns.fingerprints import StoredGroup, name_groups
from optimizer.patterns.grouping import (
    MAX_OVERLAP_SUBJECTS,
    OVERLAP_TO_GROUP,
    Group,
    Pair,
    Subject,
    group_findings,
    overlap_candidates,
    overlap_ratios,
    rank,
)
from optimizer.patterns.segments import METRICS, REGRESSION_WINDOW, WINDOWS, Finding
from tests.support.patterns import finding

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
REGRESSION = Subject(None, None)
SUBJECTS = [
    *(Subject("segment", v) for v in ("billing", "sales", "ß-ünï", "<script>")),
    *(Subject("tag", v) for v in ("refund", "web", "vip", "日本語")),
    REGRESSION,
]


# Findings of one run: at most one per (subject, metric, window). Effects from a small set,
# so ties (broken by the fixed order of subjects, metrics and windows) are common.
KEYS = st.tuples(st.sampled_from(SUBJECTS), st.sampled_from(METRICS), st.sampled_from(WINDOWS))
FIGURES = st.tuples(st.sampled_from([-0.05, -0.1, -0.2, -0.3, -0.45]), st.booleans())
FINDINGS = st.dictionaries(KEYS, FIGURES, min_size=1, max_size=24).map(
    lambda found: list(
        {
            (s, m, REGRESSION_WINDOW if s.dimension is None else w): finding(
                s, m, w, effect, actionable
            )
            for (s, m, w), (effect, actionable) in found.items()
        }.values()
    )
)
PAIRS = [
    frozenset((a, b))
    for i, a in enumerate(SUBJECTS)
    for b in SUBJECTS[i + 1 :]
    if None not in (a.dimension, b.dimension) and "tag" in (a.dimension, b.dimension)
]
OVERLAPS = st.dictionaries(
    st.sampled_from(PAIRS), st.sampled_from([0.0, 0.5, 0.79, 0.8, 0.95, 1.0]), max_size=12
)


def share(overlaps: dict[Pair, float], a: Subject, b: Subject) -> float:
    return overlaps.get(frozenset((a, b)), 0.0)


@given(FINDINGS, OVERLAPS, st.randoms(use_true_random=False))
def test_every_finding_in_exactly_one_group_whatever_the_order(
    findings: list[Finding], overlaps: dict[Pair, float], rng: random.Random
) -> None:
    groups = group_findings(findings, overlaps)
    placed = [f for g in groups for f in g.facets]
    assert sorted(placed, key=rank) == sorted(findings, key=rank)
    assert len(placed) == len(findings)
    # The same findings and overlaps in any order give the same groups.
    shuffled, pairs = list(findings), list(overlaps.items())
    rng.shuffle(shuffled)
    rng.shuffle(pairs)
    assert group_findings(shuffled, dict(pairs)) == groups
    seen: set[Subject] = set()
    for i, group in enumerate(groups):
        # Facets strongest first; a subject's findings all in one group.
        assert list(group.facets) == sorted(group.facets, key=rank)
        assert not seen & set(group.subjects)
        seen |= set(group.subjects)
        assert group.actionable == any(f.actionable for f in group.facets)
        anchor = group.subject
        # Every other subject overlaps the anchor enough, and says by how much.
        assert dict(group.overlaps) == {s: share(overlaps, anchor, s) for s in group.subjects[1:]}
        assert all(v >= OVERLAP_TO_GROUP for _, v in group.overlaps)
        # Nothing a later group holds overlapped this anchor enough (it would be here).
        for later in groups[i + 1 :]:
            assert all(share(overlaps, anchor, s) < OVERLAP_TO_GROUP for s in later.subjects)
    # Groups strongest first.
    assert [g.main for g in groups] == sorted((g.main for g in groups), key=rank)


@given(FINDINGS, OVERLAPS)
def test_names_are_distinct_and_fresh_names_follow_the_main_subject(
    findings: list[Finding], overlaps: dict[Pair, float]
) -> None:
    groups = group_findings(findings, overlaps)
    names = name_groups([g.subjects for g in groups], [])
    assert names == [fingerprints.group(g.subject) for g in groups]
    assert len(set(names)) == len(names)
    assert all(len(n) <= fingerprints.MAX_FINGERPRINT_CHARS for n in names)


def _stored(groups: list[Group], names: list[str]) -> list[StoredGroup]:
    return [
        StoredGroup(name, frozenset(g.subjects), T0 - timedelta(minutes=i))
        for i, (g, name) in enumerate(zip(groups, names, strict=True))
    ]


@given(FINDINGS, OVERLAPS, st.data())
@settings(max_examples=200)
def test_a_group_keeps_its_name_when_a_weaker_facet_comes_or_goes(
    findings: list[Finding], overlaps: dict[Pair, float], data: st.DataObject
) -> None:
    """The promise: for the group whose main facet is m, adding a finding ranked below m or
    removing any finding ranked below m (overlaps unchanged) keeps the group's main facet
    and its name, fresh and when it continues the stored groups of the first run."""
    first = group_findings(findings, overlaps)
    names = name_groups([g.subjects for g in first], [])
    index = data.draw(st.integers(0, len(first) - 1))
    main = first[index].main
    weaker = [f for f in findings if rank(f) > rank(main)]
    if data.draw(st.booleans()) and weaker:
        gone = data.draw(st.sampled_from(weaker))
        changed = [f for f in findings if f is not gone]
    else:
        subject, metric, window = data.draw(KEYS)
        window = REGRESSION_WINDOW if subject.dimension is None else window
        taken = {(Subject.of(f.test), f.test.metric, f.test.window) for f in findings}
        assume((subject, metric, window) not in taken)
        effect = data.draw(st.floats(-abs(main.effect or 0.0), 0.0, exclude_min=True))
        added = finding(subject, metric, window, effect, False)
        assume(rank(added) > rank(main))
        changed = [*findings, added]
    second = group_findings(changed, overlaps)
    (same,) = [g for g in second if g.main == main]
    fresh = name_groups([g.subjects for g in second], [])
    continued = name_groups([g.subjects for g in second], _stored(first, names))
    assert fresh[second.index(same)] == names[index]
    assert continued[second.index(same)] == names[index]
    assert len(set(continued)) == len(continued)


@given(FINDINGS, OVERLAPS, st.randoms(use_true_random=False))
def test_continuing_names_do_not_depend_on_the_order_of_stored_rows(
    findings: list[Finding], overlaps: dict[Pair, float], rng: random.Random
) -> None:
    groups = group_findings(findings, overlaps)
    stored = [
        StoredGroup(f"group:old-{i}", frozenset(rng.sample(SUBJECTS, 2)), T0 - timedelta(hours=i))
        for i in range(4)
    ]
    subjects = [g.subjects for g in groups]
    names = name_groups(subjects, stored)
    rng.shuffle(stored)
    assert name_groups(subjects, stored) == names
    assert len(set(names)) == len(names)
    for name, group in zip(names, groups, strict=True):
        rows = [s for s in stored if s.fingerprint == name]
        # A continued row shares a subject; any other name is one of the group's own.
        assert rows[0].subjects & set(group.subjects) if rows else name.startswith("group:")


def test_a_split_group_keeps_its_name_with_the_subject_it_was_named_after() -> None:
    billing, refund = Subject("segment", "billing"), Subject("tag", "refund")
    stored = [StoredGroup("group:segment=billing", frozenset({billing, refund}), T0)]
    # refund is the stronger now; billing still takes the row named after it.
    assert name_groups([(refund,), (billing,)], stored) == [
        "group:tag=refund",
        "group:segment=billing",
    ]
    # A group that drifted off its name's subject keeps it; the newcomer gets "#2".
    stored = [StoredGroup("group:segment=billing", frozenset({refund}), T0)]
    assert name_groups([(refund,), (billing,)], stored) == [
        "group:segment=billing",
        "group:segment=billing#2",
    ]


def test_the_row_seen_last_and_sharing_most_is_continued() -> None:
    a, b, c = Subject("tag", "a"), Subject("tag", "b"), Subject("segment", "c")
    stored = [
        StoredGroup("group:tag=old", frozenset({a}), T0 - timedelta(days=3)),
        StoredGroup("group:tag=new", frozenset({a}), T0),
        StoredGroup("group:tag=most", frozenset({a, b}), T0 - timedelta(days=5)),
    ]
    assert name_groups([(c, a, b)], stored) == ["group:tag=most"]
    assert name_groups([(c, a)], stored) == ["group:tag=new"]


def test_long_values_are_named_within_the_column() -> None:
    long = Subject("segment", "x" * 200)
    other = Subject("segment", "x" * 199 + "y")
    names = name_groups([(long,), (other,)], [])
    assert len(set(names)) == 2 and all(len(n) <= 200 for n in names)
    assert fingerprints.group(REGRESSION) == "group:regression"


def test_overlap_candidates_and_ratios() -> None:
    seg, tag, tag2 = Subject("segment", "s"), Subject("tag", "t"), Subject("tag", "u")
    findings = [finding(s, "success", "7d", -0.3, True) for s in (seg, tag, REGRESSION)]
    assert overlap_candidates(findings) == [seg, tag]  # strongest first; no regression
    assert overlap_candidates(findings[:1] + findings[2:]) == []  # one subject
    segments = [finding(Subject("segment", f"s{i}"), "success", "7d", -0.3, True) for i in range(3)]
    assert overlap_candidates(segments) == []  # segments never share conversations
    many = [finding(Subject("tag", f"t{i:02d}"), "success", "7d", -0.3, True) for i in range(40)]
    assert len(overlap_candidates(many)) == MAX_OVERLAP_SUBJECTS
    counts = {frozenset((seg, tag)): 90, frozenset((tag, tag2)): 5, frozenset((seg, tag2)): 7}
    ratios = overlap_ratios(counts, {seg: 100, tag: 95, tag2: 0})
    assert ratios == {frozenset((seg, tag)): pytest.approx(90 / 95)}
    # A count above the smaller size (rows arrived after the rollup pass) stays at 1.
    assert overlap_ratios({frozenset((seg, tag)): 120}, {seg: 100, tag: 110}) == {
        frozenset((seg, tag)): 1.0
    }


def test_the_billing_refund_world_in_small() -> None:
    """Eight findings (two subjects, two metrics, two windows) make one group led by the
    strongest actionable finding; a weak unrelated tag stays apart."""
    billing, refund, vip = (
        Subject("segment", "billing"),
        Subject("tag", "refund"),
        Subject("tag", "vip"),
    )
    findings = [
        finding(s, m, w, -0.4 if m == "success" else -0.2, True)
        for s in (billing, refund)
        for m in METRICS
        for w in WINDOWS
    ]
    findings.append(finding(vip, "success", "7d", -0.6, False))  # larger, not actionable
    groups = group_findings(
        findings, {frozenset((billing, refund)): 1.0, frozenset((vip, refund)): 0.1}
    )
    first, second = groups
    assert len(first.facets) == 8 and first.subjects == (billing, refund)
    assert first.main.test.metric == "success" and first.main.actionable
    assert first.overlaps == ((refund, 1.0),)
    assert second.subjects == (vip,) and not second.actionable
