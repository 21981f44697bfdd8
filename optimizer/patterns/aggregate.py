"""The SQL side of pattern analysis. Conversation rows never travel into Python to be
counted, and neither do per-unit rows: the database returns sums over units per group.

Units (`unit_id`) are the independent observations (see significance). Per unit the
database forms its conversations and, per metric, the sum Y and count M of the values, for
the last 24 hours and the last 7 days in one pass (conditional aggregates over the 7-day
range, which the (version_id, occurred_at) index serves); per (group value, unit) the same
for the unit's part in the group. Each part is paired with its unit's totals, and per group
value the database sums the products the delta-method variance and the effective degrees
of freedom need. The window totals, and the regression test (the last 24 hours as a group
of the 7 days), come from the per-unit rows alone. Per-unit values are cast to floating
point first, so sums of squares and fourth powers cannot overflow an integer.

Tags are a JSON list in a text column. They are unnested in SQL (json_each on SQLite,
jsonb_array_elements on PostgreSQL, via a text cast so a json or jsonb column works too),
each tag counted once per conversation even when listed twice, and a row whose tags are not
a JSON array contributes no tags instead of failing the query. PostgreSQL 16 tests that
with pg_input_is_valid; before 16 a regular expression admits only arrays of well-formed
JSON strings (what ingest writes). Should a value still fail the cast there (a lone UTF-16
surrogate escape), the caller skips the tag dimension with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Select,
    String,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from models.base import UtcDateTime
from models.conversations import Conversation
from optimizer.patterns.sampling import TRANSCRIPT_CHARS, TRANSCRIPT_SAMPLE
from optimizer.patterns.segments import (
    METRICS,
    MIN_GROUP_N,
    WINDOWS,
    GroupSums,
    GroupWindow,
    VersionTotals,
    WindowSums,
)
from optimizer.patterns.significance import GroupMoments, WindowMoments
from optimizer.stats.metrics import PATTERNS, Metric

C = Conversation
MAX_VALUES_PER_DIMENSION = 200  # the largest groups of a dimension, by 7-day count
SAMPLE_IDS = 10


@dataclass(frozen=True)
class Bounds:
    """The windows of one run, all ending at `until` (the run's now)."""

    until: datetime

    @property
    def since_24h(self) -> datetime:
        return self.until - timedelta(hours=24)

    @property
    def since_7d(self) -> datetime:
        return self.until - timedelta(days=7)

    def params(self, version_id: int) -> dict[str, Any]:
        return {
            "version_id": version_id,
            "since_24h": self.since_24h,
            "since_7d": self.since_7d,
            "until": self.until,
        }


def _at(name: str) -> Any:
    return bindparam(name, type_=UtcDateTime())


def _in_range(occurred_at: Any) -> list[ColumnElement[bool]]:
    return [occurred_at > _at("since_7d"), occurred_at <= _at("until")]


def _float_sum(expr: Any) -> Any:
    return func.coalesce(cast(func.sum(expr), Float), 0.0)


def _value(m: Metric, column: Any) -> Any:
    """One conversation's value of the metric as a float: a proportion as 1.0 or 0.0."""
    if m.kind == "proportion":
        return case((column.is_(None), None), (column, 1.0), else_=0.0)
    return cast(column, Float)


def _columns(source: Any) -> dict[str, Any]:
    """Each metric's column in `source`: the conversations table or the tagged rows."""
    if source is C:
        return {m.name: getattr(C, m.column) for m in PATTERNS}
    return {m.name: source.c[m.name] for m in PATTERNS}


def _per_unit(occurred_at: Any, columns: dict[str, Any], *, squares: bool = False) -> list[Any]:
    """A unit's (or a unit's part in a group's) figures for both windows: conversations n,
    and per metric the sum y, the count m and, with `squares`, a mean metric's sum of
    squares q (only the window totals need it; narrow rows keep the sorts small; for a
    proportion a value squared is the value, so q is y)."""
    recent = occurred_at > _at("since_24h")
    values = {m: _value(m, columns[m.name]) for m in PATTERNS}
    out: list[Any] = []
    for window, keep in (("7d", None), ("24h", recent)):

        def w(expr: Any, keep: Any = keep) -> Any:
            return expr if keep is None else case((keep, expr), else_=None)

        every = func.count() if keep is None else func.count(w(1))
        out.append(cast(every, Float).label(f"n_{window}"))
        for m, value in values.items():
            out += [
                _float_sum(w(value)).label(f"{m.name}_y_{window}"),
                cast(func.count(w(value)), Float).label(f"{m.name}_m_{window}"),
            ]
        if squares:
            out += [
                _float_sum(w(value * value)).label(f"{m.name}_q_{window}")
                for m, value in values.items()
                if m.kind != "proportion"
            ]
    return out


def _units(*extra: Any, squares: bool = False) -> Select[Any]:
    """One row per unit of the version in the 7-day range: its figures (see _per_unit)."""
    return (
        select(*extra, C.unit_id, *_per_unit(C.occurred_at, _columns(C), squares=squares))
        .where(C.version_id == bindparam("version_id"), *_in_range(C.occurred_at))
        .group_by(C.unit_id)
    )


def _count_if(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _moment_columns(prefix: str, y: Any, m: Any) -> list[Any]:
    """Sums over units of y, m and their powers (WindowMoments' and GroupMoments' own)."""
    return [
        _float_sum(y).label(f"{prefix}_y"),
        _float_sum(m).label(f"{prefix}_m"),
        _float_sum(y * y).label(f"{prefix}_yy"),
        _float_sum(m * m).label(f"{prefix}_mm"),
        _float_sum(y * m).label(f"{prefix}_ym"),
        _float_sum(m * m * m).label(f"{prefix}_m3"),
        _float_sum(m * m * m * m).label(f"{prefix}_m4"),
        _count_if(m > 0).label(f"{prefix}_units"),
    ]


def _cross_columns(prefix: str, yg: Any, mg: Any, y: Any, m: Any) -> list[Any]:
    """Sums over units of the group part (yg, mg) times the unit's window totals (y, m), and
    the outside part's corrections (see GroupMoments)."""
    out = m - mg
    return [
        _float_sum(yg * y).label(f"{prefix}_y_y"),
        _float_sum(yg * m).label(f"{prefix}_y_m"),
        _float_sum(mg * y).label(f"{prefix}_m_y"),
        _float_sum(mg * m).label(f"{prefix}_m_m"),
        func.coalesce(func.sum(case((out > 0, 1), else_=0) - case((m > 0, 1), else_=0)), 0).label(
            f"{prefix}_out_units_adj"
        ),
        _float_sum(out * out * out - m * m * m).label(f"{prefix}_out_m3_adj"),
        _float_sum(out * out * out * out - m * m * m * m).label(f"{prefix}_out_m4_adj"),
    ]


def _totals_statement() -> Select[Any]:
    u = _units(squares=True).subquery("u")
    columns: list[Any] = []
    for window in WINDOWS:
        columns += [
            _float_sum(u.c[f"n_{window}"]).label(f"n_{window}"),
            _count_if(u.c[f"n_{window}"] > 0).label(f"units_{window}"),
        ]
        columns += [
            _float_sum(u.c[f"{m.name}_q_{window}"]).label(f"{m.name}_q_{window}")
            for m in PATTERNS
            if m.kind != "proportion"
        ]
        for metric in METRICS:
            columns += _moment_columns(
                f"{metric}_{window}", u.c[f"{metric}_y_{window}"], u.c[f"{metric}_m_{window}"]
            )
    for metric in METRICS:
        columns += _cross_columns(
            f"{metric}_recent",
            u.c[f"{metric}_y_24h"],
            u.c[f"{metric}_m_24h"],
            u.c[f"{metric}_y_7d"],
            u.c[f"{metric}_m_7d"],
        )
    return select(*columns)


# The unit totals the group statements need beside each unit's part in a group.
UNIT_TOTALS = [
    f"{metric}_{stat}_{window}" for window in WINDOWS for metric in METRICS for stat in ("y", "m")
]


def _segments_with_unit_totals() -> tuple[Subquery, ColumnElement[bool]]:
    """Per (segment, unit) figures, each row with its unit's window totals (unit_*). The
    NULL segment is grouped too, so a unit's rows cover all its conversations and a window
    sum over the unit gives its totals: one grouped scan, no join (see _tags_with...)."""
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
    return joined, joined.c.value.is_not(None)


def _tags_with_unit_totals(parts: Subquery) -> tuple[Subquery, ColumnElement[bool]]:
    """The per-(tag, unit) rows of `parts`, each with its unit's window totals (unit_*).

    Logically a join of `parts` to the per-unit subquery on unit_id. It is written as one
    stream of both kinds of row, partitioned by unit_id, because a join of two aggregates
    is where PostgreSQL goes wrong on a stale estimate (the index leads with version_id, so
    the planner cannot look up where occurred_at really ends): expecting one unit, it may
    pick a nested loop that re-aggregates the units for every group row, which is
    quadratic. A window partition is a sort, whatever the estimate."""
    names = [c.name for c in parts.c if c.name not in ("value", "unit_id")]
    unit_rows = _units(cast(null(), String).label("value"), literal_column("1").label("is_unit"))
    group_rows = select(
        parts.c.value,
        literal_column("0").label("is_unit"),
        parts.c.unit_id,
        *[parts.c[name] for name in names],
    )
    both = union_all(unit_rows, group_rows).subquery("both")
    totals = [
        func.max(case((both.c.is_unit == 1, both.c[name]), else_=None))
        .over(partition_by=both.c.unit_id)
        .label(f"unit_{name}")
        for name in UNIT_TOTALS
    ]
    joined = select(both, *totals).subquery("joined")
    return joined, joined.c.is_unit == 0


def _groups_statement(g: Subquery, keep: ColumnElement[bool]) -> Select[Any]:
    """Per group value, over the rows of `g` that `keep` selects (value, a unit's part in
    the group, and its unit_* totals): the sums over units the tests need; the largest
    groups by 7-day conversations."""
    columns: list[Any] = [g.c.value]
    for window in WINDOWS:
        columns.append(_float_sum(g.c[f"n_{window}"]).label(f"n_{window}"))
        for metric in METRICS:
            names = (f"{metric}_y_{window}", f"{metric}_m_{window}")
            yg, mg = (g.c[name] for name in names)
            y, m = (g.c[f"unit_{name}"] for name in names)
            prefix = f"{metric}_{window}"
            columns += _moment_columns(prefix, yg, mg) + _cross_columns(prefix, yg, mg, y, m)
    size = func.sum(g.c.n_7d)
    return (
        select(*columns)
        .where(keep)
        .group_by(g.c.value)
        .having(size >= MIN_GROUP_N)
        .order_by(size.desc(), g.c.value)
        .limit(MAX_VALUES_PER_DIMENSION)
    )


TOTALS: Select[Any] = _totals_statement()
SEGMENTS: Select[Any] = _groups_statement(*_segments_with_unit_totals())

# The metrics' columns as the tagged rows carry them.
_TAGGED_METRICS = ", ".join(f"c.{m.column} AS {m.name}" for m in PATTERNS)
_SQLITE_TAGGED = f"""
SELECT c.id AS id, c.unit_id AS unit_id, j.value AS value, {_TAGGED_METRICS},
       c.occurred_at AS occurred_at
FROM conversations AS c,
     json_each(CASE WHEN json_valid(c.tags) THEN
               CASE WHEN json_type(c.tags) = 'array' THEN c.tags END END) AS j
WHERE c.version_id = :version_id AND c.occurred_at > :since_7d AND c.occurred_at <= :until
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
WHERE c.version_id = :version_id AND c.occurred_at > :since_7d AND c.occurred_at <= :until
  AND c.tags IS NOT NULL"""


# A JSON array of JSON strings, nothing else: jsonb accepts every text this matches, bar
# lone surrogate escapes. \u0000 is left out because jsonb refuses it.
_STRING = r'"(\\(["\\/bfnrt]|u(?!0000)[0-9a-fA-F]{4})|[^"\\\x01-\x1f])*"'
TAGS_ARRAY_RE = rf"^\s*\[\s*({_STRING}\s*(,\s*{_STRING}\s*)*)?\]\s*$"


def pg_tags_array(server_version: tuple[int | str, ...] | None, column: str = "c.tags") -> str:
    """The tags as a jsonb array, or NULL when they are not one. Binds :tags_array_re
    before PostgreSQL 16 (see tags_bind)."""
    major = server_version[0] if server_version else None
    if isinstance(major, int) and major >= 16:
        return (
            f"CASE WHEN pg_input_is_valid({column}::text, 'jsonb') THEN CASE WHEN "
            f"jsonb_typeof({column}::text::jsonb) = 'array' THEN {column}::text::jsonb "
            "END END"
        )
    return f"CASE WHEN {column}::text ~ :tags_array_re THEN {column}::text::jsonb END"


def tags_bind() -> Any:
    return bindparam("tags_array_re", value=TAGS_ARRAY_RE)


def _tags_statement(conn: Connection) -> Select[Any]:
    if conn.dialect.name == "postgresql":
        sql = _PG_TAGGED.format(array=pg_tags_array(conn.dialect.server_version_info))
    else:
        sql = _SQLITE_TAGGED
    binds = [bindparam("version_id"), _at("since_7d"), _at("until")]
    if ":tags_array_re" in sql:
        binds.append(tags_bind())
    tagged = (
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
    return _groups_statement(*_tags_with_unit_totals(parts))


def _window_moments(row: RowMapping, prefix: str, q: float) -> WindowMoments:
    def f(name: str) -> float:
        return float(row[f"{prefix}_{name}"] or 0.0)

    return WindowMoments(
        int(row[f"{prefix}_units"] or 0),
        f("y"),
        f("m"),
        f("yy"),
        f("mm"),
        f("ym"),
        f("m3"),
        f("m4"),
        q,
    )


def _group_moments(row: RowMapping, inside: str, cross: str) -> GroupMoments:
    """`inside`: the prefix of the group part's own sums; `cross`: of its products with
    the unit totals."""

    def f(prefix: str, name: str) -> float:
        return float(row[f"{prefix}_{name}"] or 0.0)

    return GroupMoments(
        int(row[f"{inside}_units"] or 0),
        f(inside, "y"),
        f(inside, "m"),
        f(inside, "yy"),
        f(inside, "mm"),
        f(inside, "ym"),
        f(cross, "y_y"),
        f(cross, "y_m"),
        f(cross, "m_y"),
        f(cross, "m_m"),
        f(inside, "m3"),
        f(inside, "m4"),
        int(row[f"{cross}_out_units_adj"] or 0),
        f(cross, "out_m3_adj"),
        f(cross, "out_m4_adj"),
    )


def _group_window(row: RowMapping, window: str) -> GroupWindow:
    return GroupWindow(
        round(row[f"n_{window}"] or 0),
        {
            metric: _group_moments(row, f"{metric}_{window}", f"{metric}_{window}")
            for metric in METRICS
        },
    )


def _totals(row: RowMapping) -> VersionTotals:
    windows = {}
    for window in WINDOWS:
        # For a proportion a value squared is the value: q is y.
        q = {
            m.name: float(
                row[f"{m.name}_{window}_y" if m.kind == "proportion" else f"{m.name}_q_{window}"]
                or 0.0
            )
            for m in PATTERNS
        }
        windows[window] = WindowSums(
            round(row[f"n_{window}"] or 0),
            int(row[f"units_{window}"] or 0),
            {m: _window_moments(row, f"{m}_{window}", q[m]) for m in METRICS},
        )
    recent = GroupWindow(
        round(row["n_24h"] or 0),
        {metric: _group_moments(row, f"{metric}_24h", f"{metric}_recent") for metric in METRICS},
    )
    return VersionTotals(windows, recent)


@dataclass(frozen=True)
class VersionSums:
    totals: VersionTotals  # the whole version, per window
    segments: list[GroupSums]  # the largest MAX_VALUES_PER_DIMENSION segments


def _groups(rows: Any, dimension: str) -> list[GroupSums]:
    return [
        GroupSums(dimension, str(row["value"]), {w: _group_window(row, w) for w in WINDOWS})
        for row in rows
    ]


def segment_sums(conn: Connection, version_id: int, bounds: Bounds) -> VersionSums:
    params = bounds.params(version_id)
    totals = _totals(conn.execute(TOTALS, params).mappings().one())
    return VersionSums(totals, _groups(conn.execute(SEGMENTS, params).mappings(), "segment"))


def tag_sums(conn: Connection, version_id: int, bounds: Bounds) -> list[GroupSums]:
    rows = conn.execute(_tags_statement(conn), bounds.params(version_id)).mappings()
    return _groups(rows, "tag")


def transcripts(
    conn: Connection,
    version_id: int,
    bounds: Bounds,
    *,
    success: bool,
    limit: int = TRANSCRIPT_SAMPLE,
) -> list[tuple[int, str]]:
    """(id, first TRANSCRIPT_CHARS characters) of the most recent transcripts on one side."""
    rows = conn.execute(
        select(C.id, func.substr(C.transcript, 1, TRANSCRIPT_CHARS))
        .where(
            C.version_id == version_id,
            C.success.is_(success),
            C.transcript.is_not(None),
            C.occurred_at > bounds.since_7d,
            C.occurred_at <= bounds.until,
        )
        .order_by(C.occurred_at.desc(), C.id.desc())
        .limit(limit)
    )
    return [(int(i), t or "") for i, t in rows]


def _has_tag(conn: Connection, tag: str) -> ColumnElement[bool]:
    if conn.dialect.name == "postgresql":
        array = pg_tags_array(conn.dialect.server_version_info, "conversations.tags")
        clause = text(f"({array}) @> jsonb_build_array(CAST(:tag AS text))")
        if ":tags_array_re" in array:
            clause = clause.bindparams(tags_bind())
    else:
        clause = text(
            "EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(conversations.tags)"
            " THEN CASE WHEN json_type(conversations.tags) = 'array' THEN "
            "conversations.tags END END) AS k WHERE k.type = 'text' AND "
            "k.value = :tag)"
        )
    return clause.bindparams(tag=tag)  # type: ignore[return-value]


def failing_ids(
    conn: Connection,
    version_id: int,
    since: datetime,
    until: datetime,
    *,
    dimension: str | None = None,
    value: str | None = None,
    with_transcripts: bool = True,
    limit: int = SAMPLE_IDS,
) -> list[int]:
    """Ids of the most recent failed conversations in the group and window. Those with a
    transcript come first (variant generation shows transcripts, not ids); without
    `with_transcripts` (the version logs none) that pass is skipped, since it would scan
    the whole window for nothing."""
    query = select(C.id).where(
        C.version_id == version_id,
        C.success.is_(False),
        C.occurred_at > since,
        C.occurred_at <= until,
    )
    if dimension == "segment":
        query = query.where(C.segment == value)
    elif dimension == "tag" and value is not None:
        query = query.where(C.tags.is_not(None), _has_tag(conn, value))
    # Newest first, in index order, so the scan stops after `limit` matches.
    newest = (C.occurred_at.desc(), C.id.desc())
    found: list[int] = []
    if with_transcripts:
        found = [
            int(i)
            for i in conn.scalars(
                query.where(C.transcript.is_not(None)).order_by(*newest).limit(limit)
            )
        ]
    if len(found) < limit:
        if found:
            query = query.where(C.id.not_in(found))
        found += [int(i) for i in conn.scalars(query.order_by(*newest).limit(limit - len(found)))]
    return found


def sample_of(
    conn: Connection,
    version_id: int,
    bounds: Bounds,
    dimension: str | None,
    value: str | None,
    window: str,
    with_transcripts: bool = True,
) -> list[int]:
    since = bounds.since_7d if window == "7d" else bounds.since_24h
    return failing_ids(
        conn,
        version_id,
        since,
        bounds.until,
        dimension=dimension,
        value=value,
        with_transcripts=with_transcripts,
    )
