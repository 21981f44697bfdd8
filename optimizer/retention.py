"""Retention of raw conversations: transcripts (the text one and the structured `messages`)
after TRANSCRIPT_RETENTION_DAYS, whole rows after CONVERSATION_RETENTION_DAYS, without
changing any statistic.

- Pattern analysis reads the last 7 days only; both settings are at least 8 days.
- A check reads its experiment's rollup (optimizer.experiments.rollup), so a row of a live
  experiment may go once it is rolled up and every capped metric's cap is in force there:
  a rollup starts again from raw rows only when its caps change, and caps are fixed from
  the control's first values. Until then the experiment's old rows stay. A finished
  experiment's checks are stored with their figures; its rows go at the age limit.
- Transcripts feed no statistic. Both forms hold what users wrote, so both are erased
  together: erasing one would leave the same words in the other.
- The pattern rollup's hours older than 8 days are deleted too: no window reaches them.

Deletes run in batches of BATCH rows, each its own short transaction, per prompt through
the (prompt_id, occurred_at) index: a pass finds old rows without scanning young ones.
Running it on several replicas at once is harmless (a row is deleted once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from models.conversations import Conversation as C
from models.experiments import LIVE_STATUSES, Experiment
from models.prompts import Prompt
from optimizer.db import session_factory
from optimizer.patterns import rollup as patterns_rollup
from optimizer.stats.metrics import CAPPED
from optimizer.watermark import order_column

BATCH = 10_000


@dataclass(frozen=True)
class Pruned:
    conversations: int
    transcripts: int  # rows whose transcript and/or messages were erased
    pattern_hours: int


def _caps_complete(rollup_caps: str | None) -> bool:
    try:
        caps: Any = json.loads(rollup_caps or "{}")
    except ValueError:
        return False
    return isinstance(caps, dict) and all(name in caps for name in CAPPED)


def _deletable(engine: Engine) -> ColumnElement[bool]:
    """Rows whose deletion changes no statistic (see the module's docstring)."""
    with engine.connect() as conn:
        live = conn.execute(
            select(Experiment.id, Experiment.rolled_up_to, Experiment.rollup_caps).where(
                Experiment.status.in_(LIVE_STATUSES)
            )
        ).all()
    order = order_column(engine.dialect.name)
    # Rows below the mark were read; so were those stored before revision 0006 (no order),
    # by the first pass.
    rolled_up = [
        and_(C.experiment_id == row.id, or_(order.is_(None), order < row.rolled_up_to))
        for row in live
        if row.rolled_up_to is not None and _caps_complete(row.rollup_caps)
    ]
    # Live now, in each batch's own statement: an experiment started during a long prune
    # keeps its rows.
    live_now = select(Experiment.id).where(Experiment.status.in_(LIVE_STATUSES))
    safe = or_(C.experiment_id.is_(None), C.experiment_id.not_in(live_now), *rolled_up)
    if engine.dialect.name == "sqlite":
        # The newest row stays: SQLite gives a new row max(id) + 1, so deleting the newest
        # rows would hand their ids out again, below the rollups' marks.
        return and_(safe, C.id < select(func.max(C.id)).scalar_subquery())
    return safe


def _batches(engine: Engine, statement: Any, ids: Any) -> int:
    """Runs `statement` (WHERE id IN ids) until a batch touches fewer than BATCH rows."""
    total = 0
    while True:
        with engine.begin() as conn:
            done = conn.execute(statement.where(C.id.in_(ids))).rowcount
        total += done
        if done < BATCH:
            return total


def prune_conversations(
    engine: Engine, *, now: datetime, conversations_before: datetime, transcripts_before: datetime
) -> Pruned:
    """Also prunes the pattern rollup's hours that no window reaches any more."""
    with engine.connect() as conn:
        prompt_ids = list(conn.scalars(select(Prompt.id)))
    deletable = _deletable(engine)
    deleted = cleared = 0
    for prompt_id in prompt_ids:
        old_rows = (
            select(C.id)
            .where(C.prompt_id == prompt_id, C.occurred_at < conversations_before, deletable)
            .limit(BATCH)
        )
        deleted += _batches(engine, delete(C), old_rows)
        old_transcripts = (
            select(C.id)
            .where(
                C.prompt_id == prompt_id,
                C.occurred_at < transcripts_before,
                or_(C.transcript.is_not(None), C.messages.is_not(None)),
            )
            .limit(BATCH)
        )
        cleared += _batches(
            engine, update(C).values(transcript=None, messages=None), old_transcripts
        )
    with session_factory(engine).begin() as session:
        hours = patterns_rollup.prune(session, now)
    return Pruned(conversations=deleted, transcripts=cleared, pattern_hours=hours)
