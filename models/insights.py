"""Findings of pattern analysis: where the active prompt does badly, with evidence."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
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


class PatternInsight(Base):
    __tablename__ = "ai_pattern_insights"
    __table_args__ = (
        # The same finding seen again updates its row instead of adding one.
        UniqueConstraint("prompt_id", "fingerprint", name="uq_ai_pattern_insights_fingerprint"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    version_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_prompt_versions.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(32))  # segment, regression, theme
    fingerprint: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(500))
    detail: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text, server_default=text("'{}'"))  # JSON
    is_actionable: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    effect_size: Mapped[float | None] = mapped_column(Float)
    occurrences: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
