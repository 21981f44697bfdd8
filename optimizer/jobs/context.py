"""What a handler receives: the service's shared parts, and the job it is running."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from optimizer.config import Settings
from optimizer.llm.client import LlmClient
from optimizer.prometheus import Metrics
from optimizer.run_stats import RunStats
from optimizer.webhooks import WebhookSender


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    stats: RunStats
    clock: Callable[[], datetime]
    # None only in tests of handlers that make no LLM call.
    llm: LlmClient | None = None
    # Observability; None (tests, or no WEBHOOK_URL) means nothing is counted or sent.
    metrics: Metrics | None = None
    webhooks: WebhookSender | None = None


@dataclass(frozen=True)
class ActiveJob:
    id: int
    type: str
    attempt: int
    payload: dict[str, Any]
    # Handlers call this as they go; it is fenced on the job's lease.
    report_progress: Callable[[int, str | None], Awaitable[None]]


Handler = Callable[[ServiceContext, ActiveJob], Awaitable[dict[str, Any]]]
