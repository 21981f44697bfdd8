"""Database side of replay: the prompt, its active version and the candidates; the
evaluations done so far; one evaluation row per judged conversation; rejected versions.

Functions take a Session and never commit, except `save_evaluation`, which writes each row in
its own transaction as soon as the conversation is judged: a job deferred by the LLM call
limit (or stopped by a crash) keeps what it paid for, and its retry goes on from there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.evaluations import CandidateEvaluation as E
from models.insights import PatternInsight
from models.prompts import Prompt, PromptVersion
from optimizer.errors import PermanentJobError
from optimizer.prompts import decode_insight_ids
from optimizer.variants.meta_prompt import InsightFacts
from optimizer.variants.store import insight_facts

REPLAYABLE = "candidate"


@dataclass(frozen=True)
class VersionFacts:
    id: int
    version: int
    content: str
    insight_ids: tuple[int, ...]


@dataclass(frozen=True)
class ReplayInputs:
    prompt_id: int
    prompt: str
    judge_rubric: str | None
    control: VersionFacts
    candidates: list[VersionFacts]  # in the order asked for
    skipped: list[tuple[int, str]]  # (version number, why it is not replayed)
    insights: dict[int, InsightFacts]


def load_inputs(session: Session, name: str, numbers: Sequence[int]) -> ReplayInputs:
    prompt = session.scalars(select(Prompt).where(Prompt.name == name)).one_or_none()
    if prompt is None:
        raise PermanentJobError(f"no prompt named {name!r}; nothing to replay")
    rows = {
        row.version: row
        for row in session.scalars(
            select(PromptVersion).where(
                PromptVersion.prompt_id == prompt.id,
                (PromptVersion.version.in_(list(numbers))) | (PromptVersion.status == "active"),
            )
        )
    }
    control = next((row for row in rows.values() if row.status == "active"), None)
    if control is None:
        raise PermanentJobError(
            f"prompt {name!r} has no active version to replay against; activate one, then retry"
        )
    missing = [n for n in numbers if n not in rows]
    if missing:
        raise PermanentJobError(
            f"versions: {', '.join(map(str, missing))} are not versions of prompt {name!r}"
        )
    candidates = [_facts(rows[n]) for n in numbers if rows[n].status == REPLAYABLE]
    skipped = [(n, _why_not(rows[n])) for n in numbers if rows[n].status != REPLAYABLE]
    wanted = {i for c in candidates for i in c.insight_ids}
    return ReplayInputs(
        prompt_id=prompt.id,
        prompt=name,
        judge_rubric=prompt.judge_rubric,
        control=_facts(control),
        candidates=candidates,
        skipped=skipped,
        insights=_insights(session, prompt.id, wanted),
    )


def _facts(row: PromptVersion) -> VersionFacts:
    return VersionFacts(row.id, row.version, row.content, decode_insight_ids(row.insight_ids))


def _why_not(row: PromptVersion) -> str:
    why = f"version {row.version} is {row.status}, not a candidate"
    return f"{why} ({row.status_reason})" if row.status_reason else why


def _insights(session: Session, prompt_id: int, ids: Collection[int]) -> dict[int, InsightFacts]:
    """The insights by id; one deleted since the candidate was written is left out."""
    if not ids:
        return {}
    rows = session.scalars(
        select(PatternInsight).where(
            PatternInsight.prompt_id == prompt_id, PatternInsight.id.in_(list(ids))
        )
    )
    return {row.id: insight_facts(row) for row in rows}


@dataclass(frozen=True)
class Done:
    """A conversation already evaluated for the pair."""

    sample: str
    score: float


def evaluated(session: Session, candidate_id: int, control_id: int) -> dict[int, Done]:
    rows = session.execute(
        select(E.conversation_id, E.sample, E.score).where(
            E.candidate_version_id == candidate_id,
            E.control_version_id == control_id,
            E.conversation_id.is_not(None),
        )
    )
    return {row[0]: Done(row[1], float(row[2])) for row in rows if row[0] is not None}


def control_answers(
    session: Session, control_id: int, conversation_ids: Collection[int]
) -> dict[int, list[str]]:
    """The control's replayed answers stored with earlier evaluations of these
    conversations (for any candidate): the control is replayed once per conversation."""
    if not conversation_ids:
        return {}
    rows = session.execute(
        select(E.conversation_id, E.control_answer)
        .where(E.control_version_id == control_id, E.conversation_id.in_(list(conversation_ids)))
        .order_by(E.id)
    )
    found: dict[int, list[str]] = {}
    for conversation_id, raw in rows:
        answers = _answers(raw)
        if conversation_id is not None and answers is not None:
            found.setdefault(conversation_id, answers)
    return found


def _answers(raw: str) -> list[str] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(a, str) for a in value):
        return value
    return None


@dataclass(frozen=True)
class EvaluationRecord:
    prompt_id: int
    candidate_version_id: int
    control_version_id: int
    job_id: int | None
    conversation_id: int
    sample: str
    segment: str | None
    control_answers: list[str]
    candidate_answers: list[str]
    verdict_candidate_first: str
    verdict_control_first: str
    reason_candidate_first: str | None
    reason_control_first: str | None
    score: float
    input_tokens: int
    output_tokens: int
    cost_usd: float


def save_evaluation(sessions: sessionmaker[Session], record: EvaluationRecord) -> bool:
    """Writes the row in its own transaction. False when the pair already has one for the
    conversation (another job evaluated it meanwhile): that one stands."""
    row = E(
        prompt_id=record.prompt_id,
        candidate_version_id=record.candidate_version_id,
        control_version_id=record.control_version_id,
        job_id=record.job_id,
        conversation_id=record.conversation_id,
        sample=record.sample,
        segment=record.segment[:200] if record.segment else None,
        control_answer=json.dumps(record.control_answers, ensure_ascii=False),
        candidate_answer=json.dumps(record.candidate_answers, ensure_ascii=False),
        verdict_candidate_first=record.verdict_candidate_first,
        verdict_control_first=record.verdict_control_first,
        reason_candidate_first=record.reason_candidate_first,
        reason_control_first=record.reason_control_first,
        score=record.score,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cost_usd=record.cost_usd if math.isfinite(record.cost_usd) else 0.0,
    )
    try:
        with sessions.begin() as session:
            session.add(row)
    except IntegrityError:
        return False
    return True


def mark_rejected(session: Session, version_id: int, reason: str) -> bool:
    """Only a version still a candidate is marked (a person may have started it meanwhile)."""
    result = session.execute(
        update(PromptVersion)
        .where(PromptVersion.id == version_id, PromptVersion.status == REPLAYABLE)
        .values(status="rejected", status_reason=reason)
    )
    return bool(getattr(result, "rowcount", 0))
