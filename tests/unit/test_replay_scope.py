"""Where a candidate's insights say the active version does badly: the segments and tags
replay samples from (optimizer.replay.sampling.scope_of), from whatever evidence the
insights rows hold, grouped or not, well-formed or not."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from optimizer.replay.sampling import MAX_SAMPLE_IDS, Scope, scope_of
from optimizer.variants.meta_prompt import InsightFacts


def insight(evidence: dict[str, Any], id: int = 1) -> InsightFacts:
    return InsightFacts(id=id, kind="segment", title="t", detail=None, evidence=evidence)


def test_a_grouped_insight_scopes_every_facet():
    grouped = insight(
        {
            "dimension": "segment",
            "value": "billing",
            "facets": [
                {"dimension": "segment", "value": "billing", "metric": "success"},
                {"dimension": "tag", "value": "refund", "metric": "success"},
                {"dimension": "segment", "value": "billing", "metric": "rating"},
                {"dimension": "regression", "metric": "rating"},
            ],
            "sample_conversation_ids": [7, 3, 7],
        }
    )
    plain = insight({"dimension": "tag", "value": "late", "sample_conversation_ids": [9]}, id=2)
    assert scope_of([grouped, plain]) == Scope(("billing",), ("refund", "late"), (7, 3, 9))


def test_insights_that_name_no_segment_or_tag_scope_the_whole_version():
    scope = scope_of([insight({"metric": "success"}), insight({"facets": "not a list"})])
    assert scope.whole_version
    assert scope.describe() == "the whole version (its insights name no segment or tag)"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FACET = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"dimension": st.sampled_from(["segment", "tag", "regression", 3]), "value": JSON}
    ),
)
EVIDENCE = st.dictionaries(
    st.sampled_from(["dimension", "value", "facets", "sample_conversation_ids", "other"]),
    st.one_of(JSON, st.lists(FACET, max_size=5), st.sampled_from(["segment", "tag"])),
    max_size=5,
)


@given(st.lists(EVIDENCE, max_size=4))
def test_any_stored_evidence_gives_a_scope_of_strings_and_integer_ids(evidences):
    scope = scope_of([insight(e, id=i) for i, e in enumerate(evidences)])
    assert all(isinstance(s, str) for s in scope.segments + scope.tags)
    assert len(set(scope.segments)) == len(scope.segments)
    assert len(set(scope.tags)) == len(scope.tags)
    assert all(type(i) is int for i in scope.sample_ids)
    assert len(scope.sample_ids) <= MAX_SAMPLE_IDS
    for evidence in evidences:
        facets = evidence.get("facets")
        for subject in [evidence, *(facets if isinstance(facets, list) else [])]:
            if isinstance(subject, dict) and isinstance(subject.get("value"), str):
                if subject.get("dimension") == "segment":
                    assert subject["value"] in scope.segments
                if subject.get("dimension") == "tag":
                    assert subject["value"] in scope.tags
