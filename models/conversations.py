"""Conversations the host application logged, one row each."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ID, NOW, Base, UtcDateTime


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating"),
        Index("ix_conversations_version_time", "version_id", "occurred_at"),
        Index("ix_conversations_prompt_time", "prompt_id", "occurred_at"),
        # The rollups read the rows stored since their last pass in commit order
        # (optimizer.watermark): on PostgreSQL by commit_order, on SQLite by row id; per
        # experiment (optimizer.experiments.rollup) and all at once (optimizer.patterns).
        Index("ix_conversations_experiment_commit", "experiment_id", "commit_order").ddl_if(
            dialect="postgresql"
        ),
        Index("ix_conversations_commit_order", "commit_order").ddl_if(dialect="postgresql"),
        Index("ix_conversations_experiment_id", "experiment_id", "id").ddl_if(dialect="sqlite"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("ai_prompt_versions.id", ondelete="CASCADE"))
    experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_ab_experiments.id", ondelete="SET NULL")
    )
    arm_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_ab_experiment_arms.id", ondelete="SET NULL")
    )
    # The arm whose slice the unit falls in; differs from arm_id (the arm served) only for
    # units of a stopped arm, which get control. NULL on rows stored before revision 0002.
    assigned_arm_id: Mapped[int | None] = mapped_column(
        ID, ForeignKey("ai_ab_experiment_arms.id", ondelete="SET NULL")
    )
    unit_id: Mapped[str] = mapped_column(String(200))
    # The metrics' columns (success, rating, latency_ms, cost_usd): each metric is defined in
    # optimizer.stats.metrics, and its column's type follows its kind (bool, whole, float).
    success: Mapped[bool | None] = mapped_column(Boolean)
    rating: Mapped[int | None] = mapped_column(SmallInteger)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    segment: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[str | None] = mapped_column(Text)  # JSON list of strings
    transcript: Mapped[str | None] = mapped_column(Text)
    # The structured transcript (JSON list of {"role", "content"}), when the application sent
    # one; replay reads the user turns from it. NULL on rows stored before revision 0010.
    messages: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
    ingested_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
    # PostgreSQL: the id of the transaction that stored the row (pg_current_xact_id(), set by
    # the database). Transactions commit out of order, so row ids are no watermark there; a
    # transaction id below every running one's belongs to a finished transaction. NULL on
    # SQLite (one writer at a time: row ids are in commit order) and on rows stored before
    # revision 0006.
    commit_order: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())
