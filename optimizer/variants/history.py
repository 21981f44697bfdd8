"""What became of a prompt's past candidates, for the meta-prompt to learn from (the OPRO
idea: show the optimizer its earlier attempts with their scores). Pure: store.py reads the
facts, this module classifies and orders them, meta_prompt.py renders them.

Outcomes, from the version's latest experiment as a variant arm, or from its own status
when it never reached one:
- promoted: its experiment's winner (with the lift of the experiment's last analysis);
- harmful: its arm was stopped by monitoring (the arm's stopped_reason says why);
- inconclusive: its experiment ended without promoting it (no winner, a person stopped it,
  or another arm won; the experiment's decision_reason says which);
- rejected_by_replay: status `rejected` without an experiment (status_reason holds the
  figures);
- waiting: in a live experiment, or a candidate not tested yet.
A version activated or retired by hand without an experiment says nothing about how a
candidate fared, and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

OUTCOMES = ("promoted", "harmful", "rejected_by_replay", "inconclusive", "waiting")
# Most informative first: a measured win or harm teaches most, a replay verdict next, an
# experiment that ended without a verdict less, a candidate still waiting least.
_RANK = {"promoted": 0, "harmful": 0, "rejected_by_replay": 1, "inconclusive": 2, "waiting": 3}
MAX_ENTRIES = 8
SCAN_VERSIONS = 40  # the newest versions read to choose from, so a long history stays cheap


@dataclass(frozen=True)
class Lift:
    """Variant minus control on the experiment's primary metric, from its last analysis."""

    metric: str
    relative: float | None  # variant/control - 1
    relative_low: float | None
    relative_high: float | None

    def describe(self) -> str:
        if self.relative is None:
            return f"{self.metric}: lift not computable"
        text = f"{self.metric} {_percent(self.relative)} relative to control"
        if self.relative_low is not None and self.relative_high is not None:
            text += f" (interval {_percent(self.relative_low)} to {_percent(self.relative_high)})"
        return text


@dataclass(frozen=True)
class CandidateFacts:
    """One version as store.py reads it, with its latest experiment as a variant arm."""

    version: int
    status: str
    status_reason: str | None
    change_notes: str | None
    created_at: datetime
    content_chars: int
    parent_version: int | None
    experiment_id: int | None = None
    experiment_status: str | None = None
    experiment_live: bool = False  # status in models.experiments.LIVE_STATUSES
    won: bool = False  # the experiment's winner is this version
    decision_reason: str | None = None
    ended_at: datetime | None = None
    started_at: datetime | None = None
    arm_id: int | None = None
    arm_stopped: bool = False
    stopped_reason: str | None = None
    stopped_at: datetime | None = None


@dataclass(frozen=True)
class PastCandidate:
    version: int
    outcome: str  # one of OUTCOMES
    at: datetime  # when the outcome happened (or the version was made, when it has not)
    change_notes: str | None
    reason: str | None
    lift: Lift | None = None
    experiment_id: int | None = None
    content_chars: int = 0
    parent_version: int | None = None

    def to_context(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "outcome": self.outcome,
            "change_notes": self.change_notes,
            "reason": self.reason,
            "lift": None if self.lift is None else self.lift.describe(),
            "experiment_id": self.experiment_id,
        }


def classify(facts: CandidateFacts, lift: Lift | None = None) -> PastCandidate | None:
    """What became of the version; None when it was never a tested or waiting candidate."""
    outcome, reason, at = _outcome(facts)
    if outcome is None:
        return None
    return PastCandidate(
        version=facts.version,
        outcome=outcome,
        at=at,
        change_notes=facts.change_notes,
        reason=reason,
        lift=lift if outcome == "promoted" else None,
        experiment_id=facts.experiment_id,
        content_chars=facts.content_chars,
        parent_version=facts.parent_version,
    )


def _outcome(facts: CandidateFacts) -> tuple[str | None, str | None, datetime]:
    made = facts.created_at
    if facts.experiment_id is not None:
        if facts.arm_stopped:
            return "harmful", facts.stopped_reason, facts.stopped_at or made
        if facts.experiment_live:
            # Before `won`: an experiment awaiting approval already names its proposed
            # winner, which is not promoted until a person approves it.
            state = (facts.experiment_status or "").replace("_", " ")
            return "waiting", f"in experiment {facts.experiment_id}, {state}", made
        if facts.won:
            return "promoted", facts.decision_reason, facts.ended_at or made
        return "inconclusive", facts.decision_reason, facts.ended_at or made
    if facts.status == "rejected":
        return "rejected_by_replay", facts.status_reason, made
    if facts.status in ("candidate", "testing"):
        return "waiting", "not tested yet", made
    return None, None, made


def ordered(entries: Iterable[PastCandidate], limit: int = MAX_ENTRIES) -> list[PastCandidate]:
    """Most informative outcome first, then newest; at most `limit`."""
    ranked = sorted(entries, key=lambda e: (_RANK[e.outcome], -e.at.timestamp(), -e.version))
    return ranked[:limit]


def lift_of(statistics: Any, arm_id: int) -> Lift | None:
    """The arm's comparison with control in an analysis' statistics JSON (as
    ExperimentAnalysis.to_dict stores it: {"comparisons": [{"arm_id", "metric", "relative",
    "relative_low", "relative_high", ...}]}); None when it holds none (a row edited by hand
    or written before the field existed)."""
    comparisons = statistics.get("comparisons") if isinstance(statistics, dict) else None
    if not isinstance(comparisons, list):
        return None
    for item in comparisons:
        if isinstance(item, dict) and item.get("arm_id") == arm_id:
            return Lift(
                metric=str(item.get("metric") or "primary metric"),
                relative=_finite(item.get("relative")),
                relative_low=_finite(item.get("relative_low")),
                relative_high=_finite(item.get("relative_high")),
            )
    return None


def promoted_arms(facts: Sequence[CandidateFacts]) -> dict[int, int]:
    """Experiment id -> the winning arm's id, for the promoted versions among `facts`."""
    return {
        f.experiment_id: f.arm_id
        for f in facts
        if f.won and f.experiment_id is not None and f.arm_id is not None
    }


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _percent(value: float) -> str:
    return f"{value * 100:+.1f}%"
