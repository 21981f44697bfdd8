"""The pattern rollup on real SQLite and PostgreSQL: whole-hour windows, the tables in step
with the metric registry, pruning past the horizon, tags it cannot key, passes of several
replicas taking turns, and the fallback when jsonb refuses a tags value the pattern let
through (PostgreSQL before 16). That the sums equal a full scan is the property test's
(tests/property/test_pattern_rollup_properties.py)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.pattern_rollups import (
    PatternSegmentUnitHour,
    PatternTagUnitHour,
    PatternUnitHour,
    RollupMark,
)
from models.prompts import PromptVersion
from optimizer.db import session_factory
from optimizer.patterns import aggregate, rollup, tags_sql
from optimizer.patterns.aggregate import Bounds
from optimizer.stats.metrics import PATTERNS
from tests.support import pattern_scan
from tests.support.experiments import seed_prompt
from tests.support.patterns import roll_up

NOW = datetime(2026, 3, 2, 12, 20, tzinfo=UTC)


def _store(engine: Engine, version_id: int, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        prompt_id = conn.scalar(
            select(PromptVersion.prompt_id).where(PromptVersion.id == version_id)
        )
        conn.execute(
            insert(Conversation),
            [{**r, "prompt_id": prompt_id, "version_id": version_id} for r in rows],
        )


def _row(hours_ago: float, unit: str = "u1", **extra: Any) -> dict[str, Any]:
    moment = NOW - timedelta(hours=hours_ago)
    return {"unit_id": unit, "success": True, "occurred_at": moment, **extra}


def _count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def test_rollup_columns_follow_the_registry() -> None:
    def sums(model: Any) -> set[str]:
        keys = {c.name for c in model.__table__.primary_key.columns}
        return {c.name for c in model.__table__.columns} - keys

    pairs = {f"{m.name}_{part}" for m in PATTERNS for part in ("y", "m")}
    squares = {f"{m.name}_q" for m in PATTERNS if m.kind != "proportion"}
    assert sums(PatternUnitHour) == {"n", *pairs, *squares}
    assert sums(PatternSegmentUnitHour) == sums(PatternTagUnitHour) == {"n", *pairs}


def test_windows_are_the_whole_hours_before_the_run() -> None:
    bounds = Bounds(datetime(2026, 3, 2, 12, 59, 59, 999_999, tzinfo=UTC))
    assert bounds.until == datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert bounds.since_24h == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert bounds.since_7d == datetime(2026, 2, 23, 12, tzinfo=UTC)
    # Another time zone's clock, or a naive UTC one, gives the same hours.
    india = timezone(timedelta(hours=5, minutes=30))
    assert Bounds(datetime(2026, 3, 2, 18, 0, tzinfo=india)).until == bounds.until
    assert Bounds(datetime(2026, 3, 2, 12, 30)).until == bounds.until
    assert rollup.horizon(NOW) == datetime(2026, 2, 22, 12, tzinfo=UTC)


def test_each_conversation_counts_in_its_hour_however_late_it_arrives(engine: Engine) -> None:
    version_id = seed_prompt(engine, candidates=0)[1]
    _store(engine, version_id, [_row(0.1), _row(0.5, "u2"), _row(23.9), _row(30)])
    roll_up(engine, NOW)
    # Arriving late: a conversation of yesterday, stored after the pass.
    _store(engine, version_id, [_row(20, "u3")])
    with engine.connect() as conn:
        before = aggregate.segment_sums(conn, version_id, Bounds(NOW)).totals
    roll_up(engine, NOW)
    with engine.connect() as conn:
        after = aggregate.segment_sums(conn, version_id, Bounds(NOW)).totals
    # The run's hour (12:14) is left out; 11:50, and 12:26 yesterday count.
    assert before.window("24h").conversations == 2 and before.window("7d").conversations == 3
    assert after.window("24h").conversations == 3 and after.window("24h").units == 3
    assert after.window("7d").conversations == 4


def test_prune_drops_the_hours_past_the_horizon(engine: Engine) -> None:
    version_id = seed_prompt(engine, candidates=0)[1]
    rows = [
        _row(hours, f"u{i}", segment="pro", tags='["vip"]')
        for i, hours in enumerate([1, 50, 100, 170, 191])
    ]
    _store(engine, version_id, rows)
    roll_up(engine, NOW)
    assert _count(engine, PatternUnitHour) == 5
    later = NOW + timedelta(hours=72)  # the horizon moves to 120 hours before NOW's hour
    with session_factory(engine).begin() as session:
        deleted = rollup.prune(session, later)
    assert deleted == 2 * 3  # the hours 170 and 191 hours ago, from each table
    for model in (PatternUnitHour, PatternSegmentUnitHour, PatternTagUnitHour):
        assert _count(engine, model) == 3
    with engine.connect() as conn:
        oldest = conn.scalar(select(func.min(PatternUnitHour.hour)))
    assert oldest is not None and oldest >= rollup.horizon(later)


def test_rows_older_than_the_horizon_are_not_rolled_up(engine: Engine) -> None:
    version_id = seed_prompt(engine, candidates=0)[1]
    # 11:50 eight days ago is in the hour before the horizon; 12:50 is in its hour.
    _store(engine, version_id, [_row(192.5), _row(191.5, "u2"), _row(2, "u3")])
    roll_up(engine, NOW)
    with engine.connect() as conn:
        units = conn.scalars(select(PatternUnitHour.unit_id).order_by("unit_id")).all()
    assert units == ["u2", "u3"]


def test_tags_too_long_to_key_are_left_out(engine: Engine) -> None:
    version_id = seed_prompt(engine, candidates=0)[1]
    long_tag = "ü" * (rollup.MAX_TAG_CHARS + 1)
    _store(
        engine,
        version_id,
        [_row(1, f"u{i}", tags=json.dumps([long_tag, "web"])) for i in range(12)],
    )
    assert roll_up(engine, NOW).tags == "ok"
    with engine.connect() as conn:
        assert conn.scalars(select(PatternTagUnitHour.tag).distinct()).all() == ["web"]


def test_a_pass_with_nothing_new_keeps_the_mark(engine: Engine) -> None:
    version_id = seed_prompt(engine, candidates=0)[1]
    _store(engine, version_id, [_row(1)])
    first = roll_up(engine, NOW)
    assert first.mark is not None
    roll_up(engine, NOW)
    with engine.connect() as conn:
        assert conn.scalar(select(PatternUnitHour.n)) == 1
        mark = conn.scalar(select(RollupMark.mark).where(RollupMark.name == rollup.MARK))
    assert mark is not None and mark >= first.mark


def _waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            )
        )


@pytest.mark.postgres
def test_passes_of_several_replicas_take_turns(pg_engine: Engine) -> None:
    """A second pass waits for the first to commit, then reads only what the first did
    not: no row is counted twice or left out, with rows arriving meanwhile."""
    version_id = seed_prompt(pg_engine, candidates=0)[1]
    _store(pg_engine, version_id, [_row(h, f"u{h}") for h in range(1, 30)])
    first = session_factory(pg_engine)()
    first.begin()
    rollup.roll_up_patterns(first, NOW)
    second_done: list[rollup.Pass] = []
    second = threading.Thread(target=lambda: second_done.append(roll_up(pg_engine, NOW)))
    second.start()
    waited = False
    for _ in range(3000):  # until the second pass waits on the mark's row
        waited = _waiting_for_a_lock(pg_engine)
        if waited:
            break
        time.sleep(0.01)
    assert waited and not second_done
    _store(pg_engine, version_id, [_row(h + 0.5, "late") for h in range(1, 30)])
    first.commit()
    first.close()
    second.join(timeout=60)
    assert second_done
    roll_up(pg_engine, NOW)
    with pg_engine.connect() as conn:
        got = aggregate.segment_sums(conn, version_id, Bounds(NOW)).totals
        want = pattern_scan.segment_sums(conn, version_id, Bounds(NOW)).totals
    assert got == want and got.window("7d").conversations == 58


@pytest.mark.postgres
def test_a_value_jsonb_refuses_leaves_out_escaped_tags_not_the_pass(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should jsonb refuse a value the pattern admitted, the pass goes on without the tags
    written with escapes, and says so."""
    if not tags_sql.uses_pattern(pg_engine.dialect):
        pytest.skip("PostgreSQL 16 tests tags with pg_input_is_valid: no pattern to outwit")
    monkeypatch.setattr(tags_sql, "TAGS_ARRAY_RE", r"^\s*\[")  # admits anything list-like
    version_id = seed_prompt(pg_engine, candidates=0)[1]
    rows = [_row(1, f"u{i}", tags='["web"]') for i in range(3)]
    rows.append(_row(1, "escaped", tags='["caf\\u00e9", "web"]'))
    rows.append(_row(1, "bad", tags='["\\ud800"]'))
    _store(pg_engine, version_id, rows)
    note = roll_up(pg_engine, NOW).tags
    assert note.startswith("tags written with \\u escapes were left out of this pass")
    with pg_engine.connect() as conn:
        tagged = conn.execute(
            select(PatternTagUnitHour.tag, func.sum(PatternTagUnitHour.n)).group_by("tag")
        ).all()
        assert conn.scalar(select(func.sum(PatternUnitHour.n))) == 5
    assert tagged == [("web", 3)]
