"""An insight as generation and replay read it: one reader, tolerant of hand-edited evidence."""

from __future__ import annotations

import pytest

from models.insights import PatternInsight
from optimizer.replay import store as replay_store
from optimizer.variants.store import insight_facts


def insight(evidence: str | None) -> PatternInsight:
    return PatternInsight(id=7, kind="segment", title="billing", detail=None, evidence=evidence)


@pytest.mark.parametrize(
    "evidence",
    [
        None,
        "",
        "not json",
        "[1, 2]",
        "9" * 5000,  # json.loads: ValueError past the integer digit limit, not JSONDecodeError
        "[" * 100_000,  # json.loads: RecursionError
        '{"dimension": "segment", "value": ' + "1" * 5000 + "}",
    ],
)
def test_unreadable_evidence_counts_as_none(evidence: str | None) -> None:
    facts = insight_facts(insight(evidence))
    assert (facts.id, facts.title, facts.evidence) == (7, "billing", {})


def test_the_evidence_object_is_read() -> None:
    facts = insight_facts(insight('{"dimension": "segment", "value": "billing"}'))
    assert facts.evidence == {"dimension": "segment", "value": "billing"}


def test_replay_reads_insights_with_the_same_reader() -> None:
    assert replay_store.insight_facts is insight_facts
