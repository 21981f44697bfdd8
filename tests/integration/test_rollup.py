"""The experiment rollup under real conditions: transactions that commit out of order on
PostgreSQL, ingest running while checks roll up, and retention deleting old conversations
and transcripts without changing any figure a check or an experiment view shows."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentArm
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import GROUPING_WORK_MEM, prepare_rollup_transaction, session_factory
from optimizer.experiments import store, transitions
from optimizer.experiments.aggregate import arm_data
from optimizer.experiments.caps import caps_in_force, fix_missing_caps
from optimizer.retention import prune_conversations
from optimizer.runtime import schedule
from optimizer.stats import ArmData
from tests.support.experiments import arm_ids, make_ctx, python_arm_sums, seed_prompt

SUMS = ("sum_y", "sum_m", "sum_yy", "sum_mm", "sum_ym")


def _experiment(engine: Engine) -> tuple[int, list[int], dict[int, int]]:
    versions = seed_prompt(engine)
    with session_factory(engine).begin() as session:
        view = store.create_experiment(session, "support-bot", [2], now=utcnow())
    arms = arm_ids(engine, view.id)
    by_arm = {arms[0]: versions[1], arms[1]: versions[2]}
    return view.id, arms, by_arm


def _rows(
    experiment: int, by_arm: dict[int, int], n: int, rng: random.Random, **extra: Any
) -> list[dict[str, Any]]:
    arms = list(by_arm)
    out = []
    for _ in range(n):
        arm = rng.choice(arms)
        out.append(
            {
                "prompt_id": 1,
                "version_id": by_arm[arm],
                "experiment_id": experiment,
                "arm_id": arm,
                "assigned_arm_id": arm,
                "unit_id": f"u{rng.randint(0, 40)}",  # users come back
                "success": rng.random() < 0.3 if rng.random() < 0.9 else None,
                "rating": rng.randint(1, 5) if rng.random() < 0.5 else None,
                "latency_ms": rng.paretovariate(1.2) * 100 if rng.random() < 0.8 else None,
                "cost_usd": rng.paretovariate(1.5) / 1000,
                "segment": rng.choice([None, "free", "pro"]),
                **extra,
            }
        )
    return out


def _check(engine: Engine, experiment: int) -> dict[int, ArmData]:
    """What a check reads, the way monitoring reads it (under the experiment's lock)."""
    with session_factory(engine).begin() as session:
        row = transitions.lock_experiment(session, experiment)
        arms = session.scalars(
            select(ExperimentArm).where(ExperimentArm.experiment_id == experiment)
        ).all()
        caps = caps_in_force(row, ())
        data = arm_data(session, experiment, arms, {}, "success", caps)
        if fixed := fix_missing_caps(session, row, data[0], caps):  # as a check does
            data = arm_data(session, experiment, arms, {}, "success", {**caps, **fixed})
        return {a.arm_id: a for a in data}


def _caps(engine: Engine, experiment: int) -> dict[str, float]:
    with session_factory(engine)() as session:
        row = session.get(Experiment, experiment)
        assert row is not None
        return caps_in_force(row, ())


def _assert_full_scan(
    engine: Engine, got: dict[int, ArmData], rows: list[dict[str, Any]], experiment: int
) -> None:
    """`got` equals a recomputation from `rows`, at the caps the experiment has fixed."""
    want = python_arm_sums(rows, experiment, _caps(engine, experiment))
    if not rows:
        assert all(a.units == a.conversations == 0 for a in got.values())
    for arm, (units, conversations, metrics) in want.items():
        assert (got[arm].units, got[arm].conversations) == (units, conversations)
        for metric, sums in metrics.items():
            have = got[arm].metrics[metric]
            assert have.units == sums.units
            for name in SUMS:
                assert getattr(have, name) == pytest.approx(getattr(sums, name), rel=1e-9)


@pytest.mark.postgres
def test_a_transaction_committing_late_is_counted_once(pg_engine: Engine) -> None:
    """An early transaction still open while a later one commits and a check rolls up: the
    check waits for it (counting neither yet), then counts both, once; a row-id watermark
    would have counted the later rows and skipped the earlier ones for good."""
    experiment, _, by_arm = _experiment(pg_engine)
    rng = random.Random(1)
    early, late = _rows(experiment, by_arm, 30, rng), _rows(experiment, by_arm, 30, rng)
    slow = pg_engine.connect()
    slow_tx = slow.begin()
    slow.execute(insert(Conversation), early)  # its transaction id is the older one
    with pg_engine.begin() as conn:
        conn.execute(insert(Conversation), late)
    _assert_full_scan(pg_engine, _check(pg_engine, experiment), [], experiment)
    slow_tx.commit()
    slow.close()
    _assert_full_scan(pg_engine, _check(pg_engine, experiment), early + late, experiment)
    _assert_full_scan(pg_engine, _check(pg_engine, experiment), early + late, experiment)


@pytest.mark.postgres
def test_checks_during_concurrent_ingest_count_every_row_once(pg_engine: Engine) -> None:
    experiment, _, by_arm = _experiment(pg_engine)
    stored: list[dict[str, Any]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def ingest(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(15):
                batch = _rows(experiment, by_arm, rng.randint(1, 40), rng)
                with pg_engine.begin() as conn:
                    conn.execute(insert(Conversation), batch)
                with lock:
                    stored.extend(batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def check() -> None:
        try:
            for _ in range(10):
                _check(pg_engine, experiment)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=check) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _assert_full_scan(pg_engine, _check(pg_engine, experiment), stored, experiment)


def _views(engine: Engine, experiment: int) -> list[tuple[int, int, int]]:
    with session_factory(engine)() as session:
        view = store.get_experiment(session, experiment)
    return [(a.id, a.conversations, a.units) for a in view.arms]


def _count(engine: Engine, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Conversation).where(*where)) or 0)


def test_retention_changes_no_figure(engine: Engine) -> None:
    experiment, _, by_arm = _experiment(engine)
    rng = random.Random(5)
    now = utcnow()
    old = _rows(experiment, by_arm, 600, rng, occurred_at=now - timedelta(days=100))
    mid = _rows(experiment, by_arm, 5, rng, occurred_at=now - timedelta(days=40), transcript="m")
    with engine.begin() as conn:
        conn.execute(insert(Conversation), old)  # one statement per shape of row
        conn.execute(insert(Conversation), mid)
    _check(engine, experiment)  # rolls up, and fixes the caps (enough control values)
    with session_factory(engine)() as session:
        row = session.get(Experiment, experiment)
        assert row is not None and row.metric_caps is not None
    _check(engine, experiment)  # the rollup, started again at the fixed caps
    young = _rows(experiment, by_arm, 20, rng, occurred_at=now - timedelta(hours=1))
    young = [{**r, "transcript": "keep me"} for r in young]
    with engine.begin() as conn:
        conn.execute(insert(Conversation), young)  # stored after the last check
    views = _views(engine, experiment)
    pruned = prune_conversations(
        engine,
        now=now,
        conversations_before=now - timedelta(days=90),
        transcripts_before=now - timedelta(days=30),
    )
    assert (pruned.conversations, pruned.transcripts) == (600, 5)
    assert _count(engine) == 25
    assert _count(engine, Conversation.transcript.is_not(None)) == 20
    assert _views(engine, experiment) == views
    _assert_full_scan(engine, _check(engine, experiment), old + mid + young, experiment)


def test_retention_keeps_what_a_rollup_may_still_need(engine: Engine) -> None:
    """Rows of a live experiment that are not rolled up yet, or whose caps are not all fixed
    (a rollup starts again from the raw rows when they change), stay; rows outside any
    experiment and rows of a finished one go at the age limit."""
    experiment, _, by_arm = _experiment(engine)
    rng = random.Random(9)
    long_ago = utcnow() - timedelta(days=200)
    few = _rows(experiment, by_arm, 20, rng, occurred_at=long_ago)  # too few to fix caps
    loose = [
        {**r, "experiment_id": None, "arm_id": None, "assigned_arm_id": None}
        for r in _rows(experiment, by_arm, 7, rng, occurred_at=long_ago)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Conversation), few + loose)
        conn.execute(insert(Conversation), [{**loose[0], "occurred_at": utcnow()}])  # newest
    cutoff = utcnow() - timedelta(days=90)

    def prune() -> int:
        return prune_conversations(
            engine, now=utcnow(), conversations_before=cutoff, transcripts_before=cutoff
        ).conversations

    assert prune() == 7
    _check(engine, experiment)  # rolled up, but the caps are not fixed: still kept
    assert prune() == 0
    with session_factory(engine).begin() as session:
        row = session.get(Experiment, experiment)
        assert row is not None
        row.status = "completed"
    assert prune() == 20
    assert _count(engine) == 1


def test_on_sqlite_the_newest_row_stays_however_old(sqlite_engine: Engine) -> None:
    """SQLite gives a new row max(id) + 1: were the newest row deleted, its id would be
    handed out again, below the rollups' marks, and the row never counted."""
    seed_prompt(sqlite_engine)
    long_ago = utcnow() - timedelta(days=400)
    rows = [
        {"prompt_id": 1, "version_id": 1, "unit_id": f"u{i}", "occurred_at": long_ago}
        for i in range(5)
    ]
    with sqlite_engine.begin() as conn:
        conn.execute(insert(Conversation), rows)
    cutoff = utcnow() - timedelta(days=90)
    pruned = prune_conversations(
        sqlite_engine, now=utcnow(), conversations_before=cutoff, transcripts_before=cutoff
    )
    assert pruned.conversations == 4
    with sqlite_engine.connect() as conn:
        assert conn.scalar(select(func.max(Conversation.id))) == 5


def test_the_hourly_task_prunes_at_the_configured_ages(sqlite_engine: Engine) -> None:
    seed_prompt(sqlite_engine)
    now = utcnow()
    rows = [
        {
            "prompt_id": 1,
            "version_id": 1,
            "unit_id": f"u{days}",
            "occurred_at": now - timedelta(days=days),
            "transcript": "t",
        }
        for days in (30, 15, 9, 0)
    ]
    with sqlite_engine.begin() as conn:
        conn.execute(insert(Conversation), rows)
    settings = Settings(conversation_retention_days=20, transcript_retention_days=10)
    asyncio.run(schedule.prune_conversations(make_ctx(sqlite_engine, settings=settings)))
    with sqlite_engine.connect() as conn:
        left = dict(conn.execute(select(Conversation.unit_id, Conversation.transcript)).all())
    assert left == {"u15": None, "u9": "t", "u0": "t"}


def test_rollup_transaction_runs_without_jit_and_leaves_the_connection_as_it_was(
    pg_engine: Engine,
) -> None:
    """Once the tables hold millions of rows, PostgreSQL would compile every rollup
    statement's expressions (100-750 ms a statement); the setting is the transaction's."""
    with session_factory(pg_engine)() as session:
        default_jit = session.execute(text("SHOW jit")).scalar()
        default_mem = session.execute(text("SHOW work_mem")).scalar()
        assert (default_jit, default_mem) == ("on", "4MB")  # PostgreSQL's defaults
        session.commit()
        prepare_rollup_transaction(session)
        assert session.execute(text("SHOW jit")).scalar() == "off"
        assert session.execute(text("SHOW work_mem")).scalar() == GROUPING_WORK_MEM
        session.commit()
        assert session.execute(text("SHOW jit")).scalar() == default_jit
        assert session.execute(text("SHOW work_mem")).scalar() == default_mem
