"""The job queue table. Its columns are public: admins write SQL against them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ID, NOW, Base, UtcDateTime

JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
FINISHED_STATUSES = ("completed", "failed", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class OptimizationJob(Base):
    __tablename__ = "optimization_jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        Index("ix_optimization_jobs_claim", "status", "run_after", "priority"),
        Index("ix_optimization_jobs_finished", "status", "finished_at"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    # Which types exist is the code's business (optimizer.jobs.registry): no constraint, so
    # a new type needs no migration; the worker fails a row of an unknown type at once.
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Text rather than JSON: a row written by hand may hold anything, and the worker
    # must be able to load it and fail that one job with a clear message.
    payload: Mapped[str] = mapped_column(Text, server_default=text("'{}'"))
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    run_after: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
    locked_by: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancel_requested: Mapped[bool] = mapped_column(server_default=text("false"))
    progress: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    current_step: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
