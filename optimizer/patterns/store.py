"""Database side of pattern analysis: which prompts to analyse, insert-or-update of
insights, and what chaining needs to know. Functions take a Session and never commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, exists, select, update
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.experiments import LIVE_STATUSES, Experiment
from models.insights import PatternInsight
from models.jobs import OptimizationJob
from models.prompts import Prompt, PromptVersion
from optimizer.db import upsert_insert
from optimizer.errors import PermanentJobError
from optimizer.patterns import fingerprints
from optimizer.patterns.describe import InsightDraft, facets_of
from optimizer.patterns.grouping import Subject
from optimizer.prompts import lock_prompt
from optimizer.stats import finite_only

INSIGHTS: Table = PatternInsight.__table__  # type: ignore[assignment]
log = logging.getLogger("prompt_worker.patterns.store")


@dataclass(frozen=True)
class Target:
    """A prompt and its active version: what one analysis looks at."""

    prompt_id: int
    name: str
    version_id: int
    version: int


def _targets() -> Any:
    return select(Prompt.id, Prompt.name, PromptVersion.id, PromptVersion.version).join(
        PromptVersion, (PromptVersion.prompt_id == Prompt.id) & (PromptVersion.status == "active")
    )


def target_named(session: Session, name: str) -> Target:
    if session.scalar(select(Prompt.id).where(Prompt.name == name)) is None:
        raise PermanentJobError(
            f"payload field 'prompt': no prompt named {name!r}; create it "
            "(POST /prompts) or fix the name"
        )
    row = session.execute(_targets().where(Prompt.name == name)).first()
    if row is None:
        raise PermanentJobError(
            f"prompt {name!r} has no active version to analyse; activate "
            f"one (POST /prompts/{name}/rollback), then retry"
        )
    return Target(*row)


def recent_targets(session: Session, since: datetime, until: datetime) -> list[Target]:
    """Prompts whose active version has conversations in [since, until)."""
    c = Conversation
    recent = exists().where(
        c.version_id == PromptVersion.id, c.occurred_at >= since, c.occurred_at < until
    )
    return [Target(*row) for row in session.execute(_targets().where(recent).order_by(Prompt.name))]


def llm_themes_refreshed_at(session: Session, target: Target) -> datetime | None:
    """When the LLM last named themes for this version, if it did."""
    row = session.execute(
        select(PatternInsight.last_seen_at, PatternInsight.version_id).where(
            PatternInsight.prompt_id == target.prompt_id,
            PatternInsight.fingerprint == fingerprints.THEME_LLM,
        )
    ).first()
    return row[0] if row is not None and row[1] == target.version_id else None


# --- writing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    id: int
    fingerprint: str
    created: bool
    is_actionable: bool
    # Actionable now and not before: for this version, neither the row nor any stored row
    # about its main subject was actionable (a new problem, a fixed one come back, or one
    # established for an earlier active version).
    newly_actionable: bool
    effect_size: float | None = None


def evidence_json(evidence: dict[str, Any], fingerprint: str) -> str:
    """Strict JSON of the evidence. A value that is not finite is stored as null, listed
    under `not_finite` (the reason it is null) and logged as the bug it is: nothing upstream
    should produce one, so this is the last guard, and one slip costs a null, not the run."""
    bad: list[str] = []
    clean = finite_only(evidence, "", bad)
    if bad:
        log.error(
            "non-finite evidence replaced by null",
            extra={"fingerprint": fingerprint, "fields": bad[:20]},
        )
        clean["not_finite"] = {
            "fields": bad[:100],
            "reason": "could not be computed (not a finite number)",
        }
    return json.dumps(clean, allow_nan=False, separators=(",", ":"))


def _upsert(session: Session, values: dict[str, Any]) -> int:
    stmt = upsert_insert(session.get_bind().dialect.name, INSIGHTS).values(**values)
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["prompt_id", "fingerprint"],
        set_={
            "version_id": new.version_id,
            "kind": new.kind,
            "title": new.title,
            "detail": new.detail,
            "evidence": new.evidence,
            "is_actionable": new.is_actionable,
            "effect_size": new.effect_size,
            "last_seen_at": new.last_seen_at,
            "occurrences": INSIGHTS.c.occurrences + 1,
        },
    ).returning(INSIGHTS.c.id)
    return int(session.execute(stmt).scalar_one())


@dataclass(frozen=True)
class _Known:
    """A stored segment or regression row of the prompt: a group, or a single finding from
    before grouping."""

    fingerprint: str
    subjects: frozenset[Subject]
    last_seen_at: datetime
    actionable_on: int | None  # the version it is actionable for; None when it is not


def _subject(dimension: Any, value: Any) -> Subject | None:
    if dimension is None and value is None:
        return Subject(None, None)  # the regression
    if isinstance(dimension, str) and isinstance(value, str):
        return Subject(dimension, value)
    return None


def _subjects(raw: str | None) -> frozenset[Subject]:
    """The subjects stored evidence is about: its facets' and its top level's (a row from
    before grouping has only the latter). Whatever is unreadable counts for nothing."""
    try:
        evidence = json.loads(raw or "{}")
    except ValueError:
        return frozenset()
    if not isinstance(evidence, dict):
        return frozenset()
    found = [_subject(f.get("dimension"), f.get("value")) for f in facets_of(evidence)]
    if evidence.get("kind") == "regression":
        found.append(Subject(None, None))
    elif evidence.get("kind") == "segment" and evidence.get("dimension") is not None:
        found.append(_subject(evidence.get("dimension"), evidence.get("value")))
    return frozenset(s for s in found if s is not None)


def _known(session: Session, target: Target, now: datetime) -> list[_Known]:
    """The prompt's segment and regression rows seen within CONTINUITY_DAYS, and any still
    actionable (a row is read with its evidence: its subjects are in it)."""
    since = now - timedelta(days=fingerprints.CONTINUITY_DAYS)
    i = PatternInsight
    rows = session.execute(
        select(i.fingerprint, i.evidence, i.last_seen_at, i.is_actionable, i.version_id).where(
            i.prompt_id == target.prompt_id,
            i.kind.in_(("segment", "regression")),
            (i.last_seen_at >= since) | i.is_actionable.is_(True),
        )
    )
    return [
        _Known(fp, _subjects(raw), seen, version if actionable else None)
        for fp, raw, seen, actionable, version in rows
    ]


def _named(
    drafts: Sequence[InsightDraft], known: Sequence[_Known], now: datetime
) -> list[InsightDraft]:
    """The group drafts under the names that keep each problem's row (fingerprints.
    name_groups); other drafts as they are."""
    groups = [d for d in drafts if d.subjects]
    stored = [
        fingerprints.StoredGroup(k.fingerprint, k.subjects, k.last_seen_at)
        for k in known
        if k.fingerprint.startswith(fingerprints.GROUP_PREFIX)
        and k.last_seen_at >= now - timedelta(days=fingerprints.CONTINUITY_DAYS)
    ]
    names = iter(fingerprints.name_groups([d.subjects for d in groups], stored))
    return [replace(d, fingerprint=next(names)) if d.subjects else d for d in drafts]


def save_insights(
    session: Session, target: Target, drafts: Sequence[InsightDraft], *, now: datetime
) -> list[Saved]:
    """Insert each draft, or update the row with its fingerprint: last_seen_at, occurrences
    + 1, evidence, actionability. A group takes over the name of the stored group it
    continues. The prompt row is locked first (PostgreSQL; SQLite holds the write lock
    already), so two runs for one prompt cannot both see a finding as new."""
    lock_prompt(session, target.prompt_id)
    known = _known(session, target, now)
    drafts = _named(drafts, known, now)
    _retire_unconfirmed(session, target, [d.fingerprint for d in drafts if d.is_actionable])
    if not drafts:
        return []
    before = {
        row.fingerprint: row
        for row in session.execute(
            select(
                PatternInsight.fingerprint, PatternInsight.is_actionable, PatternInsight.version_id
            ).where(
                PatternInsight.prompt_id == target.prompt_id,
                PatternInsight.fingerprint.in_([d.fingerprint for d in drafts]),
            )
        )
    }
    saved = []
    for draft in drafts:
        insight_id = _upsert(
            session,
            {
                "prompt_id": target.prompt_id,
                "version_id": target.version_id,
                "kind": draft.kind,
                "fingerprint": draft.fingerprint,
                "title": draft.title,
                "detail": draft.detail,
                "evidence": evidence_json(draft.evidence, draft.fingerprint),
                "is_actionable": draft.is_actionable,
                "effect_size": finite_only(draft.effect_size),
                "occurrences": 1,
                "first_seen_at": now,
                "last_seen_at": now,
            },
        )
        old = before.get(draft.fingerprint)
        was = old is not None and old.is_actionable and old.version_id == target.version_id
        # The same problem under another row (a single finding from before grouping, or
        # a group before a split) was already acted on for this version: its main subject
        # was in an actionable row.
        was = was or any(
            k.actionable_on == target.version_id and draft.subjects[0] in k.subjects
            for k in known
            if draft.subjects
        )
        saved.append(
            Saved(
                insight_id,
                draft.fingerprint,
                old is None,
                draft.is_actionable,
                draft.is_actionable and not was,
                finite_only(draft.effect_size),
            )
        )
    session.flush()
    return saved


def _retire_unconfirmed(session: Session, target: Target, confirmed: list[str]) -> None:
    """`is_actionable` says what the latest analysis holds: a row this run did not confirm
    (fixed by a new version, gone from the data, a group that merged into another, or a
    single finding stored before grouping, now a facet of a group) stops being actionable,
    so variant generation and full_cycle do not act on it. Its row and history stay."""
    session.execute(
        update(PatternInsight)
        .where(
            PatternInsight.prompt_id == target.prompt_id,
            PatternInsight.is_actionable.is_(True),
            PatternInsight.fingerprint.not_in(confirmed),
        )
        .values(is_actionable=False)
        .execution_options(synchronize_session=False)
    )


# --- chaining ----------------------------------------------------------------------------


def live_experiment(session: Session, prompt_id: int) -> tuple[int, str] | None:
    row = session.execute(
        select(Experiment.id, Experiment.status)
        .where(Experiment.prompt_id == prompt_id, Experiment.status.in_(LIVE_STATUSES))
        .order_by(Experiment.id)
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def queued_generation(session: Session, name: str) -> int | None:
    """A pending or running variant_generation job for the prompt, whoever queued it. The
    payload is read in Python: jobs inserted by hand need not use our JSON layout."""
    rows = session.execute(
        select(OptimizationJob.id, OptimizationJob.payload)
        .where(
            OptimizationJob.type == "variant_generation",
            OptimizationJob.status.in_(("pending", "running")),
        )
        .order_by(OptimizationJob.id)
    )
    for job_id, payload in rows:
        try:
            decoded = json.loads(payload or "{}")
        except ValueError:
            continue
        if isinstance(decoded, dict) and decoded.get("prompt") == name:
            return int(job_id)
    return None
