"""Pattern analysis's sums by a full scan of the raw conversations: the statements the
analysis ran before it read the pattern rollup (optimizer.patterns.rollup), with the same
whole-hour windows [since, until). The reference the rollup must equal
(tests/property/test_pattern_rollup_properties.py), and the old cost in the benchmark.

Per unit the database forms its conversations and, per metric, the sum Y and count M of the
values for both windows in one pass over the 7-day range; per (group value, unit) the same
for the unit's part in the group; the pairing with unit totals and the sums over units are
the analysis's own (aggregate.totals_statement, groups_statement).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer, Select, String, bindparam, case, cast, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from models.base import UtcDateTime
from models.conversations import Conversation as C
from optimizer.patterns import aggregate, tags_sql
from optimizer.patterns.aggregate import UNIT_TOTALS, Bounds, VersionSums, at, float_sum
from optimizer.patterns.rollup import value
from optimizer.patterns.segments import GroupSums
from optimizer.stats.metrics import PATTERNS


def _in_range(occurred_at: Any) -> list[ColumnElement[bool]]:
    return [occurred_at >= at("since_7d"), occurred_at < at("until")]


def _columns(source: Any) -> dict[str, Any]:
    """Each metric's column in `source`: the conversations table or the tagged rows."""
    if source is C:
        return {m.name: getattr(C, m.column) for m in PATTERNS}
    return {m.name: source.c[m.name] for m in PATTERNS}


def _per_unit(occurred_at: Any, columns: dict[str, Any], *, squares: bool = False) -> list[Any]:
    recent = occurred_at >= at("since_24h")
    values = {m: value(m, columns[m.name]) for m in PATTERNS}
    out: list[Any] = []
    for window, keep in (("7d", None), ("24h", recent)):

        def w(expr: Any, keep: Any = keep) -> Any:
            return expr if keep is None else case((keep, expr), else_=None)

        every = func.count() if keep is None else func.count(w(1))
        out.append(cast(every, Float).label(f"n_{window}"))
        for m, v in values.items():
            out += [
                float_sum(w(v)).label(f"{m.name}_y_{window}"),
                cast(func.count(w(v)), Float).label(f"{m.name}_m_{window}"),
            ]
        if squares:
            out += [
                float_sum(w(v * v)).label(f"{m.name}_q_{window}")
                for m, v in values.items()
                if m.kind != "proportion"
            ]
    return out


def _units(*extra: Any, squares: bool = False) -> Select[Any]:
    return (
        select(*extra, C.unit_id, *_per_unit(C.occurred_at, _columns(C), squares=squares))
        .where(C.version_id == bindparam("version_id"), *_in_range(C.occurred_at))
        .group_by(C.unit_id)
    )


def _segments() -> Select[Any]:
    """Per (segment, unit) figures with the unit's totals as a window sum over all its
    segments (the NULL one too)."""
    parts = (
        select(C.segment.label("value"), C.unit_id, *_per_unit(C.occurred_at, _columns(C)))
        .where(C.version_id == bindparam("version_id"), *_in_range(C.occurred_at))
        .group_by(C.unit_id, C.segment)
        .subquery("parts")
    )
    totals = [
        func.sum(parts.c[name]).over(partition_by=parts.c.unit_id).label(f"unit_{name}")
        for name in UNIT_TOTALS
    ]
    joined = select(parts, *totals).subquery("joined")
    return aggregate.groups_statement(joined, joined.c.value.is_not(None))


TOTALS = aggregate.totals_statement(_units(squares=True).subquery("u"))
SEGMENTS = _segments()

_TAGGED_METRICS = ", ".join(f"c.{m.column} AS {m.name}" for m in PATTERNS)
_SQLITE_TAGGED = f"""
SELECT c.id AS id, c.unit_id AS unit_id, j.value AS value, {_TAGGED_METRICS},
       c.occurred_at AS occurred_at
FROM conversations AS c,
     json_each(CASE WHEN json_valid(c.tags) THEN
               CASE WHEN json_type(c.tags) = 'array' THEN c.tags END END) AS j
WHERE c.version_id = :version_id AND c.occurred_at >= :since_7d AND c.occurred_at < :until
  AND c.tags IS NOT NULL AND j.type = 'text'
  AND NOT EXISTS (SELECT 1 FROM json_each(c.tags) AS k
                  WHERE k.key < j.key AND k.type = 'text' AND k.value = j.value)"""
_PG_TAGGED = f"""
SELECT c.id AS id, c.unit_id AS unit_id, t.value AS value, {_TAGGED_METRICS},
       c.occurred_at AS occurred_at
FROM conversations AS c
CROSS JOIN LATERAL (SELECT DISTINCT e.value #>> '{{{{}}}}' AS value
                    FROM jsonb_array_elements({{array}}) AS e
                    WHERE jsonb_typeof(e.value) = 'string') AS t
WHERE c.version_id = :version_id AND c.occurred_at >= :since_7d AND c.occurred_at < :until
  AND c.tags IS NOT NULL"""
_PG16_ARRAY = (
    "CASE WHEN pg_input_is_valid(c.tags::text, 'jsonb') THEN CASE WHEN "
    "jsonb_typeof(c.tags::text::jsonb) = 'array' THEN c.tags::text::jsonb END END"
)
_PG_ARRAY = "CASE WHEN c.tags::text ~ :tags_array_re THEN c.tags::text::jsonb END"


def _tags_statement(conn: Connection) -> Select[Any]:
    binds = [bindparam("version_id"), at("since_7d"), at("until")]
    if conn.dialect.name == "postgresql":
        pattern = tags_sql.uses_pattern(conn.dialect)
        sql = _PG_TAGGED.format(array=_PG_ARRAY if pattern else _PG16_ARRAY)
        if pattern:
            binds.append(bindparam("tags_array_re", value=tags_sql.TAGS_ARRAY_RE))
    else:
        sql = _SQLITE_TAGGED
    tagged: Subquery = (
        text(sql)
        .bindparams(*binds)
        .columns(
            id=Integer(),
            unit_id=String(),
            value=String(),
            **{m.name: getattr(C, m.column).type for m in PATTERNS},
            occurred_at=UtcDateTime(),
        )
        .subquery("tagged")
    )
    parts = (
        select(
            tagged.c.value,
            tagged.c.unit_id,
            *_per_unit(tagged.c.occurred_at, _columns(tagged)),
        )
        .group_by(tagged.c.value, tagged.c.unit_id)
        .subquery("parts")
    )
    return aggregate.groups_statement(*aggregate.with_unit_totals(_units, parts))


def segment_sums(conn: Connection, version_id: int, bounds: Bounds) -> VersionSums:
    params = bounds.params(version_id)
    totals = aggregate.totals_of(conn.execute(TOTALS, params).mappings().one())
    groups = aggregate.groups_of(conn.execute(SEGMENTS, params).mappings(), "segment")
    return VersionSums(totals, groups)


def tag_sums(conn: Connection, version_id: int, bounds: Bounds) -> list[GroupSums]:
    rows = conn.execute(_tags_statement(conn), bounds.params(version_id)).mappings()
    return aggregate.groups_of(rows, "tag")
