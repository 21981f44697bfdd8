"""How many conversations two subjects share, counted in the database (grouping decides
what the counts mean). Only the pairs of the few candidate subjects are counted, and only
rows the pairs can need are read.

Each conversation of the version in the last 7 days (the run's whole range) contributes a
membership row per candidate subject it belongs to: its segment, when that is a candidate,
and each candidate tag it lists (tags unnested as tags_sql describes, each once). The rows
are joined to themselves on the conversation, so the count per pair is the conversations in
both. A conversation has one segment, so two segments never pair. With a single candidate
tag only its pairs with the candidate segments count, so its rows are read in those
segments only; with two or more every conversation's tags are read (one pass over the
window's conversations, through the version and time index).

The pattern rollup cannot give these counts: it keeps a unit's conversations per segment
and per tag, not which conversation had both, and with heavy users an overlap of units
would join unrelated groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, and_, func, literal_column, or_, select, union_all
from sqlalchemy.engine import Connection

from models.conversations import Conversation as C
from optimizer.patterns import tags_sql
from optimizer.patterns.aggregate import Bounds
from optimizer.patterns.grouping import Pair, Subject


def co_occurrences(
    conn: Connection, version_id: int, bounds: Bounds, subjects: Sequence[Subject]
) -> dict[Pair, int]:
    """Per pair of `subjects` (segments and tags) with a conversation in common, how many
    conversations of the version in [since_7d, until) are in both."""
    segments = sorted({s.value for s in subjects if s.dimension == "segment" and s.value})
    tags = sorted({s.value for s in subjects if s.dimension == "tag" and s.value})
    if not tags or len(segments) + len(tags) < 2:
        return {}
    window = (
        C.version_id == version_id,
        C.occurred_at >= bounds.since_7d,
        C.occurred_at < bounds.until,
    )
    dialect = conn.dialect
    tagged, tag, conditions = tags_sql.tagged_conversations(
        dialect.name, dialect.server_version_info
    )
    tag_rows = (
        select(C.id.label("cid"), _text("tag"), tag.label("value"))
        .select_from(tagged)
        .where(*window, C.tags.is_not(None), *conditions, tag.in_(tags))
    )
    parts: list[Any] = [tag_rows]
    if segments:
        if len(tags) == 1:
            tag_rows = tag_rows.where(C.segment.in_(segments))
            parts = [tag_rows]
        parts.append(
            select(C.id.label("cid"), _text("segment"), C.segment.label("value")).where(
                *window, C.segment.in_(segments)
            )
        )
    members = union_all(*parts).cte("members")
    a, b = members.alias("a"), members.alias("b")
    first = or_(
        a.c.dimension < b.c.dimension,
        and_(a.c.dimension == b.c.dimension, a.c.value < b.c.value),
    )
    rows = conn.execute(
        select(a.c.dimension, a.c.value, b.c.dimension, b.c.value, func.count())
        .select_from(a.join(b, a.c.cid == b.c.cid))
        .where(first)
        .group_by(a.c.dimension, a.c.value, b.c.dimension, b.c.value)
    )
    return {
        frozenset((Subject(str(d1), str(v1)), Subject(str(d2), str(v2)))): int(n)
        for d1, v1, d2, v2, n in rows
    }


def _text(value: str) -> Any:
    # A constant of our own, written into the SQL: a bound parameter in a UNION leaves
    # PostgreSQL guessing its type.
    return literal_column(f"'{value}'", type_=String()).label("dimension")
