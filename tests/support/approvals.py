"""Test helpers for approvals: experiments a real monitoring check decides, read back plainly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.engine import Engine

from models.experiments import Experiment
from models.prompts import Prompt
from optimizer import prompts
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.experiments import store
from optimizer.jobs.monitoring import monitor_experiments
from optimizer.webhooks import WebhookSender
from tests.support.experiments import (
    Clock,
    add_conversations,
    arm_ids,
    make_ctx,
    make_job,
    seed_prompt,
)
from tests.support.webhook_receiver import Receiver

WEBHOOK_SECRET = "webhook-secret-for-approvals"
APPROVE = Settings(promotion_mode="approve")
AUTO = Settings(promotion_mode="auto")
TABLES = (
    "ai_ab_experiments",
    "ai_ab_experiment_arms",
    "ai_prompt_versions",
    "prompt_activations",
    "prompts",
)


def start(engine: Engine, name: str = "support-bot", variants: tuple[int, ...] = (2,)) -> int:
    with session_factory(engine).begin() as session:
        return store.create_experiment(session, name, list(variants), now=utcnow()).id


def winning(engine: Engine, name: str = "support-bot", variants: tuple[int, ...] = (2,)) -> int:
    """A running experiment whose first variant (version 2) clearly beats the control once
    the minimum runtime has passed: 60% success against 30%, 400 users per arm."""
    seed_prompt(engine, name)
    experiment_id = start(engine, name, variants)
    control, variant, *others = arm_ids(engine, experiment_id)
    add_conversations(engine, experiment_id, control, 400, 120)
    add_conversations(engine, experiment_id, variant, 400, 240)
    for other in others:
        add_conversations(engine, experiment_id, other, 400, 120)
    return experiment_id


async def monitor(
    engine: Engine, settings: Settings, webhooks: WebhookSender | None = None
) -> dict[str, Any]:
    """One experiment_monitoring job, 25 hours after now (past the minimum runtime)."""
    ctx = make_ctx(engine, Clock(utcnow() + timedelta(hours=25)), settings)
    ctx = dataclasses.replace(ctx, webhooks=webhooks)
    job, _ = make_job(engine)
    return await monitor_experiments(ctx, job)


def experiment_row(engine: Engine, experiment_id: int) -> Experiment:
    with session_factory(engine)() as session:
        row = session.get(Experiment, experiment_id)
        assert row is not None
        session.expunge(row)
        return row


def activations(engine: Engine, name: str = "support-bot") -> list[dict[str, Any]]:
    with session_factory(engine)() as session:
        return prompts.activation_history(session, name)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES
        }


def set_own_mode(engine: Engine, name: str, mode: str | None) -> None:
    with session_factory(engine).begin() as session:
        session.execute(update(Prompt).where(Prompt.name == name).values(promotion_mode=mode))


# --- webhooks ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sending(receiver: Receiver) -> AsyncIterator[WebhookSender]:
    """A started sender to `receiver`, stopped at the end."""
    sender = WebhookSender(receiver.url, WEBHOOK_SECRET, base_delay=0.01, timeout=2.0)
    sender.start()
    try:
        yield sender
    finally:
        await sender.stop(1)


async def delivered(sender: WebhookSender, n: int) -> None:
    for _ in range(500):
        if sender.delivered >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sender.delivered} of {n} webhooks delivered")
