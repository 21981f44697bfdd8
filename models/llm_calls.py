"""One row per call to the LLM: what it cost and how it went."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ID, NOW, Base, UtcDateTime


class LlmCall(Base):
    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    # Finished jobs are pruned; their calls stay for spend accounting.
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("optimization_jobs.id", ondelete="SET NULL"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(64))
    requested_model: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(32), server_default=text("'anthropic'"))
    input_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cache_creation_input_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cache_read_input_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Float, server_default=text("0"))
    latency_ms: Mapped[float] = mapped_column(Float, server_default=text("0"))
    outcome: Mapped[str] = mapped_column(String(32))  # ok, overloaded, rate_limited, error
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW, index=True)
