"""Replay evaluations: a candidate and the active version answering the same logged
conversation, and a pairwise judge's verdict in both orders."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ID, NOW, Base, UtcDateTime

SAMPLES = ("failing", "holdout")
VERDICTS = ("candidate", "control", "tie")


class CandidateEvaluation(Base):
    __tablename__ = "candidate_evaluations"
    __table_args__ = (
        # One evaluation per conversation for a (candidate, control) pair: a retry of the
        # replay job finds the ones done and goes on from there.
        UniqueConstraint("candidate_version_id", "control_version_id", "conversation_id"),
        CheckConstraint("sample IN ('failing', 'holdout')", name="sample"),
        CheckConstraint(
            "verdict_candidate_first IN ('candidate', 'control', 'tie') AND "
            "verdict_control_first IN ('candidate', 'control', 'tie')",
            name="verdicts",
        ),
        CheckConstraint("score >= 0 AND score <= 1", name="score"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    candidate_version_id: Mapped[int] = mapped_column(
        ForeignKey("ai_prompt_versions.id", ondelete="CASCADE")
    )
    control_version_id: Mapped[int] = mapped_column(
        ForeignKey("ai_prompt_versions.id", ondelete="CASCADE")
    )
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("optimization_jobs.id", ondelete="SET NULL")
    )
    # Conversations are pruned by retention; the evaluation stays with its answers.
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    sample: Mapped[str] = mapped_column(String(16))  # failing, holdout
    segment: Mapped[str | None] = mapped_column(String(200))
    # The replayed assistant turns under each prompt (JSON list of strings).
    control_answer: Mapped[str] = mapped_column(Text)
    candidate_answer: Mapped[str] = mapped_column(Text)
    # The judge's verdict with the candidate shown first, then with the control first.
    verdict_candidate_first: Mapped[str] = mapped_column(String(16))
    verdict_control_first: Mapped[str] = mapped_column(String(16))
    reason_candidate_first: Mapped[str | None] = mapped_column(Text)
    reason_control_first: Mapped[str | None] = mapped_column(Text)
    # 1: the candidate better in both orders; 0: the control; 0.5 for anything else.
    score: Mapped[float] = mapped_column(Float)
    input_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Float, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
