"""The pattern rollup: per (prompt version, hour, unit), and per segment or tag as well, the
sums pattern analysis reads (models.pattern_rollups).

A run used to group every conversation of the last 7 days by unit, three times (totals,
segments, tags). Instead each run first adds the conversations stored since the previous
pass to the rollup (one INSERT ... SELECT ... ON CONFLICT DO UPDATE per table, grouped by
the database), then sums each unit's hours in the windows (optimizer.patterns.aggregate).
The unit stays in the key because units are the independent observations: a window's
per-unit figures, and the cross terms between a unit's part in a group and its totals,
are then exactly what a scan of the raw rows gives for the same whole hours.

Why a rollup step with a watermark and not sums kept by ingest: ingest stays a plain append
(COPY on PostgreSQL) that many replicas run at once, instead of row-locked upserts on
shared rows. Each pass reads the rows stored since the mark, exactly once
(optimizer.watermark); the mark is row 'patterns' of rollup_marks, locked by the pass, so
passes of several replicas take turns. A row is counted in the hour it occurred, however
late it arrives; rows that occurred before the horizon (ROLLUP_DAYS before the pass's hour)
are skipped, as no window reaches them, and prune() drops hours past it.

`hour` is occurred_at truncated to the hour in UTC: date_trunc on PostgreSQL (in UTC,
whatever the session's time zone), and on SQLite the stored text's first 13 characters
("YYYY-MM-DD HH") in the layout every writer uses (models.base.UtcDateTime), so the
hour compares as the raw text does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Table,
    case,
    cast,
    delete,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.base import UtcDateTime
from models.conversations import Conversation as C
from models.pattern_rollups import (
    PatternSegmentUnitHour,
    PatternTagUnitHour,
    PatternUnitHour,
    RollupMark,
)
from models.prompts import PromptVersion
from optimizer.db import prepare_rollup_transaction, upsert_insert
from optimizer.patterns import tags_sql
from optimizer.stats.metrics import PATTERNS, Metric
from optimizer.watermark import mark_now, stored_between

log = logging.getLogger("prompt_worker.patterns.rollup")

MARK = "patterns"
# The 7-day window starts at most 7 days and one hour before a pass; one day more keeps a
# run in step with a pass made a little earlier.
ROLLUP_DAYS = 8
MAX_TAG_CHARS = 200  # ingest admits 100; longer tags stored by hand are not counted
_UNITS: Table = PatternUnitHour.__table__  # type: ignore[assignment]  # a model's table
_SEGMENTS: Table = PatternSegmentUnitHour.__table__  # type: ignore[assignment]
_TAGS: Table = PatternTagUnitHour.__table__  # type: ignore[assignment]
TABLES = (_UNITS, _SEGMENTS, _TAGS)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour `moment` falls in (a naive moment counts as UTC)."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.replace(minute=0, second=0, microsecond=0)


def horizon(now: datetime) -> datetime:
    """The oldest hour the rollup keeps at `now`."""
    return floor_hour(now) - timedelta(days=ROLLUP_DAYS)


def value(m: Metric, column: Any) -> Any:
    """One conversation's value of the metric as a float: a proportion as 1.0 or 0.0."""
    if m.kind == "proportion":
        return case((column.is_(None), None), (column, 1.0), else_=0.0)
    return cast(column, Float)


def hour_of(dialect: str) -> ColumnElement[Any]:
    """A conversation's hour (see the module's docstring); literal SQL, so the select list
    and the GROUP BY show the database the same expression."""
    if dialect == "postgresql":
        sql = "date_trunc('hour', conversations.occurred_at, 'UTC')"
    else:
        sql = "substr(conversations.occurred_at, 1, 13) || ':00:00.000000'"
    return literal_column(sql, type_=UtcDateTime())


def _sums(squares: bool) -> dict[str, Any]:
    """The summed columns of a rollup row, by name."""
    out: dict[str, Any] = {"n": func.count()}
    for m in PATTERNS:
        v = value(m, getattr(C, m.column))
        out[f"{m.name}_y"] = func.coalesce(func.sum(v), 0.0)
        out[f"{m.name}_m"] = func.count(v)
        if squares and m.kind != "proportion":
            out[f"{m.name}_q"] = func.coalesce(func.sum(v * v), 0.0)
    return out


def _upsert(
    dialect: str,
    table: Table,
    keys: dict[str, Any],
    source: Any,
    conditions: Sequence[Any],
    since: int | None,
    until: int,
    start: datetime,
) -> Any:
    """INSERT INTO `table` the new rows' sums grouped by `keys`, adding to existing rows."""
    sums = _sums(squares=table is _UNITS)
    query = (
        select(*(expr.label(name) for name, expr in {**keys, **sums}.items()))
        .select_from(source)
        .where(
            *conditions,
            stored_between(dialect, since, until),
            C.occurred_at >= start,
        )
        .group_by(*keys.values())
    )
    insert = upsert_insert(dialect, table).from_select([*keys, *sums], query)
    added = {name: table.c[name] + insert.excluded[name] for name in sums}
    return insert.on_conflict_do_update(index_elements=list(keys), set_=added)


def _statements(
    session: Session, since: int | None, until: int, start: datetime
) -> tuple[Any, Any, Any]:
    """The three upserts: units, segments, tags."""
    bind = session.get_bind()
    dialect = bind.dialect.name
    hour = hour_of(dialect)
    base = {"version_id": C.version_id, "hour": hour}
    window = (since, until, start)
    units = _upsert(dialect, _UNITS, {**base, "unit_id": C.unit_id}, C, [], *window)
    segments = _upsert(
        dialect,
        _SEGMENTS,
        {**base, "segment": C.segment, "unit_id": C.unit_id},
        C,
        [C.segment.is_not(None)],
        *window,
    )
    tagged, tag, conditions = tags_sql.tagged_conversations(
        dialect, bind.dialect.server_version_info
    )
    tags = _upsert(
        dialect,
        _TAGS,
        {**base, "tag": tag, "unit_id": C.unit_id},
        tagged,
        [C.tags.is_not(None), *conditions, func.length(tag) <= MAX_TAG_CHARS],
        *window,
    )
    return units, segments, tags


def _lock_mark(session: Session) -> int | None:
    """The mark, its row locked until the pass commits (created if missing)."""
    table: Table = RollupMark.__table__  # type: ignore[assignment]
    dialect = session.get_bind().dialect.name
    session.execute(
        upsert_insert(dialect, table).values(name=MARK, mark=None).on_conflict_do_nothing()
    )
    return session.scalar(select(RollupMark.mark).where(RollupMark.name == MARK).with_for_update())


@dataclass(frozen=True)
class Pass:
    """What a pass did: how far it read (None: nothing new) and a note on the tags
    ("ok", or which tags it had to leave out)."""

    mark: int | None
    tags: str = "ok"


def _add_tags(session: Session, statement: Any) -> str:
    """Runs the tags' upsert. Should jsonb refuse a value the pattern admitted (PostgreSQL
    < 16, see tags_sql), the pass leaves out the tags written with \\u escapes rather than
    stop every later pass at the same row."""
    if not tags_sql.uses_pattern(session.get_bind().dialect):
        session.execute(statement)
        return "ok"
    try:
        with session.begin_nested():  # a failed statement must not end the pass
            session.execute(statement)
        return "ok"
    except DataError as exc:
        first = (str(exc.orig).strip().splitlines() or ["invalid JSON"])[0][:200]
    log.warning("pattern rollup: tags with \\u escapes left out", extra={"error": first})
    session.execute(statement, {tags_sql.TAGS_RE_PARAM: tags_sql.NO_ESCAPES_RE})
    return f"tags written with \\u escapes were left out of this pass ({first})"


def roll_up_patterns(session: Session, now: datetime) -> Pass:
    """Add the conversations stored since the previous pass to the pattern rollup. Commit
    soon after: the mark's row stays locked until then."""
    prepare_rollup_transaction(session)  # the pass groups the new rows by unit and hour
    since = _lock_mark(session)
    until = mark_now(session)
    if since is not None and until <= since:
        return Pass(None)
    units, segments, tags = _statements(session, since, until, horizon(now))
    session.execute(units)
    session.execute(segments)
    note = _add_tags(session, tags)
    session.execute(update(RollupMark).where(RollupMark.name == MARK).values(mark=until))
    return Pass(until, note)


def prune(session: Session, now: datetime) -> int:
    """Delete the rollup's hours older than the horizon at `now`; the rows deleted. Version
    by version, so each delete is a range of the primary key (version_id, hour, ...)
    rather than a scan of the table."""
    start = horizon(now)
    deleted = 0
    for version_id in session.scalars(select(PromptVersion.id)).all():
        for table in TABLES:
            result = session.execute(
                delete(table).where(table.c.version_id == version_id, table.c.hour < start)
            )
            deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return deleted
