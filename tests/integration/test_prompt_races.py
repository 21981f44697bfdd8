"""Every pair of operations that change one prompt's versions or experiments, run at the
same moment (two admin HTTP requests, or one request and monitoring's check), on SQLite and
PostgreSQL. Whatever order they end up in, the prompt stays consistent: exactly one active
version, a live experiment's control arm is that version, and the versions marked `testing`
are exactly the live experiment's active variant arms."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.experiments.monitor import check_experiment
from optimizer.prompts import lock_prompt
from tests.support.experiments import add_conversations, arm_ids, seed_prompt
from tests.support.http_client import ClientMaker

TOKEN = "admin-token-for-races"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRIALS = 3
LIVE = ("running", "paused")


@dataclass
class Trial:
    client: TestClient
    engine: Engine
    prompt: str
    experiment_id: int | None = None


Operation = Callable[[Trial], Awaitable[int]]


async def _post(trial: Trial, path: str, body: dict[str, Any] | None = None) -> int:
    resp = await trial.client.post(path, data=json.dumps(body or {}).encode(), headers=AUTH)
    text = await resp.text()
    assert resp.status < 500, text
    assert resp.content_type == "application/json", text
    return resp.status


async def create_experiment(trial: Trial) -> int:
    return await _post(trial, "/experiments", {"prompt": trial.prompt, "variants": [3]})


async def stop_experiment(trial: Trial) -> int:
    return await _post(trial, f"/experiments/{trial.experiment_id}/stop", {"reason": "race"})


async def rollback(trial: Trial) -> int:
    # In the idle state version 2 is a candidate, as in the report that found the race.
    return await _post(trial, f"/prompts/{trial.prompt}/rollback", {"version": 2})


async def add_version(trial: Trial) -> int:
    return await _post(
        trial,
        f"/prompts/{trial.prompt}/versions",
        {"content": f"A new take, {id(asyncio.current_task())}."},
    )


def _check(engine: Engine, experiment_id: int) -> str:
    with session_factory(engine).begin() as session:
        outcome = check_experiment(session, experiment_id, now=utcnow() + timedelta(hours=25))
        return "not running" if outcome is None else outcome.decision


async def monitoring_check(trial: Trial) -> int:
    assert trial.experiment_id is not None
    decision = await asyncio.to_thread(_check, trial.engine, trial.experiment_id)
    assert decision in ("promote", "not running"), decision
    return 200


IDLE_OPERATIONS: dict[str, Operation] = {
    "create": create_experiment,
    "rollback": rollback,
    "add_version": add_version,
}
RUNNING_OPERATIONS: dict[str, Operation] = {
    **IDLE_OPERATIONS,
    "stop": stop_experiment,
    "promote": monitoring_check,
}


def _pairs(operations: dict[str, Operation]) -> list[tuple[str, str]]:
    return list(itertools.combinations_with_replacement(sorted(operations), 2))


CASES = [("idle", *pair) for pair in _pairs(IDLE_OPERATIONS)] + [
    ("running", *pair) for pair in _pairs(RUNNING_OPERATIONS)
]


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, Settings(admin_token=TOKEN))


async def _prepare(client: TestClient, engine: Engine, name: str, state: str) -> Trial:
    """v1 active, v2-v4 candidates; in the running state an experiment v1 vs v2 whose data
    make monitoring promote v2."""
    await asyncio.to_thread(seed_prompt, engine, name, 3)
    trial = Trial(client, engine, name)
    if state == "running":
        resp = await client.post(
            "/experiments",
            headers=AUTH,
            data=json.dumps({"prompt": name, "variants": [2]}).encode(),
        )
        assert resp.status == 201, await resp.text()
        trial.experiment_id = int((await resp.json())["id"])
        control, variant = arm_ids(engine, trial.experiment_id)
        await asyncio.to_thread(add_conversations, engine, trial.experiment_id, control, 400, 120)
        await asyncio.to_thread(add_conversations, engine, trial.experiment_id, variant, 400, 240)
    return trial


def _violations(engine: Engine, name: str) -> list[str]:
    with session_factory(engine)() as session:
        prompt_id = session.scalar(select(Prompt.id).where(Prompt.name == name))
        versions = dict(
            session.execute(
                select(PromptVersion.id, PromptVersion.status).where(
                    PromptVersion.prompt_id == prompt_id
                )
            ).all()
        )
        live = session.scalars(
            select(Experiment).where(Experiment.prompt_id == prompt_id, Experiment.status.in_(LIVE))
        ).all()
        arms = session.scalars(
            select(ExperimentArm).where(ExperimentArm.experiment_id.in_([e.id for e in live]))
        ).all()
    problems = []
    active = [vid for vid, status in versions.items() if status == "active"]
    if len(active) != 1:
        problems.append(f"{len(active)} active versions: {versions}")
    if len(live) > 1:
        problems.append(f"{len(live)} live experiments")
    for arm in arms:
        if arm.is_control and [arm.version_id] != active:
            problems.append(
                f"control arm serves version id {arm.version_id} "
                f"({versions[arm.version_id]}), active is {active}"
            )
    testing = {vid for vid, status in versions.items() if status == "testing"}
    under_test = {arm.version_id for arm in arms if not arm.is_control and arm.status == "active"}
    if testing != under_test:
        problems.append(
            f"versions testing {sorted(testing)} but arms under test {sorted(under_test)}"
        )
    return problems


@pytest.mark.parametrize(("state", "first", "second"), CASES)
async def test_concurrent_changes_leave_the_prompt_consistent(client, engine, state, first, second):
    operations = RUNNING_OPERATIONS if state == "running" else IDLE_OPERATIONS
    for n in range(TRIALS):
        name = f"race-{state}-{first}-{second}-{n}"
        trial = await _prepare(client, engine, name, state)
        await asyncio.gather(operations[first](trial), operations[second](trial))
        problems = await asyncio.to_thread(_violations, engine, name)
        assert not problems, f"{first} with {second} in trial {n}: {problems}"


@pytest.mark.postgres
def test_ingest_is_not_blocked_by_the_prompt_lock(pg_engine):
    """A monitoring check holds the prompt's lock while it aggregates; conversations for the
    prompt (whose foreign keys point at it) must still be accepted meanwhile."""
    seed_prompt(pg_engine, "busy-bot", 1)
    with session_factory(pg_engine)() as holder:
        prompt_id = holder.scalar(select(Prompt.id).where(Prompt.name == "busy-bot"))
        assert lock_prompt(holder, prompt_id) is not None
        with pg_engine.connect() as conn:
            conn.exec_driver_sql("SET lock_timeout = '2s'")
            version_id = conn.execute(
                select(PromptVersion.id).where(
                    PromptVersion.prompt_id == prompt_id, PromptVersion.version == 1
                )
            ).scalar_one()
            conn.execute(
                insert(Conversation).values(
                    prompt_id=prompt_id, version_id=version_id, unit_id="u1", success=True
                )
            )
            conn.commit()
        holder.rollback()
