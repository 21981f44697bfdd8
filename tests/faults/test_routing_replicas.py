"""Routing changes reach every replica within the staleness bound: three `prompt-worker run`
processes on one PostgreSQL database, each answering resolve from its own snapshot.

A new experiment (created through one replica's admin API), a stopped arm (plain SQL, as
an admin types it), a promotion (the monitoring decision, committed by another process)
and a rollback (through another replica's admin API): for each, the test polls every
replica from just before the commit and records when each first gives the new answer. The
delay must be within STALENESS_BOUND_SECONDS plus what the test itself measured of the
change's own duration and one request's round trip; it is never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.experiments import Experiment
from optimizer.clock import utcnow
from optimizer.experiments import transitions
from optimizer.experiments.decide import Decision
from optimizer.routing_refresh import STALENESS_BOUND_SECONDS
from tests.integration.test_ingest import World, seed
from tests.support.procs import ServiceProcess
from tests.support.replicas import replicas, url_of

ADMIN = "replica-admin-token"
INGEST = "replica-ingest-token"
# Only to report a miss clearly; a pass never depends on it.
DEADLINE_SECONDS = STALENESS_BOUND_SECONDS + 15


def resolve(proc: ServiceProcess, unit: str) -> dict[str, Any]:
    status, body = proc.request("GET", f"/v1/prompts/bot/resolve?unit_id={unit}", token=INGEST)
    assert status == 200, body
    answer: dict[str, Any] = body
    return answer


def reaches_every_replica(
    procs: list[ServiceProcess],
    unit: str,
    change: Callable[[], None],
    expected: Callable[[dict[str, Any]], bool],
    what: str,
) -> list[float]:
    """Per replica, the seconds from just before `change` began to the first answer for
    `unit` that `expected` accepts; asserts each is within the bound plus the measured
    tolerance."""
    start = time.monotonic()
    change()
    change_took = time.monotonic() - start
    delays: dict[int, float] = {}
    longest_request = 0.0
    while len(delays) < len(procs):
        assert time.monotonic() - start < DEADLINE_SECONDS, f"{what}: only {delays} reached"
        for i, proc in enumerate(procs):
            if i in delays:
                continue
            sent = time.monotonic()
            answer = resolve(proc, unit)
            now = time.monotonic()
            longest_request = max(longest_request, now - sent)
            if expected(answer):
                delays[i] = now - start
    tolerance = change_took + longest_request
    worst = max(delays.values())
    print(f"{what}: {', '.join(f'{delays[i] * 1000:.0f} ms' for i in sorted(delays))}")
    assert worst <= STALENESS_BOUND_SECONDS + tolerance, (what, delays, tolerance)
    return [delays[i] for i in sorted(delays)]


def experiment_arms(engine: Engine, experiment_id: int) -> dict[int, int]:
    """version number -> arm id."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT v.version, a.id FROM ai_ab_experiment_arms a "
                "JOIN ai_prompt_versions v ON v.id = a.version_id WHERE a.experiment_id = :e"
            ),
            {"e": experiment_id},
        )
        return {number: arm for number, arm in rows}


def same_everywhere(procs: list[ServiceProcess], units: list[str]) -> None:
    for unit in units:
        answers = [resolve(proc, unit) for proc in procs]
        assert all(answer == answers[0] for answer in answers), (unit, answers)


@pytest.mark.postgres
def test_routing_changes_reach_every_replica_within_the_bound(pg_engine, tmp_path):
    seed(pg_engine, "bot", active=1)
    env = {"ADMIN_TOKEN": ADMIN, "INGEST_TOKEN": INGEST, "APP_RATE_LIMIT_PER_SECOND": "0"}
    units = [f"user-{i}" for i in range(40)]
    with replicas(url_of(pg_engine), tmp_path, 3, **env) as procs:
        assert all(resolve(p, "user-0")["version"] == 1 for p in procs)

        # A new experiment, created through replica 1's admin API.
        created: dict[str, Any] = {}

        def create() -> None:
            status, body = procs[1].request(
                "POST", "/experiments", {"prompt": "bot", "variants": [2, 3]}, token=ADMIN
            )
            assert status == 201, body
            created.update(body)

        reaches_every_replica(
            procs,
            "user-0",
            create,
            lambda a: a["experiment_id"] == created.get("id"),
            "new experiment",
        )
        experiment_id = int(created["id"])
        arms = experiment_arms(pg_engine, experiment_id)
        world = World(0, "bot", {}, experiment_id, arms, {n: 1.0 for n in arms})
        [in_arm_3] = world.units_of(3)
        assert all(resolve(p, in_arm_3)["version"] == 3 for p in procs)
        same_everywhere(procs, units)

        # A stopped arm, by plain SQL: its units go to control.
        def stop_arm() -> None:
            with pg_engine.begin() as conn:
                conn.execute(
                    text("UPDATE ai_ab_experiment_arms SET status = 'stopped' WHERE id = :a"),
                    {"a": arms[3]},
                )

        reaches_every_replica(
            procs,
            in_arm_3,
            stop_arm,
            lambda a: a["version"] == 1 and a["arm"] == {"id": arms[1], "role": "control"},
            "stopped arm",
        )
        same_everywhere(procs, units)

        # A promotion, committed by another process as a monitoring job would.
        def promote() -> None:
            with Session(pg_engine) as session, session.begin():
                experiment = transitions.lock_experiment(session, experiment_id)
                decision = Decision("promote", arms[2], (), "variant 2 wins")
                transitions.apply_decision(
                    session,
                    experiment,
                    transitions.arms_of(session, experiment_id),
                    decision,
                    now=utcnow(),
                )

        reaches_every_replica(
            procs,
            "user-0",
            promote,
            lambda a: (a["version"], a["experiment_id"]) == (2, None),
            "promotion",
        )
        with Session(pg_engine) as session:
            assert session.get(Experiment, experiment_id).status == "completed"
        same_everywhere(procs, units)

        # A rollback, through replica 2's admin API.
        def roll_back() -> None:
            status, body = procs[2].request(
                "POST", "/prompts/bot/rollback", {"version": 1}, token=ADMIN
            )
            assert status == 200, body

        reaches_every_replica(procs, "user-0", roll_back, lambda a: a["version"] == 1, "rollback")
        same_everywhere(procs, units)
        for proc in procs:
            assert proc.events("listening for routing changes"), proc.logs()
