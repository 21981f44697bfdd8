"""A group of findings as one insight (describe.group_draft): its title names the others,
its detail lists the facets, its evidence is the main facet's with every facet's own
figures; and reading facets back (describe.facets_of, the insights page's table) from
anything a stored row may hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from optimizer.patterns.describe import MAX_TITLE_CHARS, facets_of, group_draft
from optimizer.patterns.fingerprints import MAX_FINGERPRINT_CHARS
from optimizer.patterns.grouping import Subject, group_findings
from optimizer.patterns.segments import METRICS, REGRESSION_WINDOW, WINDOWS, Rules
from optimizer.patterns.store import evidence_json
from optimizer.ui.evidence import facet_rows
from tests.support.patterns import finding

RULES = Rules(fdr=0.05, min_effect=0.05, min_conversations=50)
END = datetime(2026, 3, 2, 12, tzinfo=UTC)
STARTS = {
    "24h": END - timedelta(hours=24),
    "7d": END - timedelta(days=7),
    REGRESSION_WINDOW: END - timedelta(days=7),
}
BILLING, REFUND = Subject("segment", "billing"), Subject("tag", "refund")


def draft(findings: list[Any], overlaps: dict[Any, float]) -> Any:
    (group,) = group_findings(findings, overlaps)
    return group_draft(
        group,
        rules=RULES,
        family_size=30,
        version_id=7,
        window_starts=STARTS,
        window_end=END,
        sample_ids=[3, 1, 2],
    )


def test_billing_and_refund_make_one_insight_with_eight_facets() -> None:
    findings = [
        finding(s, m, w, (-0.4 if m == "success" else -0.2) - (0.01 if w == "24h" else 0), True)
        for s in (BILLING, REFUND)
        for m in METRICS
        for w in WINDOWS
    ]
    made = draft(findings, {frozenset((BILLING, REFUND)): 0.97})
    assert made.fingerprint == "group:segment=billing" and made.kind == "segment"
    assert made.subjects == (BILLING, REFUND) and made.is_actionable
    assert made.title.startswith("segment 'billing': success rate 40.0% vs 81.0%")
    assert made.title.endswith("(last 24 h) (also tag 'refund'; rating)")
    assert made.effect_size == -0.41
    evidence = json.loads(evidence_json(made.evidence, made.fingerprint))  # strict JSON
    assert (evidence["dimension"], evidence["value"]) == ("segment", "billing")
    assert (evidence["metric"], evidence["window"]) == ("success", "24h")
    assert evidence["window_start"] == "2026-03-01T12:00:00Z"
    assert [(f["dimension"], f["value"], f["metric"], f["window"]) for f in evidence["facets"]] == [
        ("segment", "billing", "success", "24h"),
        ("tag", "refund", "success", "24h"),
        ("segment", "billing", "success", "7d"),
        ("tag", "refund", "success", "7d"),
        ("segment", "billing", "rating", "24h"),
        ("tag", "refund", "rating", "24h"),
        ("segment", "billing", "rating", "7d"),
        ("tag", "refund", "rating", "7d"),
    ]
    assert evidence["facets"][0]["effect"] == -0.41 and evidence["facets"][0]["actionable"]
    assert evidence["overlaps"] == [{"dimension": "tag", "value": "refund", "overlap": 0.97}]
    assert evidence["overlap_min"] == 0.8 and evidence["sample_conversation_ids"] == [3, 1, 2]
    detail = made.detail.splitlines()
    assert detail[1] == "One insight for 8 findings about the same conversations, strongest first:"
    assert detail[2].startswith("- segment 'billing', success rate, last 24 h: 40.0% vs 81.0%")
    assert detail[-1] == (
        "Grouped with segment 'billing' because they share conversations (last 7 days, share "
        "of the smaller): tag 'refund' 97%."
    )


def test_a_single_finding_reads_as_before() -> None:
    made = draft([finding(BILLING, "success", "7d", -0.3, False)], {})
    assert "also" not in made.title and len(made.detail.splitlines()) == 1
    assert made.detail.endswith("Not actionable: effect is below the minimum.")
    assert not made.is_actionable
    (only,) = made.evidence["facets"]
    assert only["not_actionable_because"] == ["effect is below the minimum"]


def test_a_regression_group() -> None:
    regression = Subject(None, None)
    made = draft(
        [finding(regression, m, REGRESSION_WINDOW, -0.2, True) for m in METRICS],
        {},
    )
    assert made.fingerprint == "group:regression" and made.kind == "regression"
    assert made.title.startswith("Regression: success rate")
    assert made.title.endswith("(also rating)")
    assert made.evidence["dimension"] is None and "recent" in made.evidence
    assert "- success rate, last 24 h vs the 6 days before" in made.detail


@given(
    st.text(min_size=1, max_size=300),
    st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=6, unique=True),
)
def test_hostile_and_long_values_stay_within_the_columns(main: str, tags: list[str]) -> None:
    subject = Subject("segment", main)
    others = [Subject("tag", t) for t in tags]
    findings = [finding(subject, "success", "7d", -0.5, True)]
    findings += [finding(s, "rating", "24h", -0.1, False) for s in others]
    made = draft(findings, {frozenset((subject, s)): 0.9 for s in others})
    assert len(made.title) <= MAX_TITLE_CHARS
    assert len(made.fingerprint) <= MAX_FINGERPRINT_CHARS
    assert len(made.evidence["facets"]) == 1 + len(others)
    if len(others) > 3:
        assert f"{len(others) - 3} more" in made.title or len(made.title) == MAX_TITLE_CHARS
    json.loads(evidence_json(made.evidence, made.fingerprint))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=16,
)
FACET_KEYS = st.sampled_from(
    ["dimension", "value", "metric", "window", "inside", "outside", "n", "units", "effect"]
    + ["ci_low", "ci_high", "q_value", "actionable", "not_actionable_because"]
)


@given(
    st.one_of(
        JSON,
        st.lists(st.one_of(JSON, st.dictionaries(FACET_KEYS, JSON, max_size=8)), max_size=5),
    )
)
def test_facets_read_back_from_anything_stored(value: Any) -> None:
    evidence = {"facets": value}
    facets = facets_of(evidence)
    assert all(isinstance(f, dict) for f in facets)
    rows = facet_rows(evidence)
    assert len(rows) == (len(facets) if len(facets) >= 2 else 0)
    for row in rows:
        for text in vars(row).values():
            assert isinstance(text, str)
            assert "nan" not in text.lower().split() and "inf" not in text.lower().split()
