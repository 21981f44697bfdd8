"""The SQL side of pattern analysis. Conversation rows never travel into Python to be
counted, and neither do per-unit rows: the database returns sums over units per group.

Units (`unit_id`) are the independent observations (see significance). The figures come
from the pattern rollup (optimizer.patterns.rollup), which holds per (version, hour, unit)
and per (version, hour, segment or tag, unit) the conversations n and, per metric, the sum
y and count m of the values (and q, the sum of squares, on the version's rows). Per unit the
database sums the unit's hours in the last 24 hours and the last 7 days in one pass
(conditional sums over the 7-day range, which the rollup's primary key serves); per (group
value, unit) the same for the unit's part in the group. Each part is paired with its unit's
totals, and per group value the database sums the products the delta-method variance and
the effective degrees of freedom need. The window totals, and the regression test (the last
24 hours as a group of the 7 days), come from the per-unit rows alone. Per-unit values are
cast to floating point first, so sums of squares and fourth powers cannot overflow an
integer.

Windows are whole hours (Bounds): a run at `now` covers the 24 and the 168 hours before the
hour `now` falls in. The hourly schedule runs at minute 0, so that is the last 24 complete
hours; a conversation counts from its hour on, whenever it arrives. For such windows the
per-unit figures are exactly those of a scan of the raw conversations (a property test
checks it on both databases). The transcripts and sample ids still come from the raw rows
of the same windows (kept at least 8 days, see optimizer.retention).

Tags are unnested as optimizer.patterns.tags_sql describes: each tag counted once per
conversation, and a row whose tags are not a JSON array contributes no tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Float,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from models.base import UtcDateTime
from models.conversations import Conversation
from optimizer.patterns import tags_sql
from optimizer.patterns.rollup import TABLES, floor_hour
from optimizer.patterns.sampling import TRANSCRIPT_CHARS, TRANSCRIPT_SAMPLE
from optimizer.patterns.segments import (
    METRICS,
    MIN_GROUP_N,
    WINDOW_HOURS,
    WINDOWS,
    GroupSums,
    GroupWindow,
    VersionTotals,
    WindowSums,
)
from optimizer.patterns.significance import GroupMoments, WindowMoments
from optimizer.stats.metrics import PATTERNS

C = Conversation
UNITS, SEGMENT_PARTS, TAG_PARTS = TABLES
MAX_VALUES_PER_DIMENSION = 200  # the largest groups of a dimension, by 7-day count
SAMPLE_IDS = 10


@dataclass(frozen=True)
class Bounds:
    """The windows of a run at `now`: whole hours, [since, until) with `until` the start of
    the hour `now` falls in."""

    now: datetime

    @property
    def until(self) -> datetime:
        return floor_hour(self.now)

    @property
    def since_24h(self) -> datetime:
        return self.until - timedelta(hours=WINDOW_HOURS["24h"])

    @property
    def since_7d(self) -> datetime:
        return self.until - timedelta(hours=WINDOW_HOURS["7d"])

    def params(self, version_id: int) -> dict[str, Any]:
        return {
            "version_id": version_id,
            "since_24h": self.since_24h,
            "since_7d": self.since_7d,
            "until": self.until,
        }


def at(name: str) -> Any:
    """A bound moment (Bounds.params names them)."""
    return bindparam(name, type_=UtcDateTime())


def float_sum(expr: Any) -> Any:
    return func.coalesce(cast(func.sum(expr), Float), 0.0)


def _figures(table: Table, *, squares: bool = False) -> list[Any]:
    """A unit's (or a unit's part in a group's) figures for both windows, summed over its
    hours: conversations n, and per metric the sum y, the count m and, with `squares`, a
    mean metric's sum of squares q (only the window totals need it; narrow rows keep the
    sorts small; for a proportion a value squared is the value, so q is y)."""
    recent = table.c.hour >= at("since_24h")
    out: list[Any] = []
    for window, keep in (("7d", None), ("24h", recent)):

        def w(name: str, keep: Any = keep) -> Any:
            column = table.c[name]
            return float_sum(column if keep is None else case((keep, column), else_=None))

        out.append(w("n").label(f"n_{window}"))
        for m in PATTERNS:
            out += [
                w(f"{m.name}_y").label(f"{m.name}_y_{window}"),
                w(f"{m.name}_m").label(f"{m.name}_m_{window}"),
            ]
        if squares:
            out += [
                w(f"{m.name}_q").label(f"{m.name}_q_{window}")
                for m in PATTERNS
                if m.kind != "proportion"
            ]
    return out


def _in_windows(table: Table) -> list[ColumnElement[bool]]:
    return [
        table.c.version_id == bindparam("version_id"),
        table.c.hour >= at("since_7d"),
        table.c.hour < at("until"),
    ]


def _units(*extra: Any, squares: bool = False) -> Select[Any]:
    """One row per unit of the version in the 7-day range: its figures (see _figures)."""
    return (
        select(*extra, UNITS.c.unit_id, *_figures(UNITS, squares=squares))
        .where(*_in_windows(UNITS))
        .group_by(UNITS.c.unit_id)
    )


def _parts(table: Table, column: str) -> Subquery:
    """One row per (group value, unit): the unit's figures inside the group."""
    value = table.c[column]
    return (
        select(value.label("value"), table.c.unit_id, *_figures(table))
        .where(*_in_windows(table))
        .group_by(table.c.unit_id, value)
        .subquery("parts")
    )


def _count_if(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _moment_columns(prefix: str, y: Any, m: Any) -> list[Any]:
    """Sums over units of y, m and their powers (WindowMoments' and GroupMoments' own)."""
    return [
        float_sum(y).label(f"{prefix}_y"),
        float_sum(m).label(f"{prefix}_m"),
        float_sum(y * y).label(f"{prefix}_yy"),
        float_sum(m * m).label(f"{prefix}_mm"),
        float_sum(y * m).label(f"{prefix}_ym"),
        float_sum(m * m * m).label(f"{prefix}_m3"),
        float_sum(m * m * m * m).label(f"{prefix}_m4"),
        _count_if(m > 0).label(f"{prefix}_units"),
    ]


def _cross_columns(prefix: str, yg: Any, mg: Any, y: Any, m: Any) -> list[Any]:
    """Sums over units of the group part (yg, mg) times the unit's window totals (y, m), and
    the outside part's corrections (see GroupMoments)."""
    out = m - mg
    return [
        float_sum(yg * y).label(f"{prefix}_y_y"),
        float_sum(yg * m).label(f"{prefix}_y_m"),
        float_sum(mg * y).label(f"{prefix}_m_y"),
        float_sum(mg * m).label(f"{prefix}_m_m"),
        func.coalesce(func.sum(case((out > 0, 1), else_=0) - case((m > 0, 1), else_=0)), 0).label(
            f"{prefix}_out_units_adj"
        ),
        float_sum(out * out * out - m * m * m).label(f"{prefix}_out_m3_adj"),
        float_sum(out * out * out * out - m * m * m * m).label(f"{prefix}_out_m4_adj"),
    ]


def totals_statement(u: Subquery) -> Select[Any]:
    """The version's window sums from `u`, one row per unit with its figures (squares
    included)."""
    columns: list[Any] = []
    for window in WINDOWS:
        columns += [
            float_sum(u.c[f"n_{window}"]).label(f"n_{window}"),
            _count_if(u.c[f"n_{window}"] > 0).label(f"units_{window}"),
        ]
        columns += [
            float_sum(u.c[f"{m.name}_q_{window}"]).label(f"{m.name}_q_{window}")
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


def with_unit_totals(
    units: Callable[..., Select[Any]], parts: Subquery
) -> tuple[Subquery, ColumnElement[bool]]:
    """The per-(value, unit) rows of `parts`, each with its unit's window totals (unit_*);
    `units(*extra)` selects the extra columns and then the same columns as `parts`, one row
    per unit.

    Logically a join of `parts` to the per-unit rows on unit_id. It is written as one
    stream of both kinds of row, partitioned by unit_id, because a join of two aggregates
    is where PostgreSQL goes wrong on a stale estimate: expecting one unit, it may pick a
    nested loop that re-aggregates the units for every group row, which is quadratic. A
    window partition is a sort, whatever the estimate."""
    names = [c.name for c in parts.c if c.name not in ("value", "unit_id")]
    unit_rows = units(cast(null(), String).label("value"), literal_column("1").label("is_unit"))
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


def groups_statement(g: Subquery, keep: ColumnElement[bool]) -> Select[Any]:
    """Per group value, over the rows of `g` that `keep` selects (value, a unit's part in
    the group, and its unit_* totals): the sums over units the tests need; the largest
    groups by 7-day conversations."""
    columns: list[Any] = [g.c.value]
    for window in WINDOWS:
        columns.append(float_sum(g.c[f"n_{window}"]).label(f"n_{window}"))
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


TOTALS: Select[Any] = totals_statement(_units(squares=True).subquery("u"))
SEGMENTS: Select[Any] = groups_statement(
    *with_unit_totals(_units, _parts(SEGMENT_PARTS, "segment"))
)
TAGS: Select[Any] = groups_statement(*with_unit_totals(_units, _parts(TAG_PARTS, "tag")))


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


def totals_of(row: RowMapping) -> VersionTotals:
    """The version's window sums from the row of a totals statement."""
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


def groups_of(rows: Any, dimension: str) -> list[GroupSums]:
    """The groups from the rows of a groups statement."""
    return [
        GroupSums(dimension, str(row["value"]), {w: _group_window(row, w) for w in WINDOWS})
        for row in rows
    ]


def segment_sums(conn: Connection, version_id: int, bounds: Bounds) -> VersionSums:
    params = bounds.params(version_id)
    totals = totals_of(conn.execute(TOTALS, params).mappings().one())
    return VersionSums(totals, groups_of(conn.execute(SEGMENTS, params).mappings(), "segment"))


def tag_sums(conn: Connection, version_id: int, bounds: Bounds) -> list[GroupSums]:
    return groups_of(conn.execute(TAGS, bounds.params(version_id)).mappings(), "tag")


def _raw_window(since: datetime, until: datetime) -> list[ColumnElement[bool]]:
    return [C.occurred_at >= since, C.occurred_at < until]


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
            *_raw_window(bounds.since_7d, bounds.until),
        )
        .order_by(C.occurred_at.desc(), C.id.desc())
        .limit(limit)
    )
    return [(int(i), t or "") for i, t in rows]


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
    """Ids of the most recent failed conversations in the group and window [since, until).
    Those with a transcript come first (variant generation shows transcripts, not ids);
    without `with_transcripts` (the version logs none) that pass is skipped, since it would
    scan the whole window for nothing."""
    query = select(C.id).where(
        C.version_id == version_id,
        C.success.is_(False),
        *_raw_window(since, until),
    )
    if dimension == "segment":
        query = query.where(C.segment == value)
    elif dimension == "tag" and value is not None:
        dialect = conn.dialect
        query = query.where(
            C.tags.is_not(None),
            tags_sql.has_tag(dialect.name, dialect.server_version_info, value),
        )
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
