"""Prompts, their versions, and the record of every change of the active version."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ID, NOW, Base, UtcDateTime

VERSION_STATUSES = ("candidate", "testing", "active", "retired", "rejected")


PROMOTION_MODES = ("auto", "approve")


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        CheckConstraint(
            "promotion_mode IS NULL OR promotion_mode IN ('auto', 'approve')",
            name="promotion_mode",
        ),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # NULL follows the PROMOTION_MODE setting; 'approve' makes a winner wait for a person.
    promotion_mode: Mapped[str | None] = mapped_column(String(16))
    # Extra criteria the replay judge applies to this prompt's candidates (optional).
    judge_rubric: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)


class PromptVersion(Base):
    __tablename__ = "ai_prompt_versions"
    __table_args__ = (
        UniqueConstraint("prompt_id", "version", name="uq_ai_prompt_versions_number"),
        UniqueConstraint("prompt_id", "content_hash", name="uq_ai_prompt_versions_content"),
        CheckConstraint(
            "status IN (" + ", ".join(repr(s) for s in VERSION_STATUSES) + ")", name="status"
        ),
        # At most one active version per prompt, enforced by the database.
        Index(
            "uq_ai_prompt_versions_one_active",
            "prompt_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'candidate'"))
    # Why the version has its status, when something decided it (a candidate rejected by
    # replay carries its win rates here).
    status_reason: Mapped[str | None] = mapped_column(Text)
    change_notes: Mapped[str | None] = mapped_column(Text)
    parent_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_prompt_versions.id", ondelete="SET NULL")
    )
    # manual, llm, offline, rollback: where the text came from.
    source: Mapped[str] = mapped_column(String(32), server_default=text("'manual'"))
    model: Mapped[str | None] = mapped_column(String(100))
    insight_ids: Mapped[str | None] = mapped_column(Text)  # JSON list of insight ids
    llm_call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)


class PromptActivation(Base):
    """One row per change of a prompt's active version: who or what, when, why."""

    __tablename__ = "prompt_activations"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    from_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_prompt_versions.id", ondelete="SET NULL")
    )
    to_version_id: Mapped[int] = mapped_column(
        ForeignKey("ai_prompt_versions.id", ondelete="CASCADE")
    )
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
