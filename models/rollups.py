"""Rollups: what the statistics need, kept as conversations arrive, so a check reads sums
instead of every conversation (see optimizer.experiments.rollup)."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ID, Base


class ExperimentUnitSums(Base):
    """Per (experiment, slice, unit): the unit's conversations in the slice, and over those
    served the slice's own arm ("own") their count, smallest segment and, per metric, the sum
    y of the (capped) values and their count m. One column pair per metric of
    optimizer.stats.metrics.REGISTRY (a test keeps the two in step)."""

    __tablename__ = "experiment_unit_sums"

    experiment_id: Mapped[int] = mapped_column(
        ID, ForeignKey("ai_ab_experiments.id", ondelete="CASCADE"), primary_key=True
    )
    slice_arm_id: Mapped[int] = mapped_column(
        ID, ForeignKey("ai_ab_experiment_arms.id", ondelete="CASCADE"), primary_key=True
    )
    unit_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    conversations: Mapped[int] = mapped_column(Integer, nullable=False)
    own_conversations: Mapped[int] = mapped_column(Integer, nullable=False)
    stratum: Mapped[str | None] = mapped_column(String(200))
    success_y: Mapped[float] = mapped_column(Float, nullable=False)
    success_m: Mapped[float] = mapped_column(Float, nullable=False)
    rating_y: Mapped[float] = mapped_column(Float, nullable=False)
    rating_m: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd_y: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd_m: Mapped[float] = mapped_column(Float, nullable=False)
    latency_ms_y: Mapped[float] = mapped_column(Float, nullable=False)
    latency_ms_m: Mapped[float] = mapped_column(Float, nullable=False)


class ExperimentStratumSums(Base):
    """Per (experiment, slice, unit segment): the sums over the units with own
    conversations that a check reads (optimizer.stats.ratio.RatioSums per metric: units
    reporting it, and the sums of y, m, y^2, m^2, y*m over units), kept in step with
    experiment_unit_sums by each rollup pass. `stratum_key` is the segment made a key
    ("-" for none, "=" + the segment otherwise), as a primary key column cannot be NULL."""

    __tablename__ = "experiment_stratum_sums"

    experiment_id: Mapped[int] = mapped_column(
        ID, ForeignKey("ai_ab_experiments.id", ondelete="CASCADE"), primary_key=True
    )
    slice_arm_id: Mapped[int] = mapped_column(
        ID, ForeignKey("ai_ab_experiment_arms.id", ondelete="CASCADE"), primary_key=True
    )
    stratum_key: Mapped[str] = mapped_column(String(201), primary_key=True)
    stratum: Mapped[str | None] = mapped_column(String(200))
    units: Mapped[int] = mapped_column(Integer, nullable=False)
    conversations: Mapped[int] = mapped_column(Integer, nullable=False)
    success_units: Mapped[int] = mapped_column(Integer, nullable=False)
    success_sy: Mapped[float] = mapped_column(Float, nullable=False)
    success_sm: Mapped[float] = mapped_column(Float, nullable=False)
    success_syy: Mapped[float] = mapped_column(Float, nullable=False)
    success_smm: Mapped[float] = mapped_column(Float, nullable=False)
    success_sym: Mapped[float] = mapped_column(Float, nullable=False)
    rating_units: Mapped[int] = mapped_column(Integer, nullable=False)
    rating_sy: Mapped[float] = mapped_column(Float, nullable=False)
    rating_sm: Mapped[float] = mapped_column(Float, nullable=False)
    rating_syy: Mapped[float] = mapped_column(Float, nullable=False)
    rating_smm: Mapped[float] = mapped_column(Float, nullable=False)
    rating_sym: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd_units: Mapped[int] = mapped_column(Integer, nullable=False)
    cost_usd_sy: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd_sm: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd_syy: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd_smm: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd_sym: Mapped[float] = mapped_column(Float, nullable=False)
    latency_ms_units: Mapped[int] = mapped_column(Integer, nullable=False)
    latency_ms_sy: Mapped[float] = mapped_column(Float, nullable=False)
    latency_ms_sm: Mapped[float] = mapped_column(Float, nullable=False)
    latency_ms_syy: Mapped[float] = mapped_column(Float, nullable=False)
    latency_ms_smm: Mapped[float] = mapped_column(Float, nullable=False)
    latency_ms_sym: Mapped[float] = mapped_column(Float, nullable=False)
