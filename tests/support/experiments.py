"""Test helpers for experiments: prompts with versions, conversations in bulk, and a job
context whose clock the test sets."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.experiments import ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from optimizer.stats import RatioSums
from optimizer.stats.metrics import REGISTRY


def seed_prompt(engine: Engine, name: str = "support-bot", candidates: int = 2) -> dict[int, int]:
    """Version 1 active and `candidates` candidate versions after it: number -> version id."""
    with session_factory(engine).begin() as session:
        prompt = Prompt(name=name)
        session.add(prompt)
        session.flush()
        ids = {}
        for number in range(1, candidates + 2):
            content = f"You are {name}, take {number}."
            version = PromptVersion(
                prompt_id=prompt.id,
                version=number,
                content=content,
                content_hash=hashlib.sha256(content.encode()).hexdigest(),
                status="active" if number == 1 else "candidate",
            )
            session.add(version)
            session.flush()
            ids[number] = version.id
        return ids


def version_statuses(engine: Engine, name: str = "support-bot") -> dict[int, str]:
    with session_factory(engine)() as session:
        rows = session.execute(
            select(PromptVersion.version, PromptVersion.status)
            .join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(Prompt.name == name)
        ).all()
        return {number: status for number, status in rows}


def arm_ids(engine: Engine, experiment_id: int) -> list[int]:
    """Arm ids, control first."""
    with session_factory(engine)() as session:
        arms = session.scalars(
            select(ExperimentArm)
            .where(ExperimentArm.experiment_id == experiment_id)
            .order_by(ExperimentArm.is_control.desc(), ExperimentArm.id)
        )
        return [arm.id for arm in arms]


def conversation_rows(
    n: int, successes: int, unit_prefix: str = "u", **extra: Any
) -> Iterator[dict[str, Any]]:
    """n conversations of n units, exactly `successes` of them successful; ratings, latency
    and cost cycle through the same narrow ranges in every arm, so every guardrail is shown
    within its tolerance once there are a few hundred units per arm."""
    for i in range(n):
        yield {
            "unit_id": f"{unit_prefix}{i}",
            "success": i < successes,
            "rating": 4 + i % 2,
            "latency_ms": 100.0 + (i * 3) % 11,
            "cost_usd": 0.002 + 0.0001 * (i % 4),
            **extra,
        }


def add_conversations(
    engine: Engine, experiment_id: int, arm_id: int, n: int, successes: int
) -> None:
    with session_factory(engine).begin() as session:
        arm = session.get(ExperimentArm, arm_id)
        assert arm is not None
        version = session.get(PromptVersion, arm.version_id)
        assert version is not None
        # Each arm its own users, as the assignment would have it.
        rows = list(
            conversation_rows(
                n,
                successes,
                f"arm{arm_id}-u",
                prompt_id=version.prompt_id,
                version_id=version.id,
                experiment_id=experiment_id,
                arm_id=arm_id,
                assigned_arm_id=arm_id,
            )
        )
        session.execute(insert(Conversation), rows)


def add_job_row(
    engine: Engine, job_type: str = "experiment_monitoring", payload: dict[str, Any] | None = None
) -> int:
    job, _ = queue.enqueue(
        engine, NewJob(type=job_type, payload=payload or {}), max_attempts=3, now=utcnow()
    )
    return job.id


@dataclass
class Clock:
    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now


def make_ctx(
    engine: Engine, clock: Callable[[], datetime] | None = None, settings: Settings | None = None
) -> ServiceContext:
    return ServiceContext(
        settings=settings or Settings(),
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=clock or utcnow,
    )


def make_job(
    engine: Engine, job_type: str = "experiment_monitoring", payload: dict[str, Any] | None = None
) -> tuple[ActiveJob, list[tuple[int, Any]]]:
    """An ActiveJob backed by a real job row (analysis rows reference it); the list
    collects the progress it reports."""
    job_id = add_job_row(engine, job_type, payload)
    progress: list[tuple[int, Any]] = []

    async def report(value: int, step: str | None = None) -> None:
        progress.append((value, step))

    return ActiveJob(job_id, job_type, 1, dict(payload or {}), report), progress


def python_arm_sums(
    rows: list[dict[str, Any]],
    experiment_id: int,
    caps: dict[str, float],
) -> dict[int, tuple[int, int, dict[str, RatioSums]]]:
    """slice -> (units, conversations served the slice, metric -> RatioSums), the slow way."""
    bounds = {m.name: m.bounds for m in REGISTRY if m.kind != "proportion"}
    per_unit: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["experiment_id"] != experiment_id or r["arm_id"] is None:
            continue
        slice_ = r["assigned_arm_id"] if r["assigned_arm_id"] is not None else r["arm_id"]
        per_unit.setdefault((slice_, r["unit_id"]), []).append(r)
    out: dict[int, tuple[int, int, dict[str, RatioSums]]] = {}
    for (slice_, _), mine in per_unit.items():
        own = [r for r in mine if r["arm_id"] == slice_]
        units, convs, metrics = out.get(slice_, (0, 0, {}))
        for metric in ("success", "rating", "latency_ms", "cost_usd"):
            values = []
            for r in own:
                v = r[metric]
                if v is None or (
                    metric in bounds and not bounds[metric][0] <= v <= bounds[metric][1]
                ):
                    continue
                values.append(min(float(v), caps.get(metric, math.inf)))
            y, m = sum(values), float(len(values))
            add = RatioSums(1 if values else 0, y, m, y * y, m * m, y * m)
            metrics[metric] = metrics.get(metric, RatioSums(0, 0, 0, 0, 0, 0)) + add
        out[slice_] = (units + 1, convs + len(own), metrics)
    return out
