"""One check of one experiment: aggregate in SQL, analyse, decide, act, and record.

Everything happens in the caller's transaction, so the decision, its effects (a new active
version, stopped arms, a paused experiment) and the analysis row land together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.experiments import Experiment, ExperimentAnalysis, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.config import PromotionMode
from optimizer.experiments import transitions
from optimizer.experiments.aggregate import arm_data
from optimizer.experiments.caps import caps_in_force, fix_missing_caps
from optimizer.experiments.decide import DecisionSettings, decide
from optimizer.experiments.validation import guardrails_from_json
from optimizer.prompt_settings import effective_mode
from optimizer.stats import AnalysisSettings, ArmData, RatioSums, analyze


@dataclass(frozen=True)
class CheckOutcome:
    experiment_id: int
    prompt: str
    decision: str
    reason: str
    status: str  # the experiment's status after the check
    winner_version: int | None
    stopped_versions: tuple[int, ...]
    srm_detected: bool
    analysis_id: int

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "prompt": self.prompt,
            "decision": self.decision,
            "reason": self.reason,
            "status": self.status,
            "winner_version": self.winner_version,
            "stopped_versions": list(self.stopped_versions),
            "srm_detected": self.srm_detected,
            "analysis_id": self.analysis_id,
        }


def running_experiment_ids(session: Session) -> list[int]:
    """Only running ones: a paused experiment and one awaiting approval wait for a person,
    and checking them again could only contradict what was already decided."""
    return list(
        session.scalars(
            select(Experiment.id).where(Experiment.status == "running").order_by(Experiment.id)
        )
    )


def analysis_settings(experiment: Experiment) -> AnalysisSettings:
    return AnalysisSettings(
        primary_metric=experiment.primary_metric,
        confidence=experiment.confidence,
        guardrails=guardrails_from_json(experiment.guardrails),
    )


def decision_settings(experiment: Experiment) -> DecisionSettings:
    return DecisionSettings(
        min_conversations_per_arm=experiment.min_conversations_per_arm,
        min_runtime_hours=experiment.min_runtime_hours,
        max_runtime_hours=experiment.max_runtime_hours,
    )


def check_experiment(
    session: Session,
    experiment_id: int,
    *,
    now: datetime,
    job_id: int | None = None,
    promotion_mode: PromotionMode = "auto",
) -> CheckOutcome | None:
    """None when the experiment is no longer running (stopped, paused, decided meanwhile).
    `promotion_mode` is the PROMOTION_MODE setting; the prompt's own mode overrides it."""
    experiment = transitions.lock_experiment(session, experiment_id)
    prompt_name, own_mode = session.execute(
        select(Prompt.name, Prompt.promotion_mode).where(Prompt.id == experiment.prompt_id)
    ).one()
    if experiment.status != "running":
        return None
    rows = session.execute(
        select(ExperimentArm, PromptVersion.version)
        .join(PromptVersion, PromptVersion.id == ExperimentArm.version_id)
        .where(ExperimentArm.experiment_id == experiment_id)
        .order_by(ExperimentArm.id)
    ).all()
    arms = [arm for arm, _ in rows]
    numbers = {arm.version_id: number for arm, number in rows}
    settings = analysis_settings(experiment)
    caps = caps_in_force(experiment, settings.guardrails)
    data = arm_data(session, experiment_id, arms, numbers, settings.primary_metric, caps)
    control = next((a for a in data if a.is_control), None)
    if fixed := fix_missing_caps(session, experiment, control, caps):
        caps = {**caps, **fixed}
        data = arm_data(session, experiment_id, arms, numbers, settings.primary_metric, caps)
    analysis = analyze(data, settings, caps)
    decision = decide(analysis, data, decision_settings(experiment), experiment.started_at, now)
    transitions.apply_decision(
        session,
        experiment,
        arms,
        decision,
        now=now,
        promotion_mode=effective_mode(own_mode, promotion_mode),
    )
    srm = bool(analysis.srm.detected)
    row = ExperimentAnalysis(
        experiment_id=experiment_id,
        job_id=job_id,
        decision=decision.kind,
        reason=decision.reason,
        srm_detected=srm,
        statistics=json.dumps(analysis.to_dict(caps=caps, sums=_sums(data)), allow_nan=False),
        checked_at=now,
    )
    session.add(row)
    session.flush()
    stopped = set(decision.stopped_arm_ids)
    return CheckOutcome(
        experiment_id=experiment_id,
        prompt=prompt_name,
        decision=decision.kind,
        reason=decision.reason,
        status=experiment.status,
        winner_version=numbers.get(experiment.winner_version_id)
        if experiment.winner_version_id is not None
        else None,
        stopped_versions=tuple(numbers[a.version_id] for a in arms if a.id in stopped),
        srm_detected=srm,
        analysis_id=row.id,
    )


def _ratio(m: RatioSums) -> dict[str, Any]:
    return {
        "units": m.units,
        "sum_y": m.sum_y,
        "sum_m": m.sum_m,
        "sum_yy": m.sum_yy,
        "sum_mm": m.sum_mm,
        "sum_ym": m.sum_ym,
        "per_unit": m.per_unit,
    }


def _sums(data: list[ArmData]) -> list[dict[str, Any]]:
    """The sufficient statistics the analysis saw (per unit, per metric, and the primary
    metric per segment stratum), so a check can be recomputed later."""
    return [
        {
            "arm_id": a.arm_id,
            "version": a.version,
            "is_control": a.is_control,
            "weight": a.weight,
            "active": a.active,
            "units": a.units,
            "conversations": a.conversations,
            "metrics": {name: _ratio(m) for name, m in a.metrics.items()},
            "strata": [{"segment": k, **_ratio(m)} for k, m in a.strata.items()],
        }
        for a in data
    ]
