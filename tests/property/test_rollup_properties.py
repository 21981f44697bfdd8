"""The experiment rollup against a full scan: for any conversations, stored in any batches
with checks in between (each check rolls up what arrived since the previous one), and with
caps fixed part way, the sums a check reads equal a recomputation over every row, on both
databases. Rows are what real traffic sends: units that come back many times, optional
fields missing, heavy-tailed and out-of-bounds values, Unicode segments, units of a stopped
arm routed to control, and rows from before per-unit assignment (no slice)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.db import session_factory
from optimizer.experiments.aggregate import arm_data
from tests.support.experiments import python_arm_sums

ARMS = 3  # control, a variant, and a variant stopped before the checks


def _world(engine: Engine) -> tuple[int, int, list[int]]:
    """A prompt with one version per arm and a fresh running experiment:
    (version, experiment, arms)."""
    with session_factory(engine).begin() as session:
        prompt = session.scalar(select(Prompt).where(Prompt.name == "rollup"))
        if prompt is None:
            prompt = Prompt(name="rollup")
            session.add(prompt)
            session.flush()
            for number in range(1, ARMS + 1):
                session.add(
                    PromptVersion(
                        prompt_id=prompt.id,
                        version=number,
                        content=f"take {number}",
                        content_hash=f"{number:064d}",
                    )
                )
            session.flush()
        versions = session.scalars(
            select(PromptVersion.id)
            .where(PromptVersion.prompt_id == prompt.id)
            .order_by(PromptVersion.version)
        ).all()
        session.execute(delete(Experiment).where(Experiment.prompt_id == prompt.id))
        experiment = Experiment(prompt_id=prompt.id, status="running")
        session.add(experiment)
        session.flush()
        arms = []
        for i, version in enumerate(versions):
            arm = ExperimentArm(
                experiment_id=experiment.id,
                version_id=version,
                weight=1.0,
                is_control=i == 0,
                status="stopped" if i == 2 else "active",
            )
            session.add(arm)
            session.flush()
            arms.append(arm.id)
        return versions[0], experiment.id, arms


heavy = st.one_of(
    st.floats(0, 1_000.0),
    st.floats(0, 1e-149),
    st.sampled_from([0.0, 999.999, 1_000.0, 1_000.000_1, 1e12]),  # in and out of bounds
    st.floats(1, 30).map(lambda x: 2.0**x),  # heavy right tail
)


@st.composite
def conversation(draw: st.DrawFn) -> dict[str, Any]:
    """A row by index of arm: served arm, assigned slice (None: before per-unit slices)."""
    served = draw(st.sampled_from([0, 1, 0]))
    routed = served == 0 and draw(st.booleans()) and draw(st.booleans())
    slice_ = draw(st.one_of(st.none(), st.just(2 if routed else served)))
    return {
        "unit": draw(st.integers(0, 12)),  # few units: they come back many times
        "served": served,
        "slice": slice_,
        "segment": draw(st.one_of(st.none(), st.sampled_from(["free", "pro", "ünï", "企業"]))),
        "success": draw(st.one_of(st.none(), st.booleans())),
        "rating": draw(st.one_of(st.none(), st.integers(1, 5))),
        "latency_ms": draw(st.one_of(st.none(), heavy.map(lambda v: v * 1000))),
        "cost_usd": draw(st.one_of(st.none(), heavy)),
    }


batches = st.lists(st.lists(conversation(), max_size=25), min_size=1, max_size=5)
caps_drawn = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"cost_usd": st.floats(1e-3, 50.0)}),
    st.just({"latency_ms": 500.0}),
)


def _rows(
    drawn: list[dict[str, Any]], version: int, experiment: int, arms: list[int]
) -> list[dict[str, Any]]:
    return [
        {
            "prompt_id": 1,
            "version_id": version,
            "experiment_id": experiment,
            "arm_id": arms[d["served"]],
            "assigned_arm_id": None if d["slice"] is None else arms[d["slice"]],
            "unit_id": f"unit-{d['unit']}",
            **{k: d[k] for k in ("segment", "success", "rating", "latency_ms", "cost_usd")},
        }
        for d in drawn
    ]


def _check(engine: Engine, experiment: int, caps: dict[str, float]) -> dict[int, Any]:
    with session_factory(engine).begin() as session:
        arms = session.scalars(
            select(ExperimentArm).where(ExperimentArm.experiment_id == experiment)
        ).all()
        return {a.arm_id: a for a in arm_data(session, experiment, arms, {}, "success", caps)}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches, caps=caps_drawn, caps_from=st.integers(0, 5))
def test_rollup_sums_equal_a_full_scan(
    module_engine: Engine,
    batches: list[list[dict[str, Any]]],
    caps: dict[str, float],
    caps_from: int,
) -> None:
    version, experiment, arms = _world(module_engine)
    prompt_id = None
    stored: list[dict[str, Any]] = []
    got: dict[int, Any] = {}
    for i, batch in enumerate(batches):
        rows = _rows(batch, version, experiment, arms)
        if rows:
            with session_factory(module_engine).begin() as session:
                prompt_id = session.scalar(select(Prompt.id).where(Prompt.name == "rollup"))
                session.execute(insert(Conversation), [{**r, "prompt_id": prompt_id} for r in rows])
        stored += rows
        # Caps fixed part way: sums capped earlier must not linger.
        got = _check(module_engine, experiment, caps if i >= caps_from else {})
    final_caps = caps if len(batches) > caps_from else {}
    want = python_arm_sums(stored, experiment, final_caps)
    for arm in arms:
        units, conversations, metrics = want.get(arm, (0, 0, {}))
        if arm != arms[2]:  # a stopped slice counts its units over all its conversations
            assert (got[arm].units, got[arm].conversations) == (units, conversations)
        for metric, sums in metrics.items():
            have = got[arm].metrics[metric]
            assert have.units == sums.units
            for name in ("sum_y", "sum_m", "sum_yy", "sum_mm", "sum_ym"):
                assert getattr(have, name) == pytest.approx(
                    getattr(sums, name), rel=1e-9, abs=1e-12
                )
    routed_units = {r["unit_id"] for r in stored if r["assigned_arm_id"] == arms[2]}
    assert got[arms[2]].units == len(routed_units)
    del prompt_id
