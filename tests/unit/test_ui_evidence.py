"""optimizer/ui/evidence.py: an insight's evidence in words, from what pattern analysis
stores and from anything a hand-edited row may hold."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from optimizer.ui.evidence import MAX_ITEMS, evidence_facts

# The keys patterns.describe.finding_draft writes for a segment finding.
SEGMENT = {
    "kind": "segment",
    "dimension": "device",
    "value": "mobile",
    "metric": "success",
    "window": "last 7 days",
    "window_start": "2026-11-24T00:00:00Z",
    "window_end": "2026-12-01T00:00:00Z",
    "version_id": 12,
    "test": "welch",
    "conversations": 1840,
    "units_inside": 412,
    "units_outside": 1203,
    "group": {"n": 530, "units": 412, "rate": 0.2142},
    "rest": {"n": 1310, "units": 1203, "rate": 0.2961},
    "difference": -0.0819,
    "effect": -0.0819,
    "effect_scale": "success-rate difference",
    "ci_level": 0.95,
    "ci_low": -0.121,
    "ci_high": -0.043,
    "p_value": 0.00012,
    "q_value": 0.0011,
    "fdr": 0.1,
    "not_actionable_because": [],
}


def test_a_segment_finding_reads_as_lines_in_order() -> None:
    facts = evidence_facts(SEGMENT)
    assert [label for label, _ in facts] == [
        "segment",
        "metric",
        "window",
        "effect",
        "counts",
        "significance",
    ]
    text = dict(facts)
    assert text["segment"] == "device = mobile"
    assert text["window"] == "last 7 days (2026-11-24T00:00:00Z to 2026-12-01T00:00:00Z)"
    assert text["effect"] == (
        "-0.0819 (success-rate difference); difference -0.0819; 95% interval -0.121 to -0.043"
    )
    assert text["counts"] == (
        "1,840 conversations; group: rate 0.214, n 530, 412 units; "
        "rest: rate 0.296, n 1,310, 1,203 units"
    )
    assert text["significance"] == "p 0.00012, q 0.0011, FDR 0.1"


def test_themes_regressions_and_reasons() -> None:
    theme = {
        "kind": "theme",
        "failed_transcripts": 80,
        "successful_transcripts": 400,
        "terms": [{"term": f"t{i}", "z": 3.1} for i in range(MAX_ITEMS + 2)],
    }
    assert dict(evidence_facts(theme)) == {
        "counts": "80 failed transcripts; 400 successful transcripts",
        "terms": "t0, t1, t2, t3, t4…",
    }
    regression = {"metric": "rating", "before": 4.31, "after": 4.02}
    assert dict(evidence_facts(regression)) == {"metric": "rating", "effect": "4.31 → 4.02"}
    held = {"not_actionable_because": ["effect below 0.05", "fewer than 200 conversations"]}
    assert evidence_facts(held) == [
        ("not actionable because", "effect below 0.05, fewer than 200 conversations")
    ]


def test_odd_values_are_left_out_not_shown_as_nan() -> None:
    odd = {
        "effect": math.nan,
        "ci_low": math.inf,
        "ci_high": 1.0,
        "conversations": 10**400,
        "segment": "   ",
        "metric": True,
        "group": {"n": "many"},
        "examples": [None, {"x": 1}, [1]],
    }
    # Text stays text (the page escapes it); numbers that are not finite floats are left out.
    assert evidence_facts(odd) == [("metric", "yes"), ("counts", "group: n many")]
    assert evidence_facts({}) == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [*SEGMENT, "before", "after", "terms", "themes", "examples", "unreadable", "rate", "n"]
)


@given(st.dictionaries(KEYS, JSON, max_size=8))
def test_any_stored_value_gives_text_lines(evidence: dict[str, Any]) -> None:
    for label, text in evidence_facts(evidence):
        assert label and text and isinstance(text, str)
        assert "nan" not in text.lower().split() and "inf" not in text.lower().split()
