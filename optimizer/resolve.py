"""Which prompt version a unit gets right now: the hot path of the application API.

Read-only (no write, so it stays fast and can never contend for a lock it does not need)
and sticky: while an experiment runs, `pick_arm` maps the unit to the same arm every time.

The answer:

    {"prompt": "support-bot", "version": 3, "version_id": 17, "content": "...",
     "experiment_id": 5 | null,
     "arm": {"id": 12, "role": "control" | "variant"} | null}

`experiment_id` and `arm` are set only while an experiment is `running`; the application
sends `experiment_id` and `version` back with each conversation it logs. A `paused`
experiment exposes nobody new: everyone gets the control version, with no experiment.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.experiments import Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.assignment import pick_arm
from optimizer.errors import Conflict, InvalidInput, NotFound
from optimizer.prompt_text import MAX_NAME_CHARS
from optimizer.text_input import check_text, text_problem

MAX_UNIT_ID = 200


def check_unit_id(value: Any, field: str = "unit_id") -> str:
    problem = text_problem(value, MAX_UNIT_ID)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}; send the id of the user or session", field=field)
    return str(value)


def check_prompt_name(value: Any, field: str = "prompt") -> str:
    # NUL and lone surrogates are refused by name (400) before the query: PostgreSQL cannot
    # even compare with such text, so "no such prompt" (404) is not an answer it can give.
    return check_text(value, field, MAX_NAME_CHARS)


def resolve(source: Engine | Session, prompt_name: str, unit_id: str) -> dict[str, Any]:
    name = check_prompt_name(prompt_name)
    unit = check_unit_id(unit_id)
    if isinstance(source, Session):
        return _resolve(source, name, unit)
    with Session(source) as session:
        return _resolve(session, name, unit)


def _resolve(session: Session, name: str, unit_id: str) -> dict[str, Any]:
    prompt = session.execute(select(Prompt.id, Prompt.name).where(Prompt.name == name)).first()
    if prompt is None:
        raise NotFound(f"no prompt named {name!r}; create it with POST /prompts")
    experiment = session.execute(
        select(Experiment.id, Experiment.status).where(
            Experiment.prompt_id == prompt.id, Experiment.status.in_(("running", "paused"))
        )
    ).first()
    if experiment is not None:
        answer = _from_experiment(
            session, prompt.name, experiment.id, experiment.status == "running", unit_id
        )
        if answer is not None:
            return answer
    version = session.execute(
        select(PromptVersion.id, PromptVersion.version, PromptVersion.content).where(
            PromptVersion.prompt_id == prompt.id, PromptVersion.status == "active"
        )
    ).first()
    if version is None:
        raise Conflict(
            f"prompt {name!r} has no active version; activate one with "
            f"POST /prompts/{name}/rollback"
        )
    return _answer(prompt.name, version.version, version.id, version.content, None, None)


def _from_experiment(
    session: Session, prompt_name: str, experiment_id: int, running: bool, unit_id: str
) -> dict[str, Any] | None:
    arms = session.execute(
        select(
            ExperimentArm.id,
            ExperimentArm.is_control,
            ExperimentArm.weight,
            ExperimentArm.status,
            PromptVersion.id.label("version_id"),
            PromptVersion.version,
            PromptVersion.content,
        )
        .join(PromptVersion, PromptVersion.id == ExperimentArm.version_id)
        .where(ExperimentArm.experiment_id == experiment_id)
        .order_by(ExperimentArm.id)
    ).all()
    control = next((arm for arm in arms if arm.is_control and arm.status == "active"), None)
    if control is None:
        return None
    if not running:
        return _answer(
            prompt_name, control.version, control.version_id, control.content, None, None
        )
    # Every arm keeps its slice; a stopped arm's units go to control.
    chosen_id = pick_arm(experiment_id, unit_id, [(arm.id, arm.weight) for arm in arms])
    chosen = next(arm for arm in arms if arm.id == chosen_id)
    if chosen.status != "active":
        chosen = control
    return _answer(
        prompt_name,
        chosen.version,
        chosen.version_id,
        chosen.content,
        experiment_id,
        {"id": chosen.id, "role": "control" if chosen.is_control else "variant"},
    )


def _answer(
    prompt_name: str,
    number: int,
    version_id: int,
    content: str,
    experiment_id: int | None,
    arm: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "prompt": prompt_name,
        "version": number,
        "version_id": version_id,
        "content": content,
        "experiment_id": experiment_id,
        "arm": arm,
    }
