"""How an experiment ends or changes state: a person's stop, a monitoring decision (promote,
stop arms, pause, inconclusive) and a promotion, each under the experiment's lock.

Functions take a Session and flush; callers own the transaction (`with sessions.begin()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.experiments import LIVE_STATUSES, Experiment, ExperimentArm
from models.prompts import PromptVersion
from optimizer import prompts
from optimizer.config import PromotionMode
from optimizer.errors import Conflict, NotFound, PromptWorkerError
from optimizer.experiments.decide import Decision
from optimizer.experiments.store import ExperimentView, get_experiment, version_number
from optimizer.experiments.validation import parse_stop_reason


def lock_experiment(session: Session, experiment_id: int) -> Experiment:
    """The experiment, read under its prompt's lock (`prompts.lock_prompt`), so no stop,
    check, rollback or new experiment of the same prompt runs meanwhile."""
    prompt_id = session.scalar(select(Experiment.prompt_id).where(Experiment.id == experiment_id))
    if prompt_id is None:
        raise NotFound(f"no experiment with id {experiment_id}")
    prompts.lock_prompt(session, prompt_id)
    experiment = session.scalar(
        select(Experiment)
        .where(Experiment.id == experiment_id)
        .execution_options(populate_existing=True)
    )
    if experiment is None:
        raise NotFound(f"no experiment with id {experiment_id}")
    return experiment


def arms_of(session: Session, experiment_id: int) -> list[ExperimentArm]:
    return list(
        session.scalars(
            select(ExperimentArm)
            .where(ExperimentArm.experiment_id == experiment_id)
            .order_by(ExperimentArm.id)
        )
    )


def stop_experiment(
    session: Session, experiment_id: int, *, actor: str, reason: str | None = None, now: datetime
) -> ExperimentView:
    reason = parse_stop_reason(reason)  # bad input is a 400 whatever the experiment's state
    experiment = lock_experiment(session, experiment_id)
    if experiment.status not in LIVE_STATUSES:
        raise Conflict(
            f"experiment {experiment_id} is already {experiment.status}; only a "
            "running, paused or awaiting_approval experiment can be stopped"
        )
    arms = arms_of(session, experiment_id)
    control = control_number(session, arms)
    note = stop_note(reason)
    why = f": {note}" if note else ""
    experiment.winner_version_id = None  # a winner awaiting approval is not one any more
    end_experiment(
        session,
        experiment,
        arms,
        status="stopped",
        now=now,
        reason=f"stopped by {actor}{why}; control version {control} stays active",
    )
    session.flush()
    return get_experiment(session, experiment_id)


def stop_note(reason: str | None) -> str | None:
    """A stop's reason as recorded (trimmed, at most 500 characters), None when blank."""
    return reason.strip()[:500] or None if reason else None


def apply_decision(
    session: Session,
    experiment: Experiment,
    arms: Sequence[ExperimentArm],
    decision: Decision,
    *,
    now: datetime,
    promotion_mode: PromotionMode = "auto",
) -> None:
    """Carry out one monitoring decision; the caller's transaction makes it atomic.
    `promotion_mode` is the prompt's effective mode: in `approve` a winner waits for a
    person (awaiting_approval) instead of becoming active."""
    if decision.kind == "continue":
        return
    if decision.kind == "promote":
        winner = _winner(experiment, arms, decision)
        if promotion_mode == "approve":
            _propose(session, experiment, winner, decision)
        else:
            promote_arm(
                session,
                experiment,
                arms,
                winner,
                actor=f"experiment {experiment.id}",
                activation_reason=decision.reason,
                reason=decision.reason,
                now=now,
            )
    elif decision.kind == "stop_arms":
        _stop_arms(session, experiment, arms, decision, now=now)
    elif decision.kind == "pause_srm":
        experiment.status = "paused"
        experiment.decision_reason = (
            f"{decision.reason} Paused for a sample ratio mismatch: the arms' traffic does "
            "not match their weights, so the comparison cannot be trusted and everyone gets "
            "the active version meanwhile. Check how units are assigned and how conversations "
            f"are logged, then stop this experiment (POST /experiments/{experiment.id}/stop) "
            "and start a new one."
        )
    elif decision.kind == "inconclusive":
        control = control_number(session, arms)
        end_experiment(
            session,
            experiment,
            arms,
            status="completed",
            now=now,
            reason=f"{decision.reason} Inconclusive; control version {control} stays active.",
        )
    else:
        raise PromptWorkerError(f"unknown decision {decision.kind!r}")
    session.flush()


def _winner(
    experiment: Experiment, arms: Sequence[ExperimentArm], decision: Decision
) -> ExperimentArm:
    winner = next((a for a in arms if a.id == decision.winner_arm_id), None)
    if winner is None or winner.is_control:
        raise PromptWorkerError(
            f"decision names arm {decision.winner_arm_id}, which is not a "
            f"variant arm of experiment {experiment.id}"
        )
    return winner


def _propose(
    session: Session, experiment: Experiment, winner: ExperimentArm, decision: Decision
) -> None:
    """Approve mode: the winner waits for a person; every arm keeps its traffic meanwhile."""
    number = version_number(session, winner.version_id)
    experiment.status = "awaiting_approval"
    experiment.winner_version_id = winner.version_id
    experiment.decision_reason = (
        f"{decision.reason} Awaiting approval (promotion mode approve): version {number} "
        "becomes active only when a person approves it (POST "
        f"/experiments/{experiment.id}/approve or `prompt-worker experiments approve "
        f"{experiment.id} --reason ...`); rejecting it keeps the control. Traffic keeps "
        "its split until then."
    )


def promote_arm(
    session: Session,
    experiment: Experiment,
    arms: Sequence[ExperimentArm],
    winner: ExperimentArm,
    *,
    actor: str,
    activation_reason: str,
    reason: str,
    now: datetime,
) -> None:
    """`winner`'s version becomes active (recorded with `actor` and `activation_reason`) and
    the experiment completes with `reason`; the other variants are retired."""
    prompts.set_active_version(
        session,
        experiment.prompt_id,
        winner.version_id,
        actor=actor,
        reason=activation_reason,
        now=now,
    )
    experiment.winner_version_id = winner.version_id
    end_experiment(
        session,
        experiment,
        [a for a in arms if a.id != winner.id],
        status="completed",
        now=now,
        reason=reason,
    )


def _stop_arms(
    session: Session,
    experiment: Experiment,
    arms: Sequence[ExperimentArm],
    decision: Decision,
    *,
    now: datetime,
) -> None:
    stopping = [a for a in arms if a.id in set(decision.stopped_arm_ids) and not a.is_control]
    for arm in stopping:
        arm.status, arm.stopped_reason, arm.stopped_at = "stopped", decision.reason, now
    _set_version_status(session, [a.version_id for a in stopping], "rejected")
    if not any(a.status == "active" and not a.is_control for a in arms):
        control = control_number(session, arms)
        end_experiment(
            session,
            experiment,
            arms,
            status="completed",
            now=now,
            reason=f"{decision.reason} No variant arm remains; control version {control} "
            "stays active.",
        )


def end_experiment(
    session: Session,
    experiment: Experiment,
    arms: Sequence[ExperimentArm],
    *,
    status: str,
    reason: str,
    now: datetime,
) -> None:
    experiment.status, experiment.decision_reason, experiment.ended_at = status, reason, now
    _set_version_status(session, [a.version_id for a in arms if not a.is_control], "retired")


def _set_version_status(session: Session, version_ids: list[int], status: str) -> None:
    # Only versions still under test: one activated by hand meanwhile is left alone.
    if version_ids:
        session.execute(
            update(PromptVersion)
            .where(PromptVersion.id.in_(version_ids), PromptVersion.status == "testing")
            .values(status=status)
        )


def control_number(session: Session, arms: Sequence[ExperimentArm]) -> int | None:
    """The control arm's version number."""
    control = next((a for a in arms if a.is_control), None)
    return version_number(session, control.version_id if control else None)
