"""What became of a past candidate, read from its version and latest experiment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optimizer.variants.history import (
    CandidateFacts,
    Lift,
    PastCandidate,
    classify,
    lift_of,
    ordered,
    promoted_arms,
)

MADE = datetime(2026, 11, 1, tzinfo=UTC)
ENDED = MADE + timedelta(days=9)


def facts(**kw: Any) -> CandidateFacts:
    base: dict[str, Any] = {
        "version": 4,
        "status": "retired",
        "status_reason": None,
        "change_notes": "cites invoices",
        "created_at": MADE,
        "content_chars": 300,
        "parent_version": 3,
    }
    base.update(kw)
    return CandidateFacts(**base)


IN_EXPERIMENT = {"experiment_id": 9, "arm_id": 21, "experiment_status": "completed"}


@pytest.mark.parametrize(
    ("kw", "outcome", "reason", "at"),
    [
        (
            {**IN_EXPERIMENT, "won": True, "decision_reason": "Promote v4", "ended_at": ENDED},
            "promoted",
            "Promote v4",
            ENDED,
        ),
        (
            {**IN_EXPERIMENT, "arm_stopped": True, "stopped_reason": "worse", "stopped_at": ENDED},
            "harmful",
            "worse",
            ENDED,
        ),
        (
            {**IN_EXPERIMENT, "decision_reason": "Maximum runtime", "ended_at": ENDED},
            "inconclusive",
            "Maximum runtime",
            ENDED,
        ),
        (
            {
                **IN_EXPERIMENT,
                "experiment_status": "awaiting_approval",
                "experiment_live": True,
                "status": "testing",
            },
            "waiting",
            "in experiment 9, awaiting approval",
            MADE,
        ),
        (
            # The winner a check proposed while it awaits approval: the experiment names it
            # (winner_version_id), yet nothing is promoted until a person approves it.
            {
                **IN_EXPERIMENT,
                "experiment_status": "awaiting_approval",
                "experiment_live": True,
                "status": "testing",
                "won": True,
                "decision_reason": "Promote v4 ... Awaiting approval",
            },
            "waiting",
            "in experiment 9, awaiting approval",
            MADE,
        ),
        (
            {"status": "rejected", "status_reason": "win rate 0.31 [0.2, 0.45]"},
            "rejected_by_replay",
            "win rate 0.31 [0.2, 0.45]",
            MADE,
        ),
        ({"status": "candidate"}, "waiting", "not tested yet", MADE),
    ],
)
def test_outcomes(kw: dict[str, Any], outcome: str, reason: str, at: datetime) -> None:
    entry = classify(facts(**kw))
    assert entry is not None
    assert (entry.outcome, entry.reason, entry.at) == (outcome, reason, at)
    assert entry.change_notes == "cites invoices" and entry.version == 4


@pytest.mark.parametrize("status", ["active", "retired"])
def test_a_version_activated_by_hand_is_no_candidate(status: str) -> None:
    assert classify(facts(status=status)) is None


def test_lift_only_for_a_promoted_candidate() -> None:
    lift = Lift("success", 0.05, 0.01, 0.09)
    won = classify(facts(**IN_EXPERIMENT, won=True), lift)
    lost = classify(facts(**IN_EXPERIMENT), lift)
    assert won is not None and won.lift == lift
    assert lost is not None and lost.lift is None


def test_lift_of_reads_the_arms_comparison() -> None:
    statistics = {
        "comparisons": [
            {"arm_id": 20, "metric": "success", "relative": 0.5},
            {
                "arm_id": 21,
                "metric": "success",
                "relative": -0.02,
                "relative_low": None,
                "relative_high": 0.01,
            },
        ]
    }
    lift = lift_of(statistics, 21)
    assert lift == Lift("success", -0.02, None, 0.01)
    assert lift.describe() == "success -2.0% relative to control"


@pytest.mark.parametrize(
    "statistics",
    [None, "not json", [], {"comparisons": "x"}, {"comparisons": [1, None]}, {"other": []}],
)
def test_lift_of_tolerates_rows_edited_by_hand(statistics: Any) -> None:
    assert lift_of(statistics, 21) is None


def test_lift_of_drops_non_finite_and_non_numbers() -> None:
    item = {"arm_id": 1, "relative": float("nan"), "relative_low": True, "relative_high": "1"}
    lift = lift_of({"comparisons": [item]}, 1)
    assert lift == Lift("primary metric", None, None, None)
    assert lift.describe() == "primary metric: lift not computable"


def test_promoted_arms_and_ordering() -> None:
    rows = [facts(**IN_EXPERIMENT, won=True), facts(version=5, experiment_id=10, arm_id=30)]
    assert promoted_arms(rows) == {9: 21}
    entries = [
        PastCandidate(1, "waiting", MADE, None, None),
        PastCandidate(2, "inconclusive", ENDED, None, None),
        PastCandidate(3, "harmful", MADE, None, None),
        PastCandidate(4, "promoted", ENDED, None, None),
        PastCandidate(5, "harmful", ENDED, None, None),
    ]
    assert [e.version for e in ordered(entries)] == [5, 4, 3, 2, 1]
    assert [e.version for e in ordered(entries, 2)] == [5, 4]
