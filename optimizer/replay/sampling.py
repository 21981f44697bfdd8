"""Which logged conversations a candidate is replayed on.

Only conversations of the active version (the control) are used:

- the failing sample: its conversations with success false (or, without `success`, a rating
  of at most 2) in the segments and tags the candidate's insights name (evidence
  "dimension"/"value", and those of each of a grouped insight's "facets"), the insights'
  own sample conversations first, then the most recent;
- the held-out sample: its successful conversations (or, without `success`, rated 4 or 5)
  outside those segments and tags, taken in turn from each segment (the most recent of every
  segment, then the second most recent of every segment, ...; among the newest
  HOLDOUT_POOL), so a candidate that fixes one segment by breaking another meets that other
  segment even when most traffic is elsewhere.

When no insight names a segment or tag (a regression, a theme, no insight at all), both
samples are drawn from the whole version. Conversations already evaluated for the pair come
first, so a retry resumes with the sample it started. A conversation without a usable user
turn (optimizer.conversation_turns) is skipped and reported with the reason; the scan stops
after MAX_SCAN_FACTOR times the sample size, so a version that logs no usable turns costs a
bounded read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, false, func, literal, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.conversations import Conversation as C
from optimizer.conversation_turns import Turn, Unusable, turns_of
from optimizer.patterns import tags_sql
from optimizer.variants.meta_prompt import InsightFacts

SAMPLES = ("failing", "holdout")
MAX_SAMPLE_IDS = 50
MAX_SCAN_FACTOR, MIN_SCAN = 10, 100
MAX_UNUSABLE_IDS_SHOWN = 10
# The held-out sample takes segments in turn among this many newest successful conversations
# outside the scope (and the ids already evaluated, wherever they are).
HOLDOUT_POOL = 5_000


@dataclass(frozen=True)
class Scope:
    """Where the candidate's insights say the active version does badly."""

    segments: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sample_ids: tuple[int, ...] = ()

    @property
    def whole_version(self) -> bool:
        return not self.segments and not self.tags

    def describe(self) -> str:
        if self.whole_version:
            return "the whole version (its insights name no segment or tag)"
        named = [f"segment {s!r}" for s in self.segments] + [f"tag {t!r}" for t in self.tags]
        return ", ".join(named)


def scope_of(insights: Sequence[InsightFacts]) -> Scope:
    segments: dict[str, None] = {}
    tags: dict[str, None] = {}
    ids: dict[int, None] = {}
    for insight in insights:
        evidence = insight.evidence
        facets = evidence.get("facets")
        subjects = [evidence, *(facets if isinstance(facets, list) else ())]
        for subject in subjects:
            if not isinstance(subject, dict):
                continue
            dimension, value = subject.get("dimension"), subject.get("value")
            if isinstance(value, str) and dimension == "segment":
                segments[value] = None
            elif isinstance(value, str) and dimension == "tag":
                tags[value] = None
        sample = evidence.get("sample_conversation_ids")
        if isinstance(sample, list):
            ids.update((i, None) for i in sample if isinstance(i, int) and not isinstance(i, bool))
    return Scope(tuple(segments), tuple(tags), tuple(ids)[:MAX_SAMPLE_IDS])


@dataclass(frozen=True)
class Sampled:
    id: int
    segment: str | None
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Sample:
    kind: str  # "failing" or "holdout"
    conversations: tuple[Sampled, ...]
    unusable: tuple[tuple[int, str], ...] = ()  # (conversation id, why), skipped on the way

    def unusable_summary(self) -> dict[str, Any]:
        return {
            "count": len(self.unusable),
            "reasons": dict(Counter(reason for _, reason in self.unusable)),
            "conversation_ids": [i for i, _ in self.unusable[:MAX_UNUSABLE_IDS_SHOWN]],
        }


def draw(
    session: Session,
    kind: str,
    *,
    version_id: int,
    scope: Scope,
    size: int,
    first: Collection[int] = (),
) -> Sample:
    """Up to `size` conversations of the version with usable turns for the sample `kind`;
    the ids in `first` (already evaluated) come first."""
    if kind not in SAMPLES:
        raise ValueError(f"kind must be one of {SAMPLES}; got {kind!r}")
    if size <= 0:
        return Sample(kind, ())
    conditions = [C.version_id == version_id, *_conditions(session, kind, scope)]
    query = select(C.id, C.segment, C.messages, C.transcript).where(*conditions)
    newest = (C.occurred_at.desc(), C.id.desc())
    if kind == "failing":
        return _scan(
            session, kind, query.order_by(_priority(first, scope.sample_ids), *newest), size
        )
    # Segments in turn, among the newest HOLDOUT_POOL: the window sorts that many narrow rows
    # (id, segment, time), never every conversation of the version with its transcript.
    pool = select(C.id, C.segment, C.occurred_at).where(*conditions)
    pool_rows = pool.order_by(*newest).limit(HOLDOUT_POOL).subquery()
    turns = select(
        pool_rows.c.id,
        func.row_number()
        .over(
            partition_by=pool_rows.c.segment,
            order_by=(pool_rows.c.occurred_at.desc(), pool_rows.c.id.desc()),
        )
        .label("turn"),
    ).subquery()
    in_pool = turns.c.id.is_not(None)
    query = (
        query.outerjoin(turns, turns.c.id == C.id)
        .where(or_(in_pool, C.id.in_(list(first))) if first else in_pool)
        .order_by(_priority(first, ()), func.coalesce(turns.c.turn, 0), *newest)
    )
    return _scan(session, kind, query, size)


# An application that logs only ratings has failures too: a conversation without `success`
# counts as failed at a rating of at most this, and as a success at least SUCCESS_RATING.
FAILED_RATING, SUCCESS_RATING = 2, 4


def _outcome(failing: bool) -> ColumnElement[bool]:
    rated = C.rating <= FAILED_RATING if failing else C.rating >= SUCCESS_RATING
    return or_(C.success.is_(not failing), and_(C.success.is_(None), rated))


def _conditions(session: Session, kind: str, scope: Scope) -> list[ColumnElement[bool]]:
    failing = kind == "failing"
    found: list[ColumnElement[bool]] = [_outcome(failing)]
    if scope.whole_version:
        return found
    inside = _inside(session, scope)
    if failing:
        found.append(or_(inside, C.id.in_(scope.sample_ids)) if scope.sample_ids else inside)
    else:
        # NULL segments and tags are outside: coalesce keeps NOT from turning them away.
        found.append(~func.coalesce(inside, false()))
    return found


def _inside(session: Session, scope: Scope) -> ColumnElement[bool]:
    dialect = session.get_bind().dialect
    conditions: list[ColumnElement[bool]] = []
    if scope.segments:
        conditions.append(C.segment.in_(scope.segments))
    for tag in scope.tags:
        has = tags_sql.has_tag(dialect.name, dialect.server_version_info, tag)
        conditions.append(and_(C.tags.is_not(None), has))
    return or_(*conditions)


def _priority(first: Collection[int], preferred: Sequence[int]) -> Any:
    whens = []
    if first:
        whens.append((C.id.in_(list(first)), literal(0)))
    if preferred:
        whens.append((C.id.in_(list(preferred)), literal(1)))
    return case(*whens, else_=literal(2)) if whens else literal(2)


def _scan(session: Session, kind: str, query: Any, size: int) -> Sample:
    page, limit = max(2 * size, 20), max(MAX_SCAN_FACTOR * size, MIN_SCAN)
    usable: list[Sampled] = []
    unusable: list[tuple[int, str]] = []
    offset = 0
    while len(usable) < size and offset < limit:
        wanted = min(page, limit - offset)
        rows = session.execute(query.offset(offset).limit(wanted)).all()
        for row in rows:
            if len(usable) == size:
                break
            turns = turns_of(row.messages, row.transcript)
            if isinstance(turns, Unusable):
                unusable.append((int(row.id), turns.reason))
            else:
                usable.append(Sampled(int(row.id), row.segment, tuple(turns)))
        if len(rows) < wanted:
            break
        offset += wanted
    return Sample(kind, tuple(usable), tuple(unusable))
