"""Database side of variant generation: read what the meta-prompt needs, store candidates.

Functions take a Session and never commit; the caller owns the transaction, so storing a
batch is all or nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from models.conversations import Conversation
from models.experiments import LIVE_STATUSES, Experiment, ExperimentArm
from models.insights import PatternInsight
from models.llm_calls import LlmCall
from models.prompts import Prompt, PromptVersion
from optimizer import prompts
from optimizer.errors import Conflict, InvalidInput, PermanentJobError
from optimizer.experiments.store import latest_analyses
from optimizer.prompt_text import markup_problem
from optimizer.variants import history as past
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
    # Past candidates and what became of them, most informative and newest first, at most
    # history.MAX_ENTRIES.
    history: list[past.PastCandidate] = field(default_factory=list)


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
    problem = markup_problem(content)
    if problem is not None:
        # Stored before markers were checked, or edited by hand: which text is protected is
        # unclear, so no variant could be checked against it.
        raise PermanentJobError(
            f"active version {active.version} of prompt {name!r} has malformed "
            f"protected-section markers ({problem}); add a corrected version and activate "
            "it, then run variant_generation again"
        )
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
        history=candidate_history(session, prompt.id),
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
        return [insight_facts(row) for row in session.scalars(query)]
    rows = {row.id: row for row in session.scalars(query.where(PatternInsight.id.in_(wanted)))}
    missing = [i for i in wanted if i not in rows]
    if missing:
        raise PermanentJobError(
            f"insight_ids: {', '.join(map(str, missing))} are not insights of prompt "
            f"{name!r} (see table ai_pattern_insights); fix the list or leave insight_ids "
            "out to use the prompt's actionable insights"
        )
    return [insight_facts(rows[i]) for i in wanted]


def insight_facts(row: PatternInsight) -> InsightFacts:
    """The insight as generation and replay read it. Evidence that is not a JSON object (a
    row edited by hand: not JSON, an integer past Python's digit limit, nested too deep)
    counts as none: no segment, no samples."""
    try:
        evidence = json.loads(row.evidence or "{}")
    except (ValueError, RecursionError):
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


def candidate_history(session: Session, prompt_id: int) -> list[past.PastCandidate]:
    """What became of the prompt's past candidates (optimizer.variants.history), chosen
    among its newest history.SCAN_VERSIONS versions made from another: two queries however
    long the history (the versions with their latest experiment as a variant arm, then the
    last analysis of the experiments they won, for the lift)."""
    facts = _candidate_facts(session, prompt_id)
    winners = past.promoted_arms(facts)
    analyses = latest_analyses(session, list(winners)) if winners else {}
    entries = []
    for fact in facts:
        analysis = analyses.get(fact.experiment_id) if fact.won and fact.experiment_id else None
        lift = (
            past.lift_of(analysis.statistics, fact.arm_id)
            if analysis is not None and fact.arm_id is not None
            else None
        )
        entry = past.classify(fact, lift)
        if entry is not None:
            entries.append(entry)
    return past.ordered(entries)


def _candidate_facts(session: Session, prompt_id: int) -> list[past.CandidateFacts]:
    v, parent = PromptVersion, aliased(PromptVersion)
    arm, experiment = ExperimentArm, Experiment
    newest = (
        select(v.id)
        .where(v.prompt_id == prompt_id, v.parent_version_id.is_not(None))
        .order_by(v.version.desc())
        .limit(past.SCAN_VERSIONS)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            v.id,
            v.version,
            v.status,
            v.status_reason,
            v.change_notes,
            v.created_at,
            func.length(v.content).label("chars"),
            parent.version.label("parent_version"),
            arm.id.label("arm_id"),
            arm.status.label("arm_status"),
            arm.stopped_reason,
            arm.stopped_at,
            experiment.id.label("experiment_id"),
            experiment.status.label("experiment_status"),
            experiment.winner_version_id,
            experiment.decision_reason,
            experiment.started_at,
            experiment.ended_at,
        )
        .outerjoin(parent, parent.id == v.parent_version_id)
        .outerjoin(arm, and_(arm.version_id == v.id, arm.is_control.is_(False)))
        .outerjoin(experiment, experiment.id == arm.experiment_id)
        .where(v.id.in_(newest))
        .order_by(v.version, experiment.id)
    ).all()
    latest = {row.id: row for row in rows}  # a version's latest experiment comes last
    return [
        past.CandidateFacts(
            version=row.version,
            status=row.status,
            status_reason=row.status_reason,
            change_notes=row.change_notes,
            created_at=row.created_at,
            content_chars=int(row.chars or 0),
            parent_version=row.parent_version,
            experiment_id=row.experiment_id,
            experiment_status=row.experiment_status,
            experiment_live=row.experiment_status in LIVE_STATUSES,
            won=row.experiment_id is not None and row.winner_version_id == row.id,
            decision_reason=row.decision_reason,
            ended_at=row.ended_at,
            started_at=row.started_at,
            arm_id=row.arm_id,
            arm_stopped=row.arm_status == "stopped",
            stopped_reason=row.stopped_reason,
            stopped_at=row.stopped_at,
        )
        for row in latest.values()
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
