"""A/B experiments, their arms, and one analysis row per check."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
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

EXPERIMENT_STATUSES = ("running", "paused", "awaiting_approval", "completed", "stopped")
# Live: traffic is split between the arms. At most one live experiment per prompt.
LIVE_STATUSES = ("running", "paused", "awaiting_approval")
# Traffic is split between the arms: running, or a winner waiting for a person's approval
# (the split stays until the person decides). Paused: everyone gets the control.
SPLIT_STATUSES = ("running", "awaiting_approval")
ARM_STATUSES = ("active", "stopped")


class Experiment(Base):
    __tablename__ = "ai_ab_experiments"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(repr(s) for s in EXPERIMENT_STATUSES) + ")", name="status"
        ),
        # One live experiment per prompt.
        Index(
            "uq_ai_ab_experiments_one_live",
            "prompt_id",
            unique=True,
            sqlite_where=text("status IN ('running', 'paused', 'awaiting_approval')"),
            postgresql_where=text("status IN ('running', 'paused', 'awaiting_approval')"),
        ),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32), server_default=text("'running'"))
    primary_metric: Mapped[str] = mapped_column(String(64), server_default=text("'success'"))
    guardrails: Mapped[str] = mapped_column(Text, server_default=text("'[]'"))  # JSON
    confidence: Mapped[float] = mapped_column(Float, server_default=text("0.9"))
    min_conversations_per_arm: Mapped[int] = mapped_column(Integer, server_default=text("100"))
    min_runtime_hours: Mapped[float] = mapped_column(Float, server_default=text("24"))
    max_runtime_hours: Mapped[float] = mapped_column(Float, server_default=text("336"))
    winner_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("ai_prompt_versions.id", ondelete="SET NULL")
    )
    decision_reason: Mapped[str | None] = mapped_column(Text)
    # JSON {metric: cap}: heavy-tailed metrics are capped at these values in every check.
    metric_caps: Mapped[str | None] = mapped_column(Text)
    # Where the rollup of this experiment's conversations stands (experiment_unit_sums):
    # every conversation below it is counted there. NULL: nothing rolled up yet.
    rolled_up_to: Mapped[int | None] = mapped_column(BigInteger)
    # The caps (JSON) the rollup's sums were capped at: other caps in force start it afresh.
    rollup_caps: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200), server_default=text("'system'"))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ExperimentArm(Base):
    __tablename__ = "ai_ab_experiment_arms"
    __table_args__ = (
        UniqueConstraint("experiment_id", "version_id", name="uq_ai_ab_experiment_arms_version"),
        CheckConstraint(
            "status IN (" + ", ".join(repr(s) for s in ARM_STATUSES) + ")", name="status"
        ),
        CheckConstraint("weight > 0", name="weight"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("ai_ab_experiments.id", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[int] = mapped_column(ForeignKey("ai_prompt_versions.id", ondelete="CASCADE"))
    is_control: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    weight: Mapped[float] = mapped_column(Float, server_default=text("1"))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'active'"))
    stopped_reason: Mapped[str | None] = mapped_column(Text)
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ExperimentAnalysis(Base):
    """One row per monitoring check: the statistics and the decision taken."""

    __tablename__ = "ai_ab_experiment_analyses"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("ai_ab_experiments.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("optimization_jobs.id", ondelete="SET NULL")
    )
    decision: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    srm_detected: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    statistics: Mapped[str] = mapped_column(Text)  # JSON: per arm and metric
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
