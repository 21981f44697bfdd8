"""Hypothesis: traffic of any allowed shape through ingest, then a `full_cycle` job (pattern
analysis, generation with the offline provider, creation, monitoring) and a monitoring pass
at a time when decisions may be taken, on SQLite and PostgreSQL.

Shapes: optional fields missing or present per row, values at the edges of what ingest
allows (0, the bounds, subnormal floats), one or many conversations per unit, one segment
or many, Unicode everywhere, and rows stored with extreme values before the bounds existed
(inserted directly: 1e200, infinity, NaN where the database keeps it).

Properties: no job or check fails; nothing stored holds NaN or Infinity; the counts in
every stored analysis add up to the rows in the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from datetime import timedelta
from itertools import count
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, or_, select
from sqlalchemy.engine import Engine

from models.conversations import Conversation as C
from models.experiments import ExperimentAnalysis
from models.insights import PatternInsight
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.experiments import store
from optimizer.ingest import ingest
from optimizer.jobs.full_cycle import run_full_cycle
from optimizer.jobs.monitoring import monitor_experiments
from optimizer.llm.offline import OfflineClient
from optimizer.resolve import resolve
from tests.support.experiments import Clock, make_ctx, make_job, seed_prompt

NAMES = count()
TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12
).filter(str.strip)
FLOAT = {"allow_nan": False, "allow_infinity": False}
OPTIONAL = {
    "success": st.none() | st.booleans(),
    "rating": st.none() | st.integers(1, 5),
    "latency_ms": st.none()
    | st.sampled_from([0.0, 5e-324, 86_400_000.0])
    | st.floats(0, 86_400_000, **FLOAT),
    "cost_usd": st.none() | st.sampled_from([0.0, 5e-324, 1000.0]) | st.floats(0, 1000, **FLOAT),
    "input_tokens": st.none() | st.integers(0, 10_000_000),
    "tags": st.none() | st.lists(TEXT, max_size=3),
    "transcript": st.none() | st.text(max_size=40).filter(lambda s: "\x00" not in s),
}


@st.composite
def traffic(draw: st.DrawFn) -> dict[str, Any]:
    units = draw(st.lists(TEXT, min_size=1, max_size=25, unique=True))
    segments = draw(st.lists(TEXT, min_size=1, max_size=50, unique=True))
    visits = [draw(st.integers(1, 3) | st.integers(1, 40)) for _ in units]
    rows = []
    for unit, n in zip(units, visits, strict=True):
        segment = draw(st.none() | st.sampled_from(segments))
        for _ in range(n):
            row = draw(st.fixed_dictionaries({}, optional=OPTIONAL))
            rows.append({"unit_id": unit, "segment": segment, **row})
    extreme = draw(st.lists(st.sampled_from([1e200, math.inf, math.nan, -5.0]), max_size=3))
    return {
        "rows": rows,
        "extreme": extreme,
        "variants": draw(st.integers(1, 3)),
        "experiment": draw(st.booleans()),
    }


def _store(engine: Engine, name: str, shape: dict[str, Any]) -> None:
    records = []
    for row in shape["rows"]:
        answer = resolve(engine, name, row["unit_id"])
        records.append(
            {
                "prompt": name,
                "version": answer["version"],
                "experiment_id": answer["experiment_id"],
                **{k: v for k, v in row.items() if v is not None},
            }
        )
    for start in range(0, len(records), 1000):
        ingest(engine, {"conversations": records[start : start + 1000]}, now=utcnow())
    if shape["extreme"]:
        with engine.begin() as conn:
            template = (
                conn.execute(select(C.__table__).order_by(C.id.desc()).limit(1)).mappings().one()
            )
            conn.execute(
                insert(C),
                [
                    {
                        **{
                            k: template[k]
                            for k in (
                                "prompt_id",
                                "version_id",
                                "experiment_id",
                                "arm_id",
                                "assigned_arm_id",
                                "unit_id",
                            )
                        },
                        "latency_ms": value,
                        "cost_usd": value,
                        "success": True,
                    }
                    for value in shape["extreme"]
                ],
            )


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"stored JSON holds {constant}")

    return json.loads(text, parse_constant=refuse)


def _check_stored(engine: Engine) -> None:
    with session_factory(engine)() as session:
        for analysis in session.scalars(select(ExperimentAnalysis)):
            stats = _strict(analysis.statistics)
            own = select(func.count()).where(
                C.experiment_id == analysis.experiment_id,
                C.arm_id.is_not(None),
                or_(C.assigned_arm_id.is_(None), C.assigned_arm_id == C.arm_id),
            )
            assert sum(a["conversations"] for a in stats["sums"]) == session.scalar(own)
            units = select(func.count()).select_from(
                select(C.arm_id, C.unit_id)
                .where(C.experiment_id == analysis.experiment_id, C.arm_id.is_not(None))
                .group_by(C.arm_id, C.unit_id)
                .subquery()
            )
            assert sum(a["units"] for a in stats["sums"]) == session.scalar(units)
        for insight in session.scalars(select(PatternInsight)):
            _strict(insight.evidence)
            assert insight.effect_size is None or math.isfinite(insight.effect_size)


async def _cycle(engine: Engine, name: str, shape: dict[str, Any]) -> None:
    later = Clock(utcnow() + timedelta(hours=25))
    base = make_ctx(engine, later, Settings(llm_provider="offline"))
    ctx = dataclasses.replace(base, llm=OfflineClient(base.sessions, later))
    job, _ = make_job(engine, "full_cycle", {"prompt": name, "always_generate": True})
    await run_full_cycle(ctx, job)  # raises on failure
    job, _ = make_job(engine)
    monitored = await monitor_experiments(ctx, job)
    assert not monitored.get("errors"), monitored


def _run(engine: Engine, shape: dict[str, Any]) -> None:
    name = f"prop-{next(NAMES)}"
    seed_prompt(engine, name, candidates=shape["variants"])
    if shape["experiment"]:
        with session_factory(engine).begin() as session:
            store.create_experiment(
                session, name, list(range(2, 2 + shape["variants"])), now=utcnow()
            )
    _store(engine, name, shape)
    asyncio.run(_cycle(engine, name, shape))
    _check_stored(engine)


PROPERTY = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@PROPERTY
@given(shape=traffic())
def test_any_traffic_shape_runs_the_whole_loop(engine: Engine, shape: dict[str, Any]) -> None:
    _run(engine, shape)
