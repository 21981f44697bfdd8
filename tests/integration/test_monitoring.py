"""The experiment_monitoring and experiment_creation handlers against real databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from models.experiments import Experiment
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import PermanentJobError, PromptWorkerError
from optimizer.experiments import store
from optimizer.jobs.creation import create_experiment_job
from optimizer.jobs.monitoring import monitor_experiments
from tests.support.experiments import (
    Clock,
    add_conversations,
    arm_ids,
    make_ctx,
    make_job,
    seed_prompt,
    version_statuses,
)


def start(engine: Engine, name: str, variants: list[int]) -> int:
    with session_factory(engine).begin() as session:
        return store.create_experiment(session, name, variants, now=utcnow()).id


async def run_monitoring(engine: Engine, hours: float = 25) -> dict[str, Any]:
    ctx = make_ctx(engine, Clock(utcnow() + timedelta(hours=hours)))
    job, _ = make_job(engine)
    return await monitor_experiments(ctx, job)


async def test_nothing_running_completes_with_zero_checked(engine):
    ctx = make_ctx(engine)
    job, progress = make_job(engine)
    result = await monitor_experiments(ctx, job)
    assert result == {
        "experiments_checked": 0,
        "decisions": [],
        "message": "no running experiments",
    }
    assert progress[-1][0] == 100


async def test_one_broken_experiment_does_not_stop_the_others(engine):
    for name in ("alpha", "beta", "gamma"):
        seed_prompt(engine, name)
    ids = [start(engine, name, [2]) for name in ("alpha", "beta", "gamma")]
    for experiment_id in ids:
        control, variant = arm_ids(engine, experiment_id)
        add_conversations(engine, experiment_id, control, 400, 120)
        add_conversations(engine, experiment_id, variant, 400, 240)
    with session_factory(engine).begin() as session:
        session.execute(
            update(Experiment).where(Experiment.id == ids[1]).values(guardrails="not json")
        )
    ctx = make_ctx(engine, Clock(utcnow() + timedelta(hours=25)))
    job, progress = make_job(engine)
    result = await monitor_experiments(ctx, job)
    assert result["experiments_checked"] == 2
    assert [d["experiment_id"] for d in result["decisions"]] == [ids[0], ids[2]]
    assert all(d["decision"] == "promote" for d in result["decisions"])
    [error] = result["errors"]
    assert error["experiment_id"] == ids[1] and "guardrails" in error["error"]
    assert "2 promote" in result["message"] and "1 failed" in result["message"]
    assert ctx.stats.snapshot()["experimentsCompleted"] == 2
    assert progress[-1][0] == 100
    # The broken one was rolled back on its own: still running, variant still testing.
    assert version_statuses(engine, "beta") == {1: "active", 2: "testing", 3: "candidate"}
    assert version_statuses(engine, "alpha")[2] == "active"


async def test_every_check_failing_fails_the_job(engine):
    seed_prompt(engine)
    experiment_id = start(engine, "support-bot", [2])
    with session_factory(engine).begin() as session:
        session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id)
            .values(guardrails='[{"metric": "mood"}]')
        )
    with pytest.raises(PromptWorkerError, match="all 1 experiment checks failed"):
        await run_monitoring(engine)


async def test_continue_leaves_everything_running(engine):
    seed_prompt(engine)
    experiment_id = start(engine, "support-bot", [2, 3])
    result = await run_monitoring(engine, hours=1)
    [decision] = result["decisions"]
    assert decision["decision"] == "continue" and decision["status"] == "running"
    assert decision["experiment_id"] == experiment_id and result["errors"] == []


# --- experiment_creation -------------------------------------------------------------------


async def create_job(
    engine: Engine, payload: dict[str, Any], settings: Settings | None = None
) -> tuple[dict[str, Any], Any]:
    ctx = make_ctx(engine, settings=settings)
    job, _ = make_job(engine, "experiment_creation", payload)
    return await create_experiment_job(ctx, job), ctx


async def test_creation_defaults_to_the_newest_three_candidates(engine):
    seed_prompt(engine, candidates=5)  # versions 2..6
    result, ctx = await create_job(
        engine,
        {"prompt": "support-bot", "scope": "global"},
        Settings(promotion_confidence=0.95, min_conversations_per_arm=250),
    )
    assert result["control_version"] == 1 and result["variant_versions"] == [4, 5, 6]
    assert ctx.stats.snapshot()["experimentsCreated"] == 1
    with session_factory(engine)() as session:
        view = store.get_experiment(session, result["experiment_id"])
    assert view.confidence == 0.95 and view.min_conversations_per_arm == 250
    assert view.created_by.startswith("job ")
    assert version_statuses(engine) == {
        1: "active",
        2: "candidate",
        3: "candidate",
        4: "testing",
        5: "testing",
        6: "testing",
    }


async def test_creation_with_named_versions(engine):
    seed_prompt(engine, candidates=3)
    result, _ = await create_job(
        engine,
        {"prompt": "support-bot", "variants": [2], "weights": [1, 3], "min_runtime_hours": 1},
    )
    assert result["variant_versions"] == [2]
    with session_factory(engine)() as session:
        view = store.get_experiment(session, result["experiment_id"])
    assert [a.weight for a in view.arms] == [1.0, 3.0] and view.min_runtime_hours == 1.0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "payload.prompt is required"),
        ({"prompt": "ghost"}, "no prompt named 'ghost'"),
        ({"prompt": "support-bot", "variants": [1]}, "only candidate versions"),
        ({"prompt": "support-bot", "colour": 1}, "unknown field 'colour' in payload"),
        ({"prompt": "support-bot", "confidence": 2}, "confidence must be"),
    ],
)
async def test_creation_bad_payload_fails_permanently(engine, payload, message):
    seed_prompt(engine)
    with pytest.raises(PermanentJobError, match=message):
        await create_job(engine, payload)


async def test_creation_without_candidates_fails_permanently(engine):
    seed_prompt(engine, candidates=0)
    with pytest.raises(PermanentJobError, match="no candidate versions"):
        await create_job(engine, {"prompt": "support-bot"})


async def test_creation_refuses_a_second_live_experiment(engine):
    seed_prompt(engine, candidates=3)
    first = start(engine, "support-bot", [2])
    with pytest.raises(PermanentJobError, match=f"already has running experiment {first}"):
        await create_job(engine, {"prompt": "support-bot"})
