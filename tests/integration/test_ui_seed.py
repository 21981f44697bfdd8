"""The dashboard's seeded databases (tests/support/ui_seed.py) hold what their contract
says, read through the domain functions the pages use, hold checks a monitoring run would
have written, and serve: a real service started on a seeded file is healthy, routes the
running experiment and lists its checks."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.experiments import Experiment, ExperimentAnalysis
from models.insights import PatternInsight
from models.jobs import OptimizationJob
from models.prompts import Prompt, PromptActivation, PromptVersion
from optimizer import client_config, prompts
from optimizer.clock import utcnow
from optimizer.db import create_db_engine, current_revision, head_revision, session_factory
from optimizer.experiments import store
from optimizer.experiments.validation import guardrails_from_json
from optimizer.patterns import views
from optimizer.resolve import resolve
from optimizer.runtime import queue
from optimizer.stats import AnalysisSettings, ArmData, RatioSums, analyze
from tests.support.procs import ServiceProcess, start_service
from tests.support.ui_seed import (
    SCRIPT,
    Seeded,
    seed_empty,
    seed_large,
    seed_one_version,
    seed_small,
    seed_world,
)

ADMIN = "admin-token-for-the-seed-test"
INGEST = "ingest-token-for-the-seed-test"
NEVER = "0 0 1 1 *"  # no scheduled job fires while a test runs (new year's midnight only)
TABLES = (Prompt, PromptVersion, PromptActivation, Experiment, ExperimentAnalysis)


def _count(engine: Engine, model: Any) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- recomputing a stored check ------------------------------------------------------------


def _sums(entry: dict[str, Any]) -> RatioSums:
    keys = ("units", "sum_y", "sum_m", "sum_yy", "sum_mm", "sum_ym")
    return RatioSums(*(entry[k] for k in keys))


def _recomputed(stats: dict[str, Any], view: store.ExperimentView) -> dict[str, Any]:
    """The check as monitoring computes it, from the sums it stored and the experiment's
    own settings."""
    arms = [
        ArmData(
            arm_id=s["arm_id"],
            version=s["version"],
            is_control=s["is_control"],
            weight=s["weight"],
            active=s["active"],
            units=s["units"],
            conversations=s["conversations"],
            metrics={name: _sums(m) for name, m in s["metrics"].items()},
            strata={x["segment"]: _sums(x) for x in s["strata"]},
        )
        for s in stats["sums"]
    ]
    settings = AnalysisSettings(
        primary_metric=view.primary_metric,
        confidence=view.confidence,
        guardrails=guardrails_from_json(json.dumps(view.guardrails)),
    )
    analysis = analyze(arms, settings, stats["caps"])
    return analysis.to_dict(caps=stats["caps"], sums=stats["sums"])


def _same(a: Any, b: Any) -> bool:
    """Equal, floats within rounding (sums may be added in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _no_nan(text: str) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} stored in a check")

    json.loads(text, parse_constant=refuse)


# --- the contract --------------------------------------------------------------------------


def _check_prompts(engine: Engine, seeded: Seeded, versions: int) -> None:
    with session_factory(engine)() as session:
        summaries = prompts.prompt_summaries(session)
        assert sorted(s.name for s in summaries) == sorted(seeded.prompt_names)
        assert {s.versions_count for s in summaries} == {versions}
        assert all(s.active_version is not None for s in summaries)
        assert seeded.multi_version_prompt is not None
        details = prompts.version_details(session, seeded.multi_version_prompt)
        assert len(details) >= 2
        # Texts hold Unicode and HTML to escape; optional columns are both filled and empty.
        every = [d for name in seeded.prompt_names for d in prompts.version_details(session, name)]
        assert any(d.change_notes and SCRIPT in d.change_notes for d in every)
        assert any(d.change_notes is None for d in every)
        assert any(d.parent is None for d in every[1:]) and any(d.parent for d in every)
        assert any(d.model for d in every) and any(d.model is None for d in every)
        assert any(d.insight_ids for d in every) and any(d.llm_call_id for d in every)
        text = prompts.get_version(session, seeded.multi_version_prompt, 2).content
        assert "Café" in text and "你好" in text
    with session_factory(engine)() as session:
        # The prompt named for rollback has nothing live: rolling back works (not kept).
        active = next(d.number for d in details if d.status == "active")
        other = next(d.number for d in details if d.status != "active")
        view = prompts.rollback(
            session, seeded.multi_version_prompt, other, actor="t", reason="r", now=utcnow()
        )
        assert view.active_version == other != active
        session.rollback()


def _check_running(engine: Engine, seeded: Seeded) -> None:
    """Three arms: control the prompt's active version, variants under test, the stopped
    one rejected; what the routing snapshot serves is exactly this experiment."""
    assert seeded.running_experiment_id is not None
    with session_factory(engine)() as session:
        view = store.get_experiment(session, seeded.running_experiment_id)
        assert view.status == "running" and len(view.arms) == 3
        details = {d.number: d for d in prompts.version_details(session, view.prompt)}
        control = next(a for a in view.arms if a.is_control)
        assert details[control.version].status == "active"
        for arm in view.arms:
            if not arm.is_control:
                expected = "rejected" if arm.status == "stopped" else "testing"
                assert details[arm.version].status == expected
        document = client_config.build(session)
        entry = next(p for p in document["prompts"] if p["name"] == view.prompt)
        assert entry["experiment"]["id"] == view.id
        served = [(a["id"], a["version"], a["status"]) for a in entry["experiment"]["arms"]]
        assert served == [(a.id, a.version, a.status) for a in view.arms]
        answers = {resolve(session, view.prompt, f"user-{k}")["version"] for k in range(60)}
        active_arms = {a.version for a in view.arms if a.status == "active"}
        assert answers == active_arms
        assert resolve(session, view.prompt, "user-1")["experiment_id"] == view.id


def _check_checks(engine: Engine, seeded: Seeded) -> None:
    """Each check is what monitoring would store; lifts move; the worse arm is stopped
    three quarters of the way through."""
    assert seeded.checked_experiment_id is not None
    with session_factory(engine)() as session:
        view = store.get_experiment(session, seeded.checked_experiment_id)
        rows = store.list_analyses(session, view.id, limit=500)
        raw = session.scalars(
            select(ExperimentAnalysis.statistics).where(ExperimentAnalysis.experiment_id == view.id)
        ).all()
    assert len(rows) == seeded.checks
    for text in raw:
        _no_nan(text)
    stop = (3 * seeded.checks + 3) // 4
    assert [r.decision for r in rows] == [
        "stop_arms" if k == stop else "continue" for k in range(1, seeded.checks + 1)
    ]
    stopped = next(a for a in view.arms if a.status == "stopped")
    assert stopped.stopped_reason == rows[stop - 1].reason
    assert f"Stop v{stopped.version}" in rows[stop - 1].reason
    for k, row in enumerate(rows, start=1):
        stats = row.statistics
        assert stats.keys() >= {"comparisons", "guardrails", "srm", "confidence", "caps", "sums"}
        assert [s["arm_id"] for s in stats["sums"]] == [a.id for a in view.arms]
        assert len(stats["comparisons"]) == (2 if k <= stop else 1)
        assert not stats["srm"]["detected"]
    for row in (rows[0], rows[stop - 1], rows[-1]):
        assert _same(_recomputed(row.statistics, view), row.statistics)
    better = next(a.id for a in view.arms if not a.is_control and a.status == "active")
    lifts = [
        c["relative"] for r in rows for c in r.statistics["comparisons"] if c["arm_id"] == better
    ]
    assert len(set(lifts)) == len(rows)  # drifting, check after check
    assert [r.checked_at for r in rows] == sorted(r.checked_at for r in rows)


def _check_jobs(engine: Engine, seeded: Seeded, now: datetime) -> None:
    assert None not in (seeded.pending_job_id, seeded.running_job_id, seeded.failed_job_id)
    pending = queue.get_job(engine, seeded.pending_job_id or 0)
    assert pending.status == "pending" and pending.run_after > now
    running = queue.get_job(engine, seeded.running_job_id or 0)
    assert running.status == "running" and 0 < running.progress < 100
    assert running.current_step and running.locked_by
    assert running.lease_expires_at is not None
    assert running.lease_expires_at > now + timedelta(days=365)
    failed = queue.get_job(engine, seeded.failed_job_id or 0)
    assert failed.status == "failed" and failed.error is not None
    assert len(failed.error) > 1_000 and failed.error.count("\n") >= 10
    listed = queue.list_jobs(engine, limit=500)
    assert {j.status for j in listed} >= {"pending", "running", "failed", "completed"}
    # Each check names the monitoring job that ran it, whose result names the check.
    with session_factory(engine)() as session:
        pairs = session.execute(
            select(ExperimentAnalysis.id, OptimizationJob.type, OptimizationJob.result)
            .join(OptimizationJob, OptimizationJob.id == ExperimentAnalysis.job_id)
            .where(ExperimentAnalysis.experiment_id == seeded.checked_experiment_id)
        ).all()
    assert len(pairs) == seeded.checks
    for analysis_id, job_type, result in pairs:
        assert job_type == "experiment_monitoring"
        assert json.loads(result)["decisions"][0]["analysis_id"] == analysis_id


def _check_reads(engine: Engine, seeded: Seeded, experiments: int) -> None:
    with session_factory(engine)() as session:
        # Pages of the API's largest size (one query term per experiment: SQLite allows 500).
        listed = store.list_experiments(session, limit=500)
        while len(listed) < experiments:
            listed += store.list_experiments(session, limit=500, before_id=listed[-1].id)
        assert len(listed) == experiments
        statuses = [e.status for e in listed]
        assert statuses.count("running") == 1 and statuses.count("paused") <= 1
        assert listed[0].id == seeded.running_experiment_id  # the newest
        insights = views.list_insights(session, limit=500)
        assert len(insights) == min(3 * len(seeded.prompt_names), 500)
        assert any(SCRIPT in i.title for i in insights)
        assert any(i.version is None for i in insights) and any(i.version for i in insights)
        decisions = [d.decision for d in store.recent_decisions(session)]
        assert decisions[0] == "stop_arms" and "pause_srm" in decisions


def _check_world(
    engine: Engine, seeded: Seeded, now: datetime, *, prompts_: int, versions: int, experiments: int
) -> None:
    assert len(seeded.prompt_names) == len(set(seeded.prompt_names)) == prompts_
    assert _count(engine, PromptVersion) == prompts_ * versions
    assert _count(engine, Experiment) == experiments
    _check_prompts(engine, seeded, versions)
    _check_running(engine, seeded)
    _check_checks(engine, seeded)
    _check_jobs(engine, seeded, now)
    _check_reads(engine, seeded, experiments)


# --- each seed -----------------------------------------------------------------------------


def test_seed_empty_is_migrated_and_empty(sqlite_url: str) -> None:
    engine = create_db_engine(sqlite_url)
    try:
        seeded = seed_empty(engine, utcnow())
        assert current_revision(engine) == head_revision()
        for model in (*TABLES, OptimizationJob, PatternInsight):
            assert _count(engine, model) == 0
        assert seeded == Seeded((), None, None, 0, None, None, None, None)
        with session_factory(engine)() as session:
            assert prompts.prompt_summaries(session) == []
            assert store.list_experiments(session) == []
            assert store.recent_decisions(session) == []
        assert queue.list_jobs(engine) == []
    finally:
        engine.dispose()


def test_seed_one_version_has_one_prompt_and_nothing_else(sqlite_engine: Engine) -> None:
    seeded = seed_one_version(sqlite_engine, utcnow())
    assert seeded == Seeded((seeded.prompt_names[0],), None, None, 0, None, None, None, None)
    with session_factory(sqlite_engine)() as session:
        [summary] = prompts.prompt_summaries(session)
        [detail] = prompts.version_details(session, summary.name)
    assert (summary.active_version, summary.versions_count) == (1, 1)
    assert (detail.status, detail.parent, detail.insight_ids) == ("active", None, ())
    for model in (Experiment, ExperimentAnalysis, OptimizationJob, PatternInsight):
        assert _count(sqlite_engine, model) == 0


def test_seed_small_holds_its_contract(engine: Engine) -> None:
    now = utcnow()
    seeded = seed_small(engine, now)
    assert seeded.checks == 12
    assert seeded.checked_experiment_id == seeded.running_experiment_id
    _check_world(engine, seeded, now, prompts_=3, versions=4, experiments=4)


def test_seed_large_holds_its_contract(sqlite_engine: Engine) -> None:
    now = utcnow()
    seeded = seed_large(sqlite_engine, now)
    assert seeded.checks == 200
    _check_world(sqlite_engine, seeded, now, prompts_=100, versions=50, experiments=1000)
    with session_factory(sqlite_engine)() as session:
        per_prompt = session.execute(
            select(func.count()).select_from(Experiment).group_by(Experiment.prompt_id)
        ).scalars()
        assert set(per_prompt) <= {9, 10, 11}  # about ten per prompt


def test_seeds_refuse_what_they_cannot_build(sqlite_engine: Engine) -> None:
    with pytest.raises(ValueError, match="4 versions"):
        seed_world(sqlite_engine, utcnow(), prompts=2, versions=3, experiments=1, checks=0)
    with pytest.raises(ValueError, match="checks need an experiment"):
        seed_world(sqlite_engine, utcnow(), prompts=2, versions=4, experiments=0, checks=3)
    assert _count(sqlite_engine, Prompt) == 0


# --- a real service on a seeded file --------------------------------------------------------


def _settled_health(svc: ServiceProcess, timeout: float = 20.0) -> dict[str, Any]:
    """/health once the service's first database check is in (before it, "degraded":
    not checked yet)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = svc.get_json("/health")
        assert status == 200, body
        if body["database"]["checkedAt"] is not None or time.monotonic() > deadline:
            return dict(body)
        time.sleep(0.1)


def test_service_on_seed_small_is_healthy_and_lists_the_checks(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Any
) -> None:
    seeded = seed_small(sqlite_engine, utcnow())
    sqlite_engine.dispose()
    svc = start_service(
        sqlite_url,
        tmp_path,
        ADMIN_TOKEN=ADMIN,
        INGEST_TOKEN=INGEST,
        MONITORING_CRON=NEVER,
        PATTERN_ANALYSIS_CRON=NEVER,
    )
    try:
        svc.wait_healthy()
        health = _settled_health(svc)
        assert health["status"] == "healthy" and health["database"]["ok"], health
        assert health["queue"]["running"] == 1 and health["queue"]["pending"] == 1, health
        running = seeded.running_experiment_id
        status, body = svc.request("GET", f"/experiments/{running}/analyses", token=ADMIN)
        assert status == 200, body
        assert body["experiment_id"] == running and body["next_after"] is None
        checks = body["analyses"]
        assert len(checks) == seeded.checks == 12
        assert [c["id"] for c in checks] == sorted(c["id"] for c in checks)
        assert [c["decision"] for c in checks].count("stop_arms") == 1
        assert all(c["job_id"] is not None and c["statistics"]["sums"] for c in checks)
        # The running experiment is served from the routing snapshot.
        name = seeded.prompt_names[0]
        status, answer = svc.request(
            "GET", f"/v1/prompts/{name}/resolve?unit_id=user-42", token=INGEST
        )
        assert status == 200 and answer["experiment_id"] == running, answer
        # The seeded jobs keep their state: nothing reaps the running one or runs the
        # pending one early.
        status, job = svc.request("GET", f"/jobs/{seeded.running_job_id}", token=ADMIN)
        assert status == 200 and job["status"] == "running" and job["progress"] == 40, job
        status, job = svc.request("GET", f"/jobs/{seeded.pending_job_id}", token=ADMIN)
        assert status == 200 and job["status"] == "pending", job
    finally:
        svc.terminate()
    assert "Traceback" not in svc.logs()
