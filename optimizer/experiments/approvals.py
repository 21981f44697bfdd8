"""A person's word on an experiment: approve or reject the winner a check proposed (promotion
mode approve leaves it `awaiting_approval`), or promote one arm by hand.

Each takes the experiment's lock (transitions.lock_experiment: its prompt's row) and checks the
status under it, so a monitoring check, a stop or another person's action at the same
moment either ran before (and this one sees its result) or waits. The bodies are the models
below, shared by the HTTP API, the CLI and the dashboard. Functions take a Session and
flush; callers own the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.experiments import LIVE_STATUSES, Experiment, ExperimentArm
from models.prompts import PromptVersion
from optimizer.errors import Conflict, InvalidInput
from optimizer.experiments import store, transitions
from optimizer.input_models import InputModel
from optimizer.prompts import MAX_VERSION
from optimizer.text_input import MAX_ID

# Room is left for the words put around it in the activation's reason (at most 5,000).
MAX_REASON_CHARS = 2_000


def _not_blank(reason: str) -> str:
    if not reason.strip():
        raise ValueError("is blank; say why (it is recorded with the change)")
    return reason


Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description=f"why: recorded with the experiment and the activation; non-blank, at "
        f"most {MAX_REASON_CHARS:,} characters",
    ),
    AfterValidator(_not_blank),
]


class DecisionBody(InputModel):
    """The body of POST /experiments/{id}/approve and /reject."""

    reason: Reason


class PromoteBody(InputModel):
    """The body of POST /experiments/{id}/promote: exactly one of `arm` and `version`."""

    arm: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(
        None, description="the id of the arm to promote (see the experiment's arms)"
    )
    version: Annotated[int, Field(ge=1, le=MAX_VERSION)] | None = Field(
        None, description="or the version number of the arm to promote"
    )
    reason: Reason


ACTIONS = ("approve", "reject", "promote", "stop")


def action_event(
    view: store.ExperimentView, action: str, *, actor: str, reason: str | None
) -> dict[str, Any]:
    """The `experiment.action` webhook's data: what a person did, and the experiment after."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}; got {action!r}")
    if action == "stop":  # optional there: sent as recorded
        reason = transitions.stop_note(reason)
    return {
        "experiment_id": view.id,
        "prompt": view.prompt,
        "action": action,
        "actor": actor,
        "reason": reason,
        "status": view.status,
        "winner_version": view.winner_version,
    }


# --- approve and reject ------------------------------------------------------------------


def _awaiting(session: Session, experiment_id: int, action: str) -> Experiment:
    experiment = transitions.lock_experiment(session, experiment_id)
    if experiment.status != "awaiting_approval":
        raise Conflict(
            f"experiment {experiment_id} is {experiment.status}, not awaiting approval; only "
            f"an experiment whose winner awaits approval can be {action} (to promote an arm "
            f"of a live experiment by hand: POST /experiments/{experiment_id}/promote)"
        )
    return experiment


def _numbers(session: Session, arms: list[ExperimentArm]) -> dict[int, int]:
    """version id -> version number, for the arms' versions."""
    rows = session.execute(
        select(PromptVersion.id, PromptVersion.version).where(
            PromptVersion.id.in_([a.version_id for a in arms])
        )
    )
    return {version_id: number for version_id, number in rows}


def _proposal(session: Session, experiment_id: int) -> str:
    """What the check that proposed the winner said, as a sentence to follow another."""
    latest = store.latest_analysis(session, experiment_id)
    if latest is None or latest.decision != "promote":
        return ""
    return f" The check that proposed it: {latest.reason}"


def approve(
    session: Session, experiment_id: int, body: DecisionBody, *, actor: str, now: datetime
) -> store.ExperimentView:
    """The proposed winner becomes active; the experiment completes."""
    experiment = _awaiting(session, experiment_id, "approved")
    arms = transitions.arms_of(session, experiment_id)
    winner = next(
        (a for a in arms if a.version_id == experiment.winner_version_id and not a.is_control),
        None,
    )
    if winner is None:
        raise Conflict(
            f"experiment {experiment_id} names no variant arm as its proposed winner (was "
            "winner_version_id edited?); promote an arm by hand "
            f"(POST /experiments/{experiment_id}/promote) or reject it"
        )
    number = _numbers(session, arms).get(winner.version_id)
    transitions.promote_arm(
        session,
        experiment,
        arms,
        winner,
        actor=actor,
        activation_reason=f"approved in experiment {experiment_id}: {body.reason}",
        reason=f"Version {number} approved by {actor}: {body.reason}."
        + _proposal(session, experiment_id),
        now=now,
    )
    session.flush()
    return store.get_experiment(session, experiment_id)


def reject(
    session: Session, experiment_id: int, body: DecisionBody, *, actor: str, now: datetime
) -> store.ExperimentView:
    """The control stays active; the experiment completes and its variants are retired."""
    experiment = _awaiting(session, experiment_id, "rejected")
    arms = transitions.arms_of(session, experiment_id)
    numbers = _numbers(session, arms)
    proposed = numbers.get(experiment.winner_version_id or 0)
    what = "The proposed winner" if proposed is None else f"Version {proposed}"
    control = transitions.control_number(session, arms)
    experiment.winner_version_id = None
    transitions.end_experiment(
        session,
        experiment,
        arms,
        status="completed",
        now=now,
        reason=f"{what} rejected by {actor}: {body.reason}; control version "
        f"{control} stays active." + _proposal(session, experiment_id),
    )
    session.flush()
    return store.get_experiment(session, experiment_id)


# --- promote by hand ---------------------------------------------------------------------


def _exactly_one(body: PromoteBody) -> None:
    if body.arm is None and body.version is None:
        raise InvalidInput(
            "arm is required: give the arm's id (arm) or its version number (version)",
            field="arm",
        )
    if body.arm is not None and body.version is not None:
        raise InvalidInput(
            "give arm or version, not both: each names the arm to promote", field="version"
        )


def _chosen(
    experiment_id: int, arms: list[ExperimentArm], numbers: dict[int, int], body: PromoteBody
) -> ExperimentArm:
    if body.arm is not None:
        field, wanted = "arm", f"arm {body.arm}"
        arm = next((a for a in arms if a.id == body.arm), None)
    else:
        field, wanted = "version", f"version {body.version}"
        arm = next((a for a in arms if numbers.get(a.version_id) == body.version), None)
    listed = ", ".join(
        f"arm {a.id} (version {numbers.get(a.version_id)}{', control' if a.is_control else ''})"
        for a in arms
    )
    if arm is None:
        raise InvalidInput(
            f"experiment {experiment_id} has no {wanted}; its arms: {listed}", field=field
        )
    if arm.is_control:
        raise InvalidInput(
            f"{wanted} is the control, whose version is already active; stop the experiment "
            f"instead (POST /experiments/{experiment_id}/stop)",
            field=field,
        )
    return arm


def promote(
    session: Session, experiment_id: int, body: PromoteBody, *, actor: str, now: datetime
) -> store.ExperimentView:
    """A variant arm of a live experiment (running, paused or awaiting approval) becomes
    active by a person's choice; the experiment completes, the other variants are retired."""
    _exactly_one(body)
    experiment = transitions.lock_experiment(session, experiment_id)
    if experiment.status not in LIVE_STATUSES:
        raise Conflict(
            f"experiment {experiment_id} is already {experiment.status}; only a running, "
            "paused or awaiting_approval experiment can have an arm promoted (to activate a "
            "version now, roll back to it: POST /prompts/{name}/rollback)"
        )
    arms = transitions.arms_of(session, experiment_id)
    numbers = _numbers(session, arms)
    arm = _chosen(experiment_id, arms, numbers, body)
    number = numbers.get(arm.version_id)
    if arm.status != "active":
        raise Conflict(
            f"arm {arm.id} (version {number}) was stopped ({arm.stopped_reason or 'no reason'}"
            "); a stopped arm is not promoted. To use its version anyway, stop the "
            "experiment and roll back to it"
        )
    transitions.promote_arm(
        session,
        experiment,
        arms,
        arm,
        actor=actor,
        activation_reason=f"promoted by hand in experiment {experiment_id}: {body.reason}",
        reason=f"Version {number} promoted by {actor}: {body.reason}; the other variants "
        "are retired.",
        now=now,
    )
    session.flush()
    return store.get_experiment(session, experiment_id)
