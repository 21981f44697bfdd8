"""Experiments as stored: create, list and show them (how they end or change state:
optimizer.experiments.transitions).

Functions take a Session and flush; callers own the transaction (`with sessions.begin()`).
Settings are validated by optimizer.experiments.validation; references to prompts and
versions are checked here against the database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.experiments import (
    EXPERIMENT_STATUSES,
    LIVE_STATUSES,
    Experiment,
    ExperimentAnalysis,
    ExperimentArm,
)
from models.prompts import Prompt, PromptVersion
from optimizer import prompts
from optimizer.clock import iso
from optimizer.errors import Conflict, InvalidInput, NotFound
from optimizer.experiments.rollup import served_and_units
from optimizer.experiments.validation import (
    ExperimentSettings,
    guardrails_to_json,
    parse_arms,
    parse_settings,
)
from optimizer.text_input import refuse_unstorable, shown

DEFAULT_CANDIDATES = 3


# --- views ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmView:
    id: int
    version: int
    version_id: int
    is_control: bool
    weight: float
    status: str
    stopped_reason: str | None
    conversations: int  # served this arm's version
    units: int  # assigned to this arm's slice

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "version_id": self.version_id,
            "is_control": self.is_control,
            "weight": self.weight,
            "status": self.status,
            "stopped_reason": self.stopped_reason,
            "conversations": self.conversations,
            "units": self.units,
        }


@dataclass(frozen=True)
class AnalysisView:
    id: int
    decision: str
    reason: str
    srm_detected: bool
    statistics: Any
    checked_at: datetime
    job_id: int | None = None

    @classmethod
    def of(cls, row: ExperimentAnalysis) -> AnalysisView:
        return cls(
            row.id,
            row.decision,
            row.reason,
            row.srm_detected,
            _loads_or_text(row.statistics),
            row.checked_at,
            row.job_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "decision": self.decision,
            "reason": self.reason,
            "srm_detected": self.srm_detected,
            "statistics": self.statistics,
            "checked_at": iso(self.checked_at),
        }


@dataclass(frozen=True)
class DecisionView:
    """A check that decided something other than `continue`, with its experiment's prompt."""

    id: int
    experiment_id: int
    prompt: str
    decision: str
    reason: str
    srm_detected: bool
    checked_at: datetime


@dataclass(frozen=True)
class ExperimentView:
    id: int
    prompt: str
    status: str
    primary_metric: str
    guardrails: Any
    confidence: float
    min_conversations_per_arm: int
    min_runtime_hours: float
    max_runtime_hours: float
    winner_version: int | None
    decision_reason: str | None
    created_by: str
    started_at: datetime
    ended_at: datetime | None
    arms: tuple[ArmView, ...]
    latest_analysis: AnalysisView | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "status": self.status,
            "arms": [arm.to_dict() for arm in self.arms],
            "winner_version": self.winner_version,
            "decision_reason": self.decision_reason,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "primary_metric": self.primary_metric,
            "guardrails": self.guardrails,
            "confidence": self.confidence,
            "min_conversations_per_arm": self.min_conversations_per_arm,
            "min_runtime_hours": self.min_runtime_hours,
            "max_runtime_hours": self.max_runtime_hours,
            "created_by": self.created_by,
            "latest_analysis": (
                self.latest_analysis.to_dict() if self.latest_analysis is not None else None
            ),
        }


# --- create --------------------------------------------------------------------------------


def create_experiment(
    session: Session,
    prompt_name: Any,
    variants: Any,
    *,
    weights: Any = None,
    settings: ExperimentSettings | None = None,
    created_by: str = "system",
    now: datetime,
) -> ExperimentView:
    """Control is the prompt's active version; each variant must be a candidate."""
    numbers, arm_weights = parse_arms(variants, weights)
    settings = settings or parse_settings()
    prompt = _prompt_by_name(session, prompt_name)
    prompts.lock_prompt(session, prompt.id)
    _refuse_second_live(session, prompt)
    control = session.scalar(
        select(PromptVersion).where(
            PromptVersion.prompt_id == prompt.id, PromptVersion.status == "active"
        )
    )
    if control is None:
        raise Conflict(
            f"prompt {prompt.name!r} has no active version to serve as control; "
            "activate one (rollback) first"
        )
    chosen = _variant_versions(session, prompt, numbers)
    experiment = Experiment(
        prompt_id=prompt.id,
        status="running",
        primary_metric=settings.primary_metric,
        guardrails=guardrails_to_json(settings.guardrails),
        confidence=settings.confidence,
        min_conversations_per_arm=settings.min_conversations_per_arm,
        min_runtime_hours=settings.min_runtime_hours,
        max_runtime_hours=settings.max_runtime_hours,
        created_by=created_by[:200],
        started_at=now,
    )
    session.add(experiment)
    name = prompt.name  # the failed flush below expires every loaded object
    try:
        session.flush()
    except IntegrityError:
        # Every writer takes the prompt's lock first, so only a row inserted by hand in SQL
        # meanwhile gets here: the partial unique index (one live experiment per prompt).
        raise Conflict(
            f"prompt {name!r} already has a running experiment (started "
            "at the same moment); stop it first"
        ) from None
    session.add(
        ExperimentArm(
            experiment_id=experiment.id,
            version_id=control.id,
            is_control=True,
            weight=arm_weights[0],
            status="active",
        )
    )
    for version, weight in zip(chosen, arm_weights[1:], strict=True):
        session.add(
            ExperimentArm(
                experiment_id=experiment.id,
                version_id=version.id,
                is_control=False,
                weight=weight,
                status="active",
            )
        )
        version.status = "testing"
    session.flush()
    return get_experiment(session, experiment.id)


def newest_candidates(
    session: Session, prompt_name: Any, limit: int = DEFAULT_CANDIDATES
) -> list[int]:
    prompt = _prompt_by_name(session, prompt_name)
    return list(
        session.scalars(
            select(PromptVersion.version)
            .where(PromptVersion.prompt_id == prompt.id, PromptVersion.status == "candidate")
            .order_by(PromptVersion.version.desc())
            .limit(limit)
        )
    )


def _prompt_by_name(session: Session, name: Any) -> Prompt:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"prompt must be a prompt name; got {shown(name)}", field="prompt")
    refuse_unstorable(name, "prompt")
    prompt = session.scalar(select(Prompt).where(Prompt.name == name.strip()))
    if prompt is None:
        raise InvalidInput(
            f"no prompt named {name.strip()[:200]!r}; create it first "
            "(POST /prompts or `prompt-worker prompts add NAME --file F`)",
            field="prompt",
        )
    return prompt


def _refuse_second_live(session: Session, prompt: Prompt) -> None:
    live = session.scalar(
        select(Experiment).where(
            Experiment.prompt_id == prompt.id, Experiment.status.in_(LIVE_STATUSES)
        )
    )
    if live is not None:
        raise Conflict(
            f"prompt {prompt.name!r} already has {live.status} experiment "
            f"{live.id}; stop it first (POST /experiments/{live.id}/stop or "
            f"`prompt-worker experiments stop {live.id}`)"
        )


def _variant_versions(session: Session, prompt: Prompt, numbers: list[int]) -> list[PromptVersion]:
    rows = {
        v.version: v
        for v in session.scalars(
            select(PromptVersion).where(
                PromptVersion.prompt_id == prompt.id, PromptVersion.version.in_(numbers)
            )
        )
    }
    for number in numbers:
        version = rows.get(number)
        if version is None:
            raise InvalidInput(f"prompt {prompt.name!r} has no version {number}", field="variants")
        if version.status != "candidate":
            raise InvalidInput(
                f"version {number} of {prompt.name!r} is {version.status}; only candidate "
                "versions can be tested (add the text again as a new version)",
                field="variants",
            )
    return [rows[n] for n in numbers]


# --- read ----------------------------------------------------------------------------------


def get_experiment(
    session: Session, experiment_id: int, *, with_analysis: bool = True
) -> ExperimentView:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        raise NotFound(f"no experiment with id {experiment_id}")
    return _views(session, [experiment], with_analysis=with_analysis)[0]


def live_experiments(session: Session, *, limit: int) -> list[ExperimentView]:
    """Every experiment that has not ended: those waiting for a person first (awaiting
    approval, then paused), then newest first; in one read of the experiments."""
    waiting = case(
        (Experiment.status == "awaiting_approval", 0), (Experiment.status == "paused", 1), else_=2
    )
    stmt = (
        select(Experiment)
        .where(Experiment.status.in_(LIVE_STATUSES))
        .order_by(waiting, Experiment.id.desc())
        .limit(limit)
    )
    return _views(session, list(session.scalars(stmt)), with_analysis=False)


def list_experiments(
    session: Session,
    *,
    status: str | None = None,
    prompt: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[ExperimentView]:
    """Newest first; `before_id` gives the next page (those with a smaller id)."""
    if status is not None and status not in EXPERIMENT_STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(EXPERIMENT_STATUSES)}; got {shown(status)}",
            field="status",
        )
    stmt = select(Experiment).order_by(Experiment.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(Experiment.id < before_id)
    if status is not None:
        stmt = stmt.where(Experiment.status == status)
    if prompt is not None:
        refuse_unstorable(prompt, "prompt")
        stmt = stmt.join(Prompt, Prompt.id == Experiment.prompt_id).where(Prompt.name == prompt)
    return _views(session, list(session.scalars(stmt)), with_analysis=False)


def _views(
    session: Session, experiments: list[Experiment], *, with_analysis: bool
) -> list[ExperimentView]:
    if not experiments:
        return []
    ids = [e.id for e in experiments]
    arm_rows = session.execute(
        select(ExperimentArm, PromptVersion.version)
        .join(PromptVersion, PromptVersion.id == ExperimentArm.version_id)
        .where(ExperimentArm.experiment_id.in_(ids))
        .order_by(ExperimentArm.id)
    ).all()
    counts, units = served_and_units(session, ids)
    names = dict(
        session.execute(
            select(Prompt.id, Prompt.name).where(Prompt.id.in_({e.prompt_id for e in experiments}))
        ).all()
    )
    version_numbers = {arm.version_id: number for arm, number in arm_rows}
    out = []
    for e in experiments:
        arms = tuple(
            ArmView(
                arm.id,
                number,
                arm.version_id,
                arm.is_control,
                arm.weight,
                arm.status,
                arm.stopped_reason,
                int(counts.get(arm.id, 0)),
                int(units.get(arm.id, 0)),
            )
            for arm, number in arm_rows
            if arm.experiment_id == e.id
        )
        out.append(
            ExperimentView(
                id=e.id,
                prompt=names.get(e.prompt_id, "?"),
                status=e.status,
                primary_metric=e.primary_metric,
                guardrails=_loads_or_text(e.guardrails),
                confidence=e.confidence,
                min_conversations_per_arm=e.min_conversations_per_arm,
                min_runtime_hours=e.min_runtime_hours,
                max_runtime_hours=e.max_runtime_hours,
                winner_version=(
                    version_numbers.get(e.winner_version_id or 0)
                    or version_number(session, e.winner_version_id)
                ),
                decision_reason=e.decision_reason,
                created_by=e.created_by,
                started_at=e.started_at,
                ended_at=e.ended_at,
                arms=arms,
                latest_analysis=latest_analysis(session, e.id) if with_analysis else None,
            )
        )
    return out


def version_number(session: Session, version_id: int | None) -> int | None:
    if version_id is None:
        return None
    return session.scalar(select(PromptVersion.version).where(PromptVersion.id == version_id))


def _loads_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def latest_analysis(session: Session, experiment_id: int) -> AnalysisView | None:
    row = session.scalar(
        select(ExperimentAnalysis)
        .where(ExperimentAnalysis.experiment_id == experiment_id)
        .order_by(ExperimentAnalysis.id.desc())
        .limit(1)
    )
    return None if row is None else AnalysisView.of(row)


def latest_analyses(session: Session, experiment_ids: Sequence[int]) -> dict[int, AnalysisView]:
    """Per experiment that has one, its latest check, in one query."""
    if not experiment_ids:
        return {}
    newest = (
        select(func.max(ExperimentAnalysis.id))
        .where(ExperimentAnalysis.experiment_id.in_(list(experiment_ids)))
        .group_by(ExperimentAnalysis.experiment_id)
    )
    rows = session.scalars(select(ExperimentAnalysis).where(ExperimentAnalysis.id.in_(newest)))
    return {row.experiment_id: AnalysisView.of(row) for row in rows}


def list_analyses(
    session: Session, experiment_id: int, *, after_id: int = 0, limit: int
) -> list[AnalysisView]:
    """The experiment's checks with an id above `after_id`, oldest first, at most `limit`
    (keyset pages: pass the last id seen). NotFound for an experiment that does not exist."""
    if session.get(Experiment, experiment_id) is None:
        raise NotFound(f"no experiment with id {experiment_id}")
    rows = session.scalars(
        select(ExperimentAnalysis)
        .where(ExperimentAnalysis.experiment_id == experiment_id, ExperimentAnalysis.id > after_id)
        .order_by(ExperimentAnalysis.id)
        .limit(limit)
    )
    return [AnalysisView.of(row) for row in rows]


def recent_decisions(session: Session, limit: int = 10) -> list[DecisionView]:
    """The latest checks that decided something other than `continue`, newest first (by
    id: the order they were recorded), in one query."""
    a = ExperimentAnalysis
    rows = session.execute(
        select(
            a.id, a.experiment_id, Prompt.name, a.decision, a.reason, a.srm_detected, a.checked_at
        )
        .join(Experiment, Experiment.id == a.experiment_id)
        .join(Prompt, Prompt.id == Experiment.prompt_id)
        .where(a.decision != "continue")
        .order_by(a.id.desc())
        .limit(limit)
    )
    return [
        DecisionView(id_, experiment_id, name, decision, reason, bool(srm), checked_at)
        for id_, experiment_id, name, decision, reason, srm, checked_at in rows
    ]
