"""The seeded worlds' live experiments are backed by their conversations
(tests/support/ui_seed.py): the arms' units and conversations the pages show
(store.get_experiment) are those of the experiment's latest stored check, whether read from
the rollup the seed leaves or from the raw rows alone; the rows are what ingest would have
stored; and a monitoring check run on the seeded database reads them and finds the sums
the latest check stored."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentArm
from models.rollups import ExperimentStratumSums, ExperimentUnitSums
from optimizer.assignment import pick_arm
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.experiments import store
from optimizer.experiments.monitor import check_experiment
from tests.support.ui_seed import Seeded, seed_small

SUM_KEYS = ("units", "sum_y", "sum_m", "sum_yy", "sum_mm", "sum_ym")


def _live_ids(session: Session, seeded: Seeded) -> list[int]:
    """The running experiment, then the paused one."""
    live = {e.status: e.id for e in store.live_experiments(session, limit=10)}
    assert live == {"running": seeded.running_experiment_id, "paused": live["paused"]}
    return [live["running"], live["paused"]]


def _latest_sums(session: Session, experiment_id: int) -> dict[int, dict[str, Any]]:
    latest = store.latest_analyses(session, [experiment_id])[experiment_id]
    return {s["arm_id"]: s for s in latest.statistics["sums"]}


def _routed_to_control(session: Session, experiment_id: int, control_id: int) -> int:
    """Conversations control served to units of another arm's slice (a stopped arm's)."""
    return int(
        session.scalar(
            select(func.count()).where(
                Conversation.experiment_id == experiment_id,
                Conversation.arm_id == control_id,
                Conversation.assigned_arm_id != Conversation.arm_id,
            )
        )
        or 0
    )


def _drop_rollup(session: Session, experiment_id: int) -> None:
    """As if no check had rolled the experiment up: every row is read raw."""
    for model in (ExperimentUnitSums, ExperimentStratumSums):
        session.execute(delete(model).where(model.experiment_id == experiment_id))
    session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id)
        .values(rolled_up_to=None, rollup_caps=None)
    )


def _assert_arms_match_latest_check(session: Session, experiment_id: int) -> None:
    view = store.get_experiment(session, experiment_id)
    sums = _latest_sums(session, experiment_id)
    assert [a.id for a in view.arms] == list(sums)
    control = next(a for a in view.arms if a.is_control)
    routed = _routed_to_control(session, experiment_id, control.id)
    stopped = [a for a in view.arms if a.status == "stopped"]
    # Traffic goes back to control only from a stopped arm's slice.
    assert (routed > 0) == bool(stopped)
    for arm in view.arms:
        check = sums[arm.id]
        assert check["units"] > 0 and check["conversations"] > 0
        assert arm.units == check["units"], arm
        # Control served its own units and, since the stop, the stopped arm's new ones; a
        # check counts only each arm's own conversations.
        extra = routed if arm.is_control else 0
        assert arm.conversations == check["conversations"] + extra, arm


def _assert_rows_as_ingested(session: Session, experiment_id: int) -> None:
    """Each row's slice is the unit's assignment; it was served its slice's version, or
    control's once its arm had stopped; within the run, up to the latest check."""
    experiment = session.get(Experiment, experiment_id)
    assert experiment is not None
    arms = {
        a.id: a
        for a in session.scalars(
            select(ExperimentArm).where(ExperimentArm.experiment_id == experiment_id)
        )
    }
    slices = [(a.id, a.weight) for a in arms.values()]
    control = next(a for a in arms.values() if a.is_control)
    checked_at = store.latest_analyses(session, [experiment_id])[experiment_id].checked_at
    rows = session.execute(
        select(
            Conversation.unit_id,
            Conversation.arm_id,
            Conversation.assigned_arm_id,
            Conversation.version_id,
            Conversation.occurred_at,
            Conversation.success,
            Conversation.segment,
        ).where(Conversation.experiment_id == experiment_id)
    ).all()
    assert rows
    for unit, served, assigned, version_id, at, success, segment in rows:
        assert served is not None and assigned == pick_arm(experiment_id, unit, slices)
        assert version_id == arms[served].version_id
        stopped_at = arms[assigned].stopped_at
        if served == assigned:
            assert stopped_at is None or at < stopped_at
        else:
            assert served == control.id and stopped_at is not None and at > stopped_at
        assert experiment.started_at < at < checked_at
        assert success is not None and segment


def _close(a: float, b: float) -> bool:
    """Equal but for the order the database added the values in."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _assert_same_sums(new: dict[str, Any], old: dict[str, Any]) -> None:
    assert (new["units"], new["conversations"]) == (old["units"], old["conversations"])
    assert (new["active"], new["is_control"]) == (old["active"], old["is_control"])
    assert new["metrics"].keys() == old["metrics"].keys()
    for name, m in new["metrics"].items():
        for key in SUM_KEYS:
            assert _close(m[key], old["metrics"][name][key]), (name, key)
    strata_new = {s["segment"]: s for s in new["strata"]}
    strata_old = {s["segment"]: s for s in old["strata"] if s["units"]}
    assert strata_new and strata_new.keys() == strata_old.keys()
    for segment, s in strata_new.items():
        assert all(_close(s[k], strata_old[segment][k]) for k in SUM_KEYS), segment


def _assert_check_sees_the_seeded_sums(engine: Engine, seeded: Seeded, now: datetime) -> None:
    """A check now, on the rollup as seeded and then from the raw rows alone, finds the
    sums the latest stored check holds. Rolled back: the seeded world stays as it was."""
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    for from_raw_rows in (False, True):
        with session_factory(engine)() as session:
            stored = _latest_sums(session, experiment_id)
            caps = store.latest_analyses(session, [experiment_id])[experiment_id]
            if from_raw_rows:
                _drop_rollup(session, experiment_id)
            outcome = check_experiment(session, experiment_id, now=now)
            assert outcome is not None
            fresh = store.latest_analyses(session, [experiment_id])[experiment_id]
            assert fresh.id == outcome.analysis_id
            assert fresh.statistics["caps"] == caps.statistics["caps"]
            seen = {s["arm_id"]: s for s in fresh.statistics["sums"]}
            assert seen.keys() == stored.keys()
            assert all(s["units"] > 0 for s in seen.values())
            for arm_id, sums in seen.items():
                _assert_same_sums(sums, stored[arm_id])
            session.rollback()


def _assert_world(engine: Engine, seeded: Seeded) -> None:
    with session_factory(engine)() as session:
        for experiment_id in _live_ids(session, seeded):
            _assert_rows_as_ingested(session, experiment_id)
            _assert_arms_match_latest_check(session, experiment_id)
            # The same figures from the raw rows alone (the rollup's unread part).
            _drop_rollup(session, experiment_id)
            _assert_arms_match_latest_check(session, experiment_id)
        session.rollback()


def test_seed_small_arms_show_the_latest_checks_figures(engine: Engine) -> None:
    now = utcnow()
    seeded = seed_small(engine, now)
    _assert_world(engine, seeded)
    _assert_check_sees_the_seeded_sums(engine, seeded, now)


def test_seed_large_arms_show_the_latest_checks_figures(
    large_seed: tuple[Engine, Seeded],
) -> None:
    """SLOW: the large seed (200 checks, about 38,000 conversations) on SQLite."""
    engine, seeded = large_seed
    _assert_world(engine, seeded)
    _assert_check_sees_the_seeded_sums(engine, seeded, utcnow())
