"""For any prompts, versions, experiments, arms, weights and statuses, on SQLite and
PostgreSQL, the routing snapshot (optimizer.routing_refresh.load, evaluated by
optimizer.routing) answers every unit exactly what the database-backed resolve it replaced
answered: the same JSON, byte for byte as the server sends it, and the same errors.

`database_resolve` below is that resolve, kept here as the oracle: three queries per call,
the answer built from the rows."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.experiments import (
    ARM_STATUSES,
    EXPERIMENT_STATUSES,
    LIVE_STATUSES,
    SPLIT_STATUSES,
    Experiment,
    ExperimentArm,
)
from models.prompts import Prompt, PromptVersion
from optimizer.assignment import pick_arm
from optimizer.errors import Conflict, NotFound
from optimizer.routing_refresh import load

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        # One database per module on purpose: each example adds a prompt of its own name
        # and reads only that one.
        HealthCheck.function_scoped_fixture,
    ],
)
_names = itertools.count()
UNITS = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and "\x00" not in s)


# --- the oracle: resolve as it read the database before the snapshot ------------------------


def database_resolve(session: Session, name: str, unit_id: str) -> dict[str, Any]:
    prompt = session.execute(select(Prompt.id, Prompt.name).where(Prompt.name == name)).first()
    if prompt is None:
        raise NotFound(f"no prompt named {name!r}; create it with POST /prompts")
    experiment = session.execute(
        select(Experiment.id, Experiment.status).where(
            Experiment.prompt_id == prompt.id, Experiment.status.in_(LIVE_STATUSES)
        )
    ).first()
    if experiment is not None:
        # A winner awaiting approval keeps the split: it routes as a running experiment.
        answer = _from_experiment(
            session, prompt.name, experiment.id, experiment.status in SPLIT_STATUSES, unit_id
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


# --- random worlds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    number: int
    control: bool
    weight: float
    status: str


@dataclass(frozen=True)
class ExperimentSpec:
    status: str
    arms: tuple[ArmSpec, ...]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[int, int | None, list[ExperimentSpec]]:
    versions = draw(st.integers(1, 4))
    active = draw(st.none() | st.integers(1, versions))
    weights = st.sampled_from([1.0, 2.0, 0.5, 3.0]) | st.floats(
        1e-6, 1e6, allow_nan=False, allow_infinity=False
    )
    experiments = []
    live = False
    for _ in range(draw(st.integers(0, 2))):
        status = draw(st.sampled_from(EXPERIMENT_STATUSES))
        if status in LIVE_STATUSES:
            if live:  # one live experiment per prompt: the database refuses a second
                status = "completed"
            live = True
        numbers = draw(st.permutations(range(1, versions + 1)))[: draw(st.integers(1, versions))]
        controls = draw(st.sets(st.sampled_from(numbers), max_size=2))
        arms = tuple(
            ArmSpec(n, n in controls, draw(weights), draw(st.sampled_from(ARM_STATUSES)))
            for n in numbers
        )
        experiments.append(ExperimentSpec(status, arms))
    return versions, active, experiments


def insert(
    engine: Engine, name: str, versions: int, active: int | None, specs: list[ExperimentSpec]
) -> None:
    with Session(engine) as session, session.begin():
        prompt = Prompt(name=name)
        session.add(prompt)
        session.flush()
        ids = {}
        for number in range(1, versions + 1):
            content = f"{name} v{number} ✓"
            row = PromptVersion(
                prompt_id=prompt.id,
                version=number,
                content=content,
                content_hash=hashlib.sha256(content.encode()).hexdigest(),
                status="active" if number == active else "candidate",
            )
            session.add(row)
            session.flush()
            ids[number] = row.id
        for spec in specs:
            experiment = Experiment(prompt_id=prompt.id, status=spec.status)
            session.add(experiment)
            session.flush()
            for arm in spec.arms:
                session.add(
                    ExperimentArm(
                        experiment_id=experiment.id,
                        version_id=ids[arm.number],
                        is_control=arm.control,
                        weight=arm.weight,
                        status=arm.status,
                    )
                )
            session.flush()


def outcome(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except (NotFound, Conflict) as exc:
        return (type(exc).__name__, str(exc))


@PROPERTY_SETTINGS
@given(world=worlds(), units=st.lists(UNITS, min_size=1, max_size=20))
def test_the_snapshot_answers_what_the_database_resolve_answered(
    module_engine: Engine, world: tuple[int, int | None, list[ExperimentSpec]], units: list[str]
) -> None:
    versions, active, specs = world
    name = f"prompt-{next(_names)}-é"
    insert(module_engine, name, versions, active, specs)
    note(f"{name}: {versions} versions, active {active}, experiments {specs}")
    snapshot = load(module_engine, None)
    with Session(module_engine) as session:
        for unit in [*units, "u1", "ü 🙂/é"]:
            expected = outcome(database_resolve, session, name, unit)
            assert outcome(snapshot.routing.answer, name, unit) == expected, unit
            if isinstance(expected, dict):
                # What aiohttp's json_response sent for the old answer, byte for byte.
                assert snapshot.routing.body(name, unit) == json.dumps(expected).encode()
        missing = f"{name}-missing"
        assert outcome(snapshot.routing.answer, missing, "u") == outcome(
            database_resolve, session, missing, "u"
        )
