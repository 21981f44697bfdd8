"""Experiments on SQLite and PostgreSQL: creation rules, SQL aggregation against a Python
recomputation, and end to end through the admin HTTP API with the monitoring job deciding:
promote, no promotion in A/A, SRM pause, a harmful arm stopped, stop by hand."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentAnalysis, ExperimentArm
from models.prompts import PromptActivation, PromptVersion
from optimizer.cli import experiments as cli_experiments
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import Conflict, InvalidInput
from optimizer.experiments import store, transitions, validation
from optimizer.experiments.aggregate import arm_data
from optimizer.experiments.monitor import CheckOutcome, check_experiment
from optimizer.jobs.monitoring import monitor_experiments
from optimizer.run_stats import RunStats
from optimizer.stats import RatioSums
from tests.support.experiments import (
    Clock,
    add_conversations,
    arm_ids,
    make_ctx,
    make_job,
    python_arm_sums,
    seed_prompt,
    version_statuses,
)
from tests.support.http_client import ClientMaker

TOKEN = "admin-token-for-experiments"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTINGS = Settings(admin_token=TOKEN)
AFTER_GATES = timedelta(hours=25)


def create(engine: Engine, variants: Any, **kwargs: Any) -> store.ExperimentView:
    settings_keys = (
        "primary_metric",
        "guardrails",
        "confidence",
        "min_conversations_per_arm",
        "min_runtime_hours",
        "max_runtime_hours",
    )
    settings = validation.parse_settings(**{k: kwargs.pop(k) for k in settings_keys if k in kwargs})
    with session_factory(engine).begin() as session:
        return store.create_experiment(
            session,
            kwargs.pop("prompt", "support-bot"),
            variants,
            settings=settings,
            now=utcnow(),
            **kwargs,
        )


def experiment_count(engine: Engine) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(Experiment)) or 0)


# --- creation rules ------------------------------------------------------------------------


BAD_CREATES = [
    ({"variants": []}, "variants"),
    ({"variants": "2"}, "variants"),
    ({"variants": [True]}, "variants[0]"),
    ({"variants": [2, 2]}, "variants"),
    ({"variants": [9]}, "variants"),  # no such version
    ({"variants": [1]}, "variants"),  # the active version
    ({"variants": [2], "weights": [1]}, "weights"),
    ({"variants": [2], "weights": [1, 0]}, "weights[1]"),
    ({"variants": [2], "weights": [1, "2"]}, "weights[1]"),
    # Subnormal weights: the unit's point times their sum rounds, and the split drifts.
    ({"variants": [2], "weights": [5e-324, 5e-324]}, "weights[0]"),
    ({"variants": [2], "weights": [1e-7, 1]}, "weights[0]"),
    ({"variants": [2], "prompt": "nope"}, "prompt"),
    ({"variants": [2], "prompt": 7}, "prompt"),
    ({"variants": [2], "primary_metric": "latency_ms"}, "primary_metric"),
    ({"variants": [2], "confidence": 1.5}, "confidence"),
    ({"variants": [2], "confidence": float("nan")}, "confidence"),
    ({"variants": [2], "min_conversations_per_arm": 0}, "min_conversations_per_arm"),
    ({"variants": [2], "min_conversations_per_arm": 10.5}, "min_conversations_per_arm"),
    ({"variants": [2], "min_runtime_hours": 48, "max_runtime_hours": 24}, "max_runtime_hours"),
    ({"variants": [2], "guardrails": {"metric": "rating"}}, "guardrails"),
    ({"variants": [2], "guardrails": [{"metric": "mood"}]}, "guardrails[0].metric"),
    ({"variants": [2], "guardrails": [{"metric": "rating", "tol": 1}]}, "guardrails[0].tol"),
    (
        {"variants": [2], "guardrails": [{"metric": "cost_usd", "tolerance": -1}]},
        "guardrails[0].tolerance",
    ),
    (
        {"variants": [2], "guardrails": [{"metric": "rating", "higher_is_better": "yes"}]},
        "guardrails[0].higher_is_better",
    ),
    ({"variants": [2], "guardrails": [{"metric": "rating"}, {"metric": "rating"}]}, "guardrails"),
]


def test_negative_zero_is_stored_as_zero(engine):
    seed_prompt(engine)
    view = create(
        engine, [2], min_runtime_hours=-0.0, guardrails=[{"metric": "rating", "tolerance": -0.0}]
    )
    shown = json.dumps(view.to_dict())
    assert "-0.0" not in shown
    assert view.min_runtime_hours == 0.0


@pytest.mark.parametrize(("kwargs", "field"), BAD_CREATES)
def test_bad_creation_names_the_field_and_writes_nothing(engine, kwargs, field):
    seed_prompt(engine)
    kwargs = dict(kwargs)
    with pytest.raises(InvalidInput) as caught:
        create(engine, kwargs.pop("variants"), **kwargs)
    assert caught.value.field == field, str(caught.value)
    assert experiment_count(engine) == 0
    assert version_statuses(engine) == {1: "active", 2: "candidate", 3: "candidate"}


def test_creation_makes_arms_and_marks_variants_testing(engine):
    seed_prompt(engine)
    view = create(
        engine,
        [3, 2],
        weights=[2, 1, 1],
        confidence=0.95,
        guardrails=[{"metric": "latency_ms", "tolerance": 0.2}],
    )
    assert view.status == "running" and view.prompt == "support-bot"
    assert [(a.version, a.is_control, a.weight, a.status) for a in view.arms] == [
        (1, True, 2.0, "active"),
        (3, False, 1.0, "active"),
        (2, False, 1.0, "active"),
    ]
    assert view.confidence == 0.95
    assert view.guardrails == [
        {
            "metric": "latency_ms",
            "higher_is_better": False,
            "tolerance": 0.2,
            "required": False,
            "cap": None,
        }
    ]
    assert version_statuses(engine) == {1: "active", 2: "testing", 3: "testing"}
    default = validation.parse_settings()
    assert {g["metric"] for g in json.loads(validation.guardrails_to_json(default.guardrails))} == {
        "rating",
        "cost_usd",
        "latency_ms",
    }


def test_one_live_experiment_per_prompt(engine):
    seed_prompt(engine, candidates=3)
    first = create(engine, [2])
    with pytest.raises(Conflict) as caught:
        create(engine, [3])
    message = str(caught.value)
    assert f"already has running experiment {first.id}" in message
    assert "stop it first" in message
    with session_factory(engine).begin() as session:
        transitions.stop_experiment(session, first.id, actor="test", now=utcnow())
    second = create(engine, [3])
    assert second.status == "running"
    assert version_statuses(engine) == {1: "active", 2: "retired", 3: "testing", 4: "candidate"}


def test_concurrent_creation_is_refused_by_the_database(engine, monkeypatch):
    """The check-then-insert race: the partial unique index has the last word."""
    seed_prompt(engine, candidates=3)
    create(engine, [2])
    monkeypatch.setattr(store, "_refuse_second_live", lambda session, prompt: None)
    with pytest.raises(Conflict, match="already has a running experiment"):
        create(engine, [3])
    assert experiment_count(engine) == 1


def test_no_active_version_is_a_conflict(engine):
    seed_prompt(engine)
    with session_factory(engine).begin() as session:
        session.get(PromptVersion, 1).status = "retired"  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="no active version"):
        create(engine, [2])


# --- aggregation ---------------------------------------------------------------------------


@pytest.mark.parametrize("caps", [{}, {"cost_usd": 0.01, "latency_ms": 500.0}])
def test_aggregation_per_unit_equals_a_python_recomputation(engine, caps):
    ids = seed_prompt(engine, candidates=2)
    view = create(engine, [2, 3])
    arms = [a.id for a in view.arms]
    rng = random.Random(7)
    rows = []
    for _ in range(400):
        arm = rng.choice(arms + [None])
        maybe = rng.random
        rows.append(
            {
                "prompt_id": 1,
                "version_id": ids[1],
                "unit_id": f"u{rng.randint(0, 60)}",
                "experiment_id": view.id if arm is not None or maybe() < 0.5 else None,
                "arm_id": arm,
                # units of the (stopped) third arm's slice served control; old rows without a slice
                "assigned_arm_id": None
                if maybe() < 0.3
                else (arms[2] if arm == arms[0] and maybe() < 0.2 else arm),
                "segment": rng.choice([None, "free", "pro"]),
                "success": None if maybe() < 0.2 else maybe() < 0.4,
                "rating": None if maybe() < 0.3 else rng.randint(1, 5),
                "latency_ms": None
                if maybe() < 0.1
                else rng.choice([rng.uniform(50, 900), 1e200, 86_400_000.0]),
                "cost_usd": None if maybe() < 0.1 else rng.choice([rng.uniform(0, 0.02), 5e3]),
            }
        )
    with session_factory(engine).begin() as session:
        session.execute(insert(Conversation), rows)
    with session_factory(engine).begin() as session:
        arm_rows = session.scalars(
            select(ExperimentArm).where(ExperimentArm.experiment_id == view.id)
        ).all()
        next(a for a in arm_rows if a.id == arms[2]).status = "stopped"
        got = {a.arm_id: a for a in arm_data(session, view.id, arm_rows, {}, "success", caps)}
    want = python_arm_sums(rows, view.id, caps)
    assert set(got) == set(arms)
    for arm in arms:
        units, conversations, metrics = want.get(arm, (0, 0, {}))
        assert (got[arm].units, got[arm].conversations) == (units, conversations)
        for metric, sums in metrics.items():
            have = got[arm].metrics[metric]
            assert have.units == sums.units
            for name in ("sum_y", "sum_m", "sum_yy", "sum_mm", "sum_ym"):
                assert getattr(have, name) == pytest.approx(getattr(sums, name), rel=1e-9)
        # the strata of the primary metric add up to the arm's total
        total = sum(got[arm].strata.values(), RatioSums(0, 0, 0, 0, 0, 0))
        assert total.units == got[arm].metrics["success"].units
        assert total.sum_y == pytest.approx(got[arm].metrics["success"].sum_y)


# --- end to end through HTTP ---------------------------------------------------------------


@dataclasses.dataclass
class Api:
    client: TestClient
    engine: Engine
    stats: RunStats

    async def post(self, path: str, body: Any = None, status: int = 200) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        resp = await self.client.post(path, data=data, headers=AUTH)
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def get(self, path: str, status: int = 200) -> Any:
        resp = await self.client.get(path, headers=AUTH)
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def start(self, variants: list[int], **extra: Any) -> dict[str, Any]:
        return await self.post(
            "/experiments", {"prompt": "support-bot", "variants": variants, **extra}, status=201
        )

    async def monitor(self, hours_later: timedelta = AFTER_GATES) -> dict[str, Any]:
        clock = Clock(utcnow() + hours_later)
        ctx = dataclasses.replace(make_ctx(self.engine, clock), stats=self.stats)
        job, _ = make_job(self.engine)
        return await monitor_experiments(ctx, job)


@pytest.fixture
async def api(engine: Engine, make_client: ClientMaker) -> Api:
    seed_prompt(engine)
    stats = RunStats()
    return Api(await make_client(engine, SETTINGS, stats=stats), engine, stats)


async def fill(api: Api, experiment: dict[str, Any], per_arm: list[tuple[int, int]]) -> None:
    arms = arm_ids(api.engine, experiment["id"])
    for arm, (n, successes) in zip(arms, per_arm, strict=True):
        await asyncio.to_thread(add_conversations, api.engine, experiment["id"], arm, n, successes)


async def test_a_clear_winner_is_promoted_and_becomes_active(api):
    experiment = await api.start([2])
    assert api.stats.snapshot()["experimentsCreated"] == 1
    await fill(api, experiment, [(400, 120), (400, 240)])  # 30% vs 60%
    result = await api.monitor()
    assert result["experiments_checked"] == 1
    [decision] = result["decisions"]
    assert decision["decision"] == "promote", decision
    assert decision["winner_version"] == 2 and decision["status"] == "completed"
    shown = await api.get(f"/experiments/{experiment['id']}")
    assert shown["status"] == "completed" and shown["winner_version"] == 2
    assert shown["decision_reason"] and shown["ended_at"]
    assert [a["conversations"] for a in shown["arms"]] == [400, 400]
    assert shown["latest_analysis"]["decision"] == "promote"
    assert "sums" in shown["latest_analysis"]["statistics"]
    assert version_statuses(api.engine) == {1: "retired", 2: "active", 3: "candidate"}
    with session_factory(api.engine)() as session:
        activation = session.scalars(
            select(PromptActivation).order_by(PromptActivation.id.desc())
        ).first()
    assert activation is not None and activation.actor == f"experiment {experiment['id']}"
    assert api.stats.snapshot()["experimentsCompleted"] == 1
    # A completed experiment is not checked again.
    assert (await api.monitor())["experiments_checked"] == 0


async def test_an_aa_pair_is_not_promoted(api):
    experiment = await api.start([2])
    await fill(api, experiment, [(400, 120), (400, 120)])
    result = await api.monitor()
    [decision] = result["decisions"]
    assert decision["decision"] not in ("promote", "stop_arms", "pause_srm"), decision
    shown = await api.get(f"/experiments/{experiment['id']}")
    assert shown["winner_version"] is None
    assert version_statuses(api.engine)[1] == "active"


async def test_sample_ratio_mismatch_pauses(api):
    experiment = await api.start([2])
    await fill(api, experiment, [(900, 270), (300, 90)])  # 3:1 on 1:1 weights
    [decision] = (await api.monitor())["decisions"]
    assert decision["decision"] == "pause_srm" and decision["srm_detected"] is True
    shown = await api.get(f"/experiments/{experiment['id']}")
    assert shown["status"] == "paused"
    assert "sample ratio mismatch" in shown["decision_reason"]
    assert f"/experiments/{experiment['id']}/stop" in shown["decision_reason"]
    assert shown["latest_analysis"]["srm_detected"] is True
    # Paused experiments are left alone by monitoring, and block a second experiment.
    assert (await api.monitor())["experiments_checked"] == 0
    await api.post("/experiments", {"prompt": "support-bot", "variants": [3]}, status=409)
    assert version_statuses(api.engine) == {1: "active", 2: "testing", 3: "candidate"}


async def test_a_harmful_arm_is_stopped_and_control_kept(api):
    experiment = await api.start([2])
    await fill(api, experiment, [(400, 240), (400, 80)])  # 60% control vs 20% variant
    [decision] = (await api.monitor())["decisions"]
    assert decision["decision"] == "stop_arms", decision
    assert decision["stopped_versions"] == [2]
    shown = await api.get(f"/experiments/{experiment['id']}")
    control, variant = shown["arms"]
    assert control["status"] == "active" and variant["status"] == "stopped"
    assert variant["stopped_reason"]
    assert shown["status"] == "completed" and shown["winner_version"] is None
    assert "control version 1 stays active" in shown["decision_reason"]
    assert version_statuses(api.engine) == {1: "active", 2: "rejected", 3: "candidate"}


async def test_every_check_stores_an_analysis_row(api):
    experiment = await api.start([2, 3])
    await fill(api, experiment, [(50, 15), (50, 15), (50, 15)])
    for _ in range(3):
        [decision] = (await api.monitor(timedelta(hours=1)))["decisions"]
        assert decision["decision"] == "continue"
    with session_factory(api.engine)() as session:
        rows = session.scalars(
            select(ExperimentAnalysis).where(ExperimentAnalysis.experiment_id == experiment["id"])
        ).all()
    assert len(rows) == 3
    for row in rows:
        assert row.decision == "continue" and row.reason and row.job_id is not None
        stats = json.loads(row.statistics)
        assert [s["conversations"] for s in stats["sums"]] == [50, 50, 50]


async def test_stop_by_hand_keeps_control_and_retires_variants(api):
    experiment = await api.start([2, 3])
    stopped = await api.post(f"/experiments/{experiment['id']}/stop", {"reason": "copy change"})
    assert stopped["status"] == "stopped" and stopped["ended_at"]
    assert "copy change" in stopped["decision_reason"]
    assert "control version 1 stays active" in stopped["decision_reason"]
    assert version_statuses(api.engine) == {1: "active", 2: "retired", 3: "retired"}
    again = await api.post(f"/experiments/{experiment['id']}/stop", status=409)
    assert "already stopped" in again["error"]
    # Nothing counts it as completed; a new experiment may start.
    assert api.stats.snapshot()["experimentsCompleted"] == 0


async def test_list_and_show(api):
    experiment = await api.start(
        [2], weights=[3, 1], primary_metric="rating", min_runtime_hours=0, max_runtime_hours=48
    )
    assert experiment["primary_metric"] == "rating"
    assert [a["weight"] for a in experiment["arms"]] == [3.0, 1.0]
    assert experiment["confidence"] == SETTINGS.promotion_confidence
    assert experiment["min_conversations_per_arm"] == SETTINGS.min_conversations_per_arm
    listed = await api.get("/experiments?status=running")
    assert [e["id"] for e in listed["experiments"]] == [experiment["id"]]
    assert (await api.get("/experiments?status=completed"))["experiments"] == []
    assert len((await api.get("/experiments?prompt=support-bot&limit=5"))["experiments"]) == 1
    shown = await api.get(f"/experiments/{experiment['id']}")
    assert shown["latest_analysis"] is None
    assert {k: shown[k] for k in ("id", "prompt", "status")} == {
        "id": experiment["id"],
        "prompt": "support-bot",
        "status": "running",
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/experiments", {"prompt": "support-bot"}, 400, "variants"),
        ("post", "/experiments", {"variants": [2]}, 400, "prompt"),
        (
            "post",
            "/experiments",
            {"prompt": "support-bot", "variants": [2], "colour": 1},
            400,
            "colour",
        ),
        (
            "post",
            "/experiments",
            {"prompt": "support-bot", "variants": [2], "confidence": "x"},
            400,
            "confidence",
        ),
        ("post", "/experiments", [1], 400, None),
        ("get", "/experiments?status=bogus", None, 400, "status"),
        ("get", "/experiments?limit=0", None, 400, "limit"),
        ("get", "/experiments?colour=red", None, 400, "colour"),
        ("get", "/experiments/abc", None, 400, "id"),
        ("get", "/experiments/999", None, 404, None),
        ("post", "/experiments/999/stop", None, 404, None),
        ("post", "/experiments/1/stop", {"why": "x"}, 400, "why"),
        ("post", "/experiments/1/stop", {"reason": 5}, 400, "reason"),
    ],
)
async def test_bad_requests_answer_4xx_naming_the_field(api, method, path, body, status, field):
    if path.startswith("/experiments/1/"):
        await api.start([2])
    data = None if body is None else json.dumps(body).encode()
    resp = await getattr(api.client, method)(path, data=data, headers=AUTH)
    assert resp.status == status, await resp.text()
    answer = await resp.json()
    assert answer["field"] == field and answer["error"]


async def test_admin_token_is_required(api):
    resp = await api.client.get("/experiments")
    assert resp.status == 401
    resp = await api.client.post("/experiments", data=b"{}")
    assert resp.status == 401
    assert experiment_count(api.engine) == 0


# --- CLI -----------------------------------------------------------------------------------


def run_cli(engine: Engine, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="prompt-worker")
    cli_experiments.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args, Settings(), engine))


def test_cli_list_show_stop(engine, capsys):
    seed_prompt(engine)
    experiment = create(engine, [2, 3])
    assert run_cli(engine, "experiments", "list") == 0
    table = capsys.readouterr().out
    assert "support-bot" in table and "1*:0 2:0 3:0" in table and "running" in table
    run_cli(engine, "experiments", "list", "--json", "--status", "running")
    assert json.loads(capsys.readouterr().out)["experiments"][0]["id"] == experiment.id
    run_cli(engine, "experiments", "show", str(experiment.id))
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    run_cli(engine, "experiments", "stop", str(experiment.id), "--reason", "wrong copy")
    stopped = json.loads(capsys.readouterr().out)
    assert stopped["status"] == "stopped" and "wrong copy" in stopped["decision_reason"]
    with pytest.raises(InvalidInput, match="id must be a positive whole number"):
        run_cli(engine, "experiments", "show", "x")
    with pytest.raises(InvalidInput, match="status must be one of"):
        run_cli(engine, "experiments", "list", "--status", "bogus")
    with pytest.raises(Conflict, match="already stopped"):
        run_cli(engine, "experiments", "stop", str(experiment.id))


def test_cap_is_fixed_once_from_the_controls_early_values(engine):
    from optimizer.experiments.caps import caps_in_force, fix_missing_caps

    seed_prompt(engine)
    view = create(engine, [2])
    control, variant = (a.id for a in view.arms)
    start = utcnow() - timedelta(hours=5)
    rows = [
        {
            "prompt_id": 1,
            "version_id": 1,
            "experiment_id": view.id,
            "arm_id": control,
            "assigned_arm_id": control,
            "unit_id": f"u{i % 40}",
            "cost_usd": float(i + 1),
            "occurred_at": start + timedelta(seconds=i),
        }
        for i in range(300)
    ]
    with session_factory(engine).begin() as session:
        session.execute(insert(Conversation), rows)
    with session_factory(engine).begin() as session:
        experiment = session.get(Experiment, view.id)
        arms = session.scalars(
            select(ExperimentArm).where(ExperimentArm.experiment_id == view.id)
        ).all()
        data = arm_data(session, view.id, arms, {}, "success", {})
        fixed = fix_missing_caps(session, experiment, data[0], {})
        # 99th percentile of the first 300 values 1..300 by time (the 297th smallest)
        assert fixed == {"cost_usd": 297.0}
        # a later, larger value does not move it: a fixed cap is never computed again
    with session_factory(engine).begin() as session:
        session.execute(
            insert(Conversation),
            [{**rows[0], "cost_usd": 999.0, "occurred_at": start + timedelta(hours=1)}],
        )
    with session_factory(engine).begin() as session:
        experiment = session.get(Experiment, view.id)
        caps = caps_in_force(experiment, ())
        assert caps == {"cost_usd": 297.0}
        assert fix_missing_caps(session, experiment, data[0], caps) == {}
        capped = arm_data(session, view.id, arms, {}, "success", caps)
    total = capped[0].metrics["cost_usd"].sum_y
    assert total == pytest.approx(sum(min(v, 297.0) for v in range(1, 301)) + 297.0)
    assert variant not in {a.arm_id for a in capped if a.metrics["cost_usd"].units}


def check_now(engine: Engine, experiment_id: int) -> CheckOutcome | None:
    with session_factory(engine).begin() as session:
        return check_experiment(session, experiment_id, now=utcnow())


def test_a_cap_from_values_near_zero_never_stops_the_checks(engine):
    """An application (or anyone with the ingest token) that logs latencies of 1e-200 fixes
    a cap of 1e-200; later values above it are capped, and squaring the cap must not
    underflow PostgreSQL's float8 and fail every later check."""
    seed_prompt(engine)
    view = create(engine, [2])
    control, variant = (a.id for a in view.arms)
    start = utcnow() - timedelta(hours=5)
    rows = [
        {
            "prompt_id": 1,
            "version_id": 1 + i % 2,
            "experiment_id": view.id,
            "arm_id": (control, variant)[i % 2],
            "assigned_arm_id": (control, variant)[i % 2],
            "unit_id": f"u{i}",
            "latency_ms": 1e-200,
            "occurred_at": start + timedelta(seconds=i),
        }
        for i in range(500)
    ]
    with session_factory(engine).begin() as session:
        session.execute(insert(Conversation), rows)
    check = check_now(engine, view.id)
    assert check is not None and check.decision == "continue"
    with session_factory(engine)() as session:
        assert json.loads(session.get(Experiment, view.id).metric_caps) == {
            "latency_ms": pytest.approx(1e-200)
        }
        session.execute(
            insert(Conversation),
            [
                {
                    **rows[0],
                    "unit_id": f"late{i}",
                    "latency_ms": 500.0,
                    "arm_id": arm,
                    "assigned_arm_id": arm,
                    "version_id": 1 if arm == control else 2,
                    "occurred_at": start + timedelta(hours=1),
                }
                for i, arm in enumerate([control, variant] * 50)
            ],
        )
        session.commit()
    again = check_now(engine, view.id)
    assert again is not None and again.decision == "continue"


# --- GET /experiments/{id}/analyses -------------------------------------------------------


async def test_every_check_is_listed_oldest_first_in_keyset_pages(api):
    experiment = await api.start([2])
    empty = await api.get(f"/experiments/{experiment['id']}/analyses")
    assert empty == {"experiment_id": experiment["id"], "analyses": [], "next_after": None}
    await fill(api, experiment, [(40, 12), (40, 13)])
    for _ in range(5):  # before the runtime gate: every check continues
        result = await api.monitor(hours_later=timedelta(0))
        assert [d["decision"] for d in result["decisions"]] == ["continue"]
    with session_factory(api.engine)() as session:
        stored = session.execute(
            select(ExperimentAnalysis.id, ExperimentAnalysis.job_id)
            .where(ExperimentAnalysis.experiment_id == experiment["id"])
            .order_by(ExperimentAnalysis.id)
        ).all()
    assert len(stored) == 5
    seen: list[dict[str, Any]] = []
    pages = 0
    after = 0
    while True:
        page = await api.get(f"/experiments/{experiment['id']}/analyses?limit=2&after={after}")
        pages += 1
        assert len(page["analyses"]) <= 2
        seen += page["analyses"]
        if page["next_after"] is None:
            break
        assert page["next_after"] == page["analyses"][-1]["id"]
        after = page["next_after"]
    assert pages == 3
    assert [(a["id"], a["job_id"]) for a in seen] == [tuple(row) for row in stored]
    assert [a["checked_at"] for a in seen] == sorted(a["checked_at"] for a in seen)
    for analysis in seen:
        assert analysis["decision"] == "continue" and analysis["reason"]
        assert {"comparisons", "sums", "srm"} <= set(analysis["statistics"])
    # The latest check is the one the experiment shows.
    shown = await api.get(f"/experiments/{experiment['id']}")
    assert shown["latest_analysis"] == seen[-1]
    # A page that ends exactly at the last check says so.
    last = await api.get(f"/experiments/{experiment['id']}/analyses?after={stored[2][0]}&limit=2")
    assert [a["id"] for a in last["analyses"]] == [stored[3][0], stored[4][0]]
    assert last["next_after"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=501", "limit"), ("after=-1", "after"), ("after=x", "after")],
)
async def test_bad_analyses_query_names_the_parameter(api, query, field):
    experiment = await api.start([2])
    answer = await api.get(f"/experiments/{experiment['id']}/analyses?{query}", status=400)
    assert answer["field"] == field, answer


async def test_analyses_of_an_unknown_experiment_is_404(api):
    answer = await api.get("/experiments/999999/analyses", status=404)
    assert "999999" in answer["error"]
