"""Hypothesis against experiment_creation payloads as the worker reads them from the job row,
on SQLite and PostgreSQL: a valid payload with any value in it (nested ones too) replaced by
a hostile one (an integer of hundreds of digits, a lone surrogate, NUL, ...).

Property: the job starts its experiment, or fails for good (PermanentJobError, which the
worker never retries) having written nothing. Any other exception would be retried as a
temporary failure, the way a 400-digit confidence once was.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Engine

from models.experiments import LIVE_STATUSES as LIVE_EXPERIMENT_STATUSES
from models.experiments import Experiment
from models.prompts import Prompt, PromptVersion
from optimizer import prompts
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.errors import PermanentJobError
from optimizer.experiments import transitions
from optimizer.jobs.context import ActiveJob
from optimizer.jobs.creation import create_experiment_job
from optimizer.runtime.job_input import decode_stored_payload
from tests.property.strategies import EXPERIMENT_SETTINGS, HOSTILE, HOSTILE_STRINGS, spoiled
from tests.support.experiments import make_ctx, seed_prompt

NAME = "pay-bot"
# Without "variants" the job tests the newest candidate; the harness keeps exactly one.
VALID_PAYLOAD: dict[str, Any] = {
    "prompt": NAME,
    "weights": [1, 2.5],
    "scope": "global",
    **EXPERIMENT_SETTINGS,
}
PAYLOADS = st.one_of(
    st.just(VALID_PAYLOAD), spoiled(VALID_PAYLOAD, st.sampled_from(HOSTILE_STRINGS) | HOSTILE)
)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


class Harness:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ctx = make_ctx(engine)
        self.loop = asyncio.new_event_loop()
        self.tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")
        seed_prompt(engine, NAME, candidates=1)

    def ready(self) -> None:
        """No live experiment and exactly one candidate, whatever the last example did."""
        with session_factory(self.engine).begin() as session:
            prompt_id = session.scalar(select(Prompt.id).where(Prompt.name == NAME))
            live = session.scalar(
                select(Experiment.id).where(
                    Experiment.prompt_id == prompt_id,
                    Experiment.status.in_(LIVE_EXPERIMENT_STATUSES),
                )
            )
            if live is not None:
                transitions.stop_experiment(session, live, actor="test", now=utcnow())
            candidates = session.scalar(
                select(func.count())
                .select_from(PromptVersion)
                .where(PromptVersion.prompt_id == prompt_id, PromptVersion.status == "candidate")
            )
            if not candidates:
                prompts.add_version(session, NAME, f"Be kind ({uuid.uuid4()}).", now=utcnow())

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in self.tables))
            ).one()
        return dict(zip(self.tables, row, strict=True))

    def run(self, raw: str) -> dict[str, Any]:
        """The job as the worker runs it: the stored text decoded, then the handler."""

        async def report(progress: int, step: str | None = None) -> None:
            return None

        payload = decode_stored_payload(raw)
        job = ActiveJob(1, "experiment_creation", 1, payload, report)
        return self.loop.run_until_complete(create_experiment_job(self.ctx, job))


@pytest.fixture(scope="module")
def harness(module_engine: Engine) -> Iterator[Harness]:
    h = Harness(module_engine)
    yield h
    h.loop.close()


@PROPERTY_SETTINGS
@given(payload=PAYLOADS)
def test_a_creation_job_starts_or_fails_for_good(harness: Harness, payload: Any) -> None:
    harness.ready()
    raw = json.dumps(payload)  # as a row holds it: a lone surrogate as the escape \ud800
    note(f"payload: {raw[:500]}")
    before = harness.counts()
    try:
        result = harness.run(raw)
    except PermanentJobError as exc:
        event("failed for good")
        note(str(exc))
        assert harness.counts() == before, "a refused job wrote something"
        str(exc).encode("utf-8")  # the error is stored in the job row: it must be storable
        assert "\x00" not in str(exc)
        return
    event("experiment started")
    assert result["prompt"] == NAME and result["experiment_id"] > 0
