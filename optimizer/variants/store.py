"""Database side of variant generation: read what the meta-prompt needs, store candidates.

Functions take a Session and never commit; the caller owns the transaction, so storing a
batch is all or nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.experiments import LIVE_STATUSES, Experiment
from models.insights import PatternInsight
from models.llm_calls import LlmCall
from models.prompts import Prompt, PromptVersion
from optimizer import prompts
from optimizer.errors import Conflict, InvalidInput, PermanentJobError
from optimizer.variants.meta_prompt import (
    MAX_TRANSCRIPT_CHARS,
    MAX_TRANSCRIPTS,
    InsightFacts,
    TranscriptSample,
)
from optimizer.variants.validate import DroppedVariant, ValidVariant

log = logging.getLogger("prompt_worker.variants.store")

DEFAULT_INSIGHTS = 10
MAX_SAMPLE_IDS = 50  # sample conversation ids read from insights' evidence, at most


@dataclass(frozen=True)
class GenerationInputs:
    prompt_id: int
    prompt: str
    active_id: int
    active_version: int
    active_content: str
    insights: list[InsightFacts]
    transcripts: list[TranscriptSample]
    existing_hashes: dict[str, int]  # content hash -> version number


@dataclass(frozen=True)
class StoredVariant:
    version: int
    change_notes: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "change_notes": self.change_notes}


@dataclass(frozen=True)
class Lineage:
    parent_version: int
    source: str  # "llm" or "offline"
    model: str
    insight_ids: list[int]
    llm_call_id: int | None


# --- reading -----------------------------------------------------------------------------


def load_inputs(session: Session, name: str, insight_ids: list[int] | None) -> GenerationInputs:
    prompt = session.scalars(select(Prompt).where(Prompt.name == name)).one_or_none()
    if prompt is None:
        raise PermanentJobError(
            f"no prompt named {name!r}; create it first (POST /prompts or `prompt-worker "
            "prompts add NAME --file F`), then run variant_generation again"
        )
    versions = session.execute(
        select(
            PromptVersion.id,
            PromptVersion.version,
            PromptVersion.status,
            PromptVersion.content_hash,
        ).where(PromptVersion.prompt_id == prompt.id)
    ).all()
    active = next((row for row in versions if row.status == "active"), None)
    if active is None:
        raise PermanentJobError(
            f"prompt {name!r} has no active version to improve; activate one (POST "
            f"/prompts/{name}/rollback or `prompt-worker prompts rollback`), then retry"
        )
    content = session.scalars(
        select(PromptVersion.content).where(PromptVersion.id == active.id)
    ).one()
    insights = _insights(session, prompt.id, name, insight_ids)
    return GenerationInputs(
        prompt_id=prompt.id,
        prompt=name,
        active_id=active.id,
        active_version=active.version,
        active_content=content,
        insights=insights,
        transcripts=failing_transcripts(session, active.id, _sample_ids(insights)),
        existing_hashes={row.content_hash: row.version for row in versions},
    )


def _insights(
    session: Session, prompt_id: int, name: str, wanted: list[int] | None
) -> list[InsightFacts]:
    query = select(PatternInsight).where(PatternInsight.prompt_id == prompt_id)
    if wanted is None:
        query = (
            query.where(PatternInsight.is_actionable.is_(True))
            .order_by(PatternInsight.last_seen_at.desc(), PatternInsight.id.desc())
            .limit(DEFAULT_INSIGHTS)
        )
        return [_facts(row) for row in session.scalars(query)]
    rows = {row.id: row for row in session.scalars(query.where(PatternInsight.id.in_(wanted)))}
    missing = [i for i in wanted if i not in rows]
    if missing:
        raise PermanentJobError(
            f"insight_ids: {', '.join(map(str, missing))} are not insights of prompt "
            f"{name!r} (see table ai_pattern_insights); fix the list or leave insight_ids "
            "out to use the prompt's actionable insights"
        )
    return [_facts(rows[i]) for i in wanted]


def _facts(row: PatternInsight) -> InsightFacts:
    try:
        evidence = json.loads(row.evidence or "{}")
    except json.JSONDecodeError:
        evidence = {}
    return InsightFacts(
        id=row.id,
        kind=row.kind,
        title=row.title,
        detail=row.detail,
        evidence=evidence if isinstance(evidence, dict) else {},
    )


def _sample_ids(insights: Sequence[InsightFacts]) -> list[int]:
    ids: list[int] = []
    for insight in insights:
        sample = insight.evidence.get("sample_conversation_ids")
        if isinstance(sample, list):
            ids += [i for i in sample if isinstance(i, int) and not isinstance(i, bool)]
    return list(dict.fromkeys(ids))[:MAX_SAMPLE_IDS]


def failing_transcripts(
    session: Session, version_id: int, preferred: Sequence[int]
) -> list[TranscriptSample]:
    """Up to MAX_TRANSCRIPTS failed conversations of the version that have a transcript:
    the insights' samples first, then the most recent. Transcripts are cut in SQL so a huge
    one never travels whole."""
    c = Conversation
    columns = (
        c.id,
        c.segment,
        func.substr(c.transcript, 1, MAX_TRANSCRIPT_CHARS),
        func.length(c.transcript),
    )
    failing = (c.version_id == version_id, c.success.is_(False), c.transcript.is_not(None))
    rows = []
    if preferred:
        rows = list(
            session.execute(
                select(*columns)
                .where(*failing, c.id.in_(preferred))
                .order_by(c.occurred_at.desc(), c.id.desc())
                .limit(MAX_TRANSCRIPTS)
            )
        )
    if len(rows) < MAX_TRANSCRIPTS:
        taken = [row[0] for row in rows]
        query = select(*columns).where(*failing)
        if taken:
            query = query.where(c.id.not_in(taken))
        rows += session.execute(
            query.order_by(c.occurred_at.desc(), c.id.desc()).limit(MAX_TRANSCRIPTS - len(rows))
        )
    return [
        TranscriptSample(
            conversation_id=row[0], segment=row[1], text=row[2] or "", total_chars=int(row[3] or 0)
        )
        for row in rows
    ]


def live_experiment(session: Session, prompt_id: int) -> tuple[int, str] | None:
    row = session.execute(
        select(Experiment.id, Experiment.status).where(
            Experiment.prompt_id == prompt_id,
            Experiment.status.in_(LIVE_STATUSES),
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


@dataclass(frozen=True)
class EarlierAttempt:
    stored: list[StoredVariant]
    provider: str
    requested_model: str
    model: str
    insight_ids: list[int]


def earlier_attempt(session: Session, prompt_id: int, job_id: int) -> EarlierAttempt | None:
    """What an earlier attempt of this job already stored (found through the LLM call that
    produced it), so a retry after a crash does not pay for a second batch."""
    rows = session.execute(
        select(
            PromptVersion.version,
            PromptVersion.change_notes,
            PromptVersion.insight_ids,
            LlmCall.provider,
            LlmCall.requested_model,
            LlmCall.model,
        )
        .join(LlmCall, LlmCall.id == PromptVersion.llm_call_id)
        .where(PromptVersion.prompt_id == prompt_id, LlmCall.job_id == job_id)
        .order_by(PromptVersion.version)
    ).all()
    if not rows:
        return None
    first = rows[0]
    return EarlierAttempt(
        stored=[StoredVariant(row.version, row.change_notes) for row in rows],
        provider=first.provider,
        requested_model=first.requested_model,
        model=first.model,
        insight_ids=list(prompts.decode_insight_ids(first.insight_ids)),
    )


# --- writing -----------------------------------------------------------------------------


def store_candidates(
    session: Session,
    name: str,
    variants: Sequence[ValidVariant],
    lineage: Lineage,
    *,
    now: datetime,
) -> tuple[list[StoredVariant], list[DroppedVariant]]:
    """Add each variant as the next `candidate` version. One that has become a duplicate
    since validation (another writer added the same text) is dropped, not fatal: the check
    and the insert happen under the prompt's lock inside `add_version`."""
    stored: list[StoredVariant] = []
    dropped: list[DroppedVariant] = []
    for variant in variants:
        try:
            view = prompts.add_version(
                session,
                name,
                variant.content,
                change_notes=variant.change_notes,
                parent_version=lineage.parent_version,
                source=lineage.source,
                model=lineage.model,
                insight_ids=lineage.insight_ids,
                llm_call_id=lineage.llm_call_id,
                now=now,
            )
        except (Conflict, InvalidInput) as exc:
            # Raised before anything is added, so the transaction stays usable.
            dropped.append(DroppedVariant(variant.index, str(exc)))
            continue
        stored.append(StoredVariant(view.number, view.change_notes))
    return stored, dropped
