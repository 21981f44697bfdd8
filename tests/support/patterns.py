"""Test helpers for pattern analysis: a rollup pass in its own transaction, as the
pattern_analysis job runs one before it reads (tests that call optimizer.patterns.aggregate
directly need one first)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from optimizer.db import session_factory
from optimizer.patterns.rollup import Pass, roll_up_patterns


def roll_up(engine: Engine, now: datetime) -> Pass:
    """Add the conversations stored since the previous pass to the pattern rollup."""
    with session_factory(engine).begin() as session:
        return roll_up_patterns(session, now)
