"""The SQL side of pattern analysis. Conversation rows never travel into Python to be
counted: per group the database returns the conversation count and, per metric, the count
of non-null values, their sum and their sum of squares, for the last 24 hours and the last
7 days in one pass (conditional aggregates over the 7-day range, which the
(version_id, occurred_at) index serves).

Tags are a JSON list in a text column. They are unnested in SQL (json_each on SQLite,
jsonb_array_elements on PostgreSQL, via a text cast so a json or jsonb column works too),
each tag counted once per conversation even when listed twice, and a row whose tags are not
a JSON array contributes no tags instead of failing the query. PostgreSQL 16 tests that
with pg_input_is_valid; before 16 a regular expression admits only arrays of well-formed
JSON strings (what ingest writes). Should a value still fail the cast there (a lone UTF-16
surrogate escape), the caller skips the tag dimension with the reason.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    Select,
    String,
    bindparam,
    case,
    cast,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.elements import ColumnElement

from models.base import UtcDateTime
from models.conversations import Conversation
from optimizer.patterns.segments import MIN_GROUP_N, WINDOWS, GroupSums, WindowSums
from optimizer.stats import MetricSums

C = Conversation
MAX_VALUES_PER_DIMENSION = 200   # the largest groups of a dimension, by 7-day count
TRANSCRIPT_SAMPLE = 2000         # most recent transcripts per side (failed, successful)
TRANSCRIPT_CHARS = 2000          # each cut in SQL, so a huge one never travels whole
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
        return {"version_id": version_id, "since_24h": self.since_24h,
                "since_7d": self.since_7d, "until": self.until}


def _at(name: str) -> Any:
    return bindparam(name, type_=UtcDateTime())


def _columns(occurred_at: Any, success: Any, rating: Any) -> list[ColumnElement[Any]]:
    """Sums for the whole 7-day range (the WHERE clause) and, through CASE, the last 24 h."""
    recent = occurred_at > _at("since_24h")
    value = case((success.is_(None), None), (success, 1.0), else_=0.0)
    stars = cast(rating, Float)
    out: list[ColumnElement[Any]] = []
    for window, keep in (("7d", None), ("24h", recent)):
        def w(expr: Any, keep: Any = keep) -> Any:
            return expr if keep is None else case((keep, expr), else_=None)
        out += [(func.count() if keep is None else func.count(w(1))).label(f"n_{window}"),
                func.count(w(value)).label(f"success_n_{window}"),
                func.sum(w(value)).label(f"success_sum_{window}"),
                func.count(w(stars)).label(f"rating_n_{window}"),
                func.sum(w(stars)).label(f"rating_sum_{window}"),
                func.sum(w(stars * stars)).label(f"rating_sq_{window}")]
    return out


SEGMENTS: Select[Any] = (
    select(C.segment.label("value"), *_columns(C.occurred_at, C.success, C.rating))
    .where(C.version_id == bindparam("version_id"), C.occurred_at > _at("since_7d"),
           C.occurred_at <= _at("until"))
    .group_by(C.segment))

_SQLITE_TAGGED = """
SELECT c.id AS id, j.value AS value, c.success AS success, c.rating AS rating,
       c.occurred_at AS occurred_at
FROM conversations AS c,
     json_each(CASE WHEN json_valid(c.tags) THEN
               CASE WHEN json_type(c.tags) = 'array' THEN c.tags END END) AS j
WHERE c.version_id = :version_id AND c.occurred_at > :since_7d AND c.occurred_at <= :until
  AND c.tags IS NOT NULL AND j.type = 'text'
  AND NOT EXISTS (SELECT 1 FROM json_each(c.tags) AS k
                  WHERE k.key < j.key AND k.type = 'text' AND k.value = j.value)"""

_PG_TAGGED = """
SELECT c.id AS id, t.value AS value, c.success AS success, c.rating AS rating,
       c.occurred_at AS occurred_at
FROM conversations AS c
CROSS JOIN LATERAL (SELECT DISTINCT e.value #>> '{{}}' AS value
                    FROM jsonb_array_elements({array}) AS e
                    WHERE jsonb_typeof(e.value) = 'string') AS t
WHERE c.version_id = :version_id AND c.occurred_at > :since_7d AND c.occurred_at <= :until
  AND c.tags IS NOT NULL"""


# A JSON array of JSON strings, nothing else: jsonb accepts every text this matches, bar
# lone surrogate escapes. \u0000 is left out because jsonb refuses it.
_STRING = r'"(\\(["\\/bfnrt]|u(?!0000)[0-9a-fA-F]{4})|[^"\\\x01-\x1f])*"'
TAGS_ARRAY_RE = rf"^\s*\[\s*({_STRING}\s*(,\s*{_STRING}\s*)*)?\]\s*$"


def pg_tags_array(server_version: tuple[int | str, ...] | None,
                  column: str = "c.tags") -> str:
    """The tags as a jsonb array, or NULL when they are not one. Binds :tags_array_re
    before PostgreSQL 16 (see tags_bind)."""
    major = server_version[0] if server_version else None
    if isinstance(major, int) and major >= 16:
        return (f"CASE WHEN pg_input_is_valid({column}::text, 'jsonb') THEN CASE WHEN "
                f"jsonb_typeof({column}::text::jsonb) = 'array' THEN {column}::text::jsonb "
                "END END")
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
    tagged = (text(sql).bindparams(*binds)
              .columns(id=Integer(), value=String(), success=Boolean(), rating=Integer(),
                       occurred_at=UtcDateTime())
              .subquery("tagged"))
    count = func.count()
    return (select(tagged.c.value, *_columns(tagged.c.occurred_at, tagged.c.success,
                                             tagged.c.rating))
            .group_by(tagged.c.value).having(count >= MIN_GROUP_N)
            .order_by(count.desc(), tagged.c.value).limit(MAX_VALUES_PER_DIMENSION))


def _window(row: RowMapping, window: str) -> WindowSums:
    def sums(metric: str, squares: bool) -> MetricSums:
        total = float(row[f"{metric}_sum_{window}"] or 0.0)
        sq = float(row[f"rating_sq_{window}"] or 0.0) if squares else total
        return MetricSums(int(row[f"{metric}_n_{window}"] or 0), total, sq)
    return WindowSums(int(row[f"n_{window}"] or 0), sums("success", False), sums("rating", True))


def _add(a: WindowSums, b: WindowSums) -> WindowSums:
    return WindowSums(a.conversations + b.conversations,
                      MetricSums(a.success.n + b.success.n, a.success.total + b.success.total,
                                 a.success.total_sq + b.success.total_sq),
                      MetricSums(a.rating.n + b.rating.n, a.rating.total + b.rating.total,
                                 a.rating.total_sq + b.rating.total_sq))


@dataclass(frozen=True)
class VersionSums:
    totals: dict[str, WindowSums]      # the whole version, per window
    segments: list[GroupSums]          # the largest MAX_VALUES_PER_DIMENSION segments


def segment_sums(conn: Connection, version_id: int, bounds: Bounds) -> VersionSums:
    """Sums per segment; their sum over every group (NULL included) is the version's total."""
    empty = WindowSums(0, MetricSums(0, 0.0, 0.0), MetricSums(0, 0.0, 0.0))
    totals = dict.fromkeys(WINDOWS, empty)
    largest: list[tuple[int, str, GroupSums]] = []
    for row in conn.execute(SEGMENTS, bounds.params(version_id)).mappings():
        windows = {w: _window(row, w) for w in WINDOWS}
        totals = {w: _add(totals[w], windows[w]) for w in WINDOWS}
        if row["value"] is not None and windows["7d"].conversations >= MIN_GROUP_N:
            item = (windows["7d"].conversations, str(row["value"]),
                    GroupSums("segment", str(row["value"]), windows))
            # A min-heap of the largest groups: memory stays bounded however many there are.
            if len(largest) < MAX_VALUES_PER_DIMENSION:
                heapq.heappush(largest, item)
            elif item[:2] > largest[0][:2]:
                heapq.heapreplace(largest, item)
    groups = [g for _, _, g in sorted(largest, key=lambda i: (-i[0], i[1]))]
    return VersionSums(totals, groups)


def tag_sums(conn: Connection, version_id: int, bounds: Bounds) -> list[GroupSums]:
    rows = conn.execute(_tags_statement(conn), bounds.params(version_id)).mappings()
    return [GroupSums("tag", str(row["value"]), {w: _window(row, w) for w in WINDOWS})
            for row in rows]


def transcripts(conn: Connection, version_id: int, bounds: Bounds, *, success: bool,
                limit: int = TRANSCRIPT_SAMPLE) -> list[tuple[int, str]]:
    """(id, first TRANSCRIPT_CHARS characters) of the most recent transcripts on one side."""
    rows = conn.execute(
        select(C.id, func.substr(C.transcript, 1, TRANSCRIPT_CHARS))
        .where(C.version_id == version_id, C.success.is_(success), C.transcript.is_not(None),
               C.occurred_at > bounds.since_7d, C.occurred_at <= bounds.until)
        .order_by(C.occurred_at.desc(), C.id.desc()).limit(limit))
    return [(int(i), t or "") for i, t in rows]


def _has_tag(conn: Connection, tag: str) -> ColumnElement[bool]:
    if conn.dialect.name == "postgresql":
        array = pg_tags_array(conn.dialect.server_version_info, "conversations.tags")
        clause = text(f"({array}) @> jsonb_build_array(CAST(:tag AS text))")
        if ":tags_array_re" in array:
            clause = clause.bindparams(tags_bind())
    else:
        clause = text("EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(conversations.tags)"
                      " THEN CASE WHEN json_type(conversations.tags) = 'array' THEN "
                      "conversations.tags END END) AS k WHERE k.type = 'text' AND "
                      "k.value = :tag)")
    return clause.bindparams(tag=tag)  # type: ignore[return-value]


def failing_ids(conn: Connection, version_id: int, since: datetime, until: datetime, *,
                dimension: str | None = None, value: str | None = None,
                with_transcripts: bool = True, limit: int = SAMPLE_IDS) -> list[int]:
    """Ids of the most recent failed conversations in the group and window. Those with a
    transcript come first (variant generation shows transcripts, not ids); without
    `with_transcripts` (the version logs none) that pass is skipped, since it would scan
    the whole window for nothing."""
    query = select(C.id).where(C.version_id == version_id, C.success.is_(False),
                               C.occurred_at > since, C.occurred_at <= until)
    if dimension == "segment":
        query = query.where(C.segment == value)
    elif dimension == "tag" and value is not None:
        query = query.where(C.tags.is_not(None), _has_tag(conn, value))
    # Newest first, in index order, so the scan stops after `limit` matches.
    newest = (C.occurred_at.desc(), C.id.desc())
    found: list[int] = []
    if with_transcripts:
        found = [int(i) for i in conn.scalars(
            query.where(C.transcript.is_not(None)).order_by(*newest).limit(limit))]
    if len(found) < limit:
        if found:
            query = query.where(C.id.not_in(found))
        found += [int(i) for i in conn.scalars(query.order_by(*newest)
                                               .limit(limit - len(found)))]
    return found


def sample_of(conn: Connection, version_id: int, bounds: Bounds, dimension: str | None,
              value: str | None, window: str, with_transcripts: bool = True) -> list[int]:
    since = bounds.since_7d if window == "7d" else bounds.since_24h
    return failing_ids(conn, version_id, since, bounds.until, dimension=dimension,
                       value=value, with_transcripts=with_transcripts)
