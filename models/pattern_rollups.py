"""The pattern rollups: per (prompt version, hour, unit), and per segment or tag as well, the
sums pattern analysis reads instead of every conversation of the last 7 days (see
optimizer.patterns.rollup). The unit stays in the key because units are the independent
observations: a window's per-unit figures are the sums of the unit's hours in it.

One column group per metric of optimizer.stats.metrics.PATTERNS (a test keeps the two in
step): y the sum of the values (a proportion as 1 or 0), m how many conversations report
the metric, and on the version's rows q the sum of squared values of a mean metric."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ID, Base, UtcDateTime

_VERSION = "ai_prompt_versions.id"


class PatternUnitHour(Base):
    """One unit's conversations of one version in one hour (`hour`: occurred_at truncated
    to the hour, UTC)."""

    __tablename__ = "pattern_unit_hours"

    version_id: Mapped[int] = mapped_column(
        ID, ForeignKey(_VERSION, ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)
    success_y: Mapped[float] = mapped_column(Float, nullable=False)
    success_m: Mapped[int] = mapped_column(Integer, nullable=False)
    rating_y: Mapped[float] = mapped_column(Float, nullable=False)
    rating_m: Mapped[int] = mapped_column(Integer, nullable=False)
    rating_q: Mapped[float] = mapped_column(Float, nullable=False)


class PatternSegmentUnitHour(Base):
    """A unit's conversations of one version in one hour with one (non-null) segment."""

    __tablename__ = "pattern_segment_unit_hours"

    version_id: Mapped[int] = mapped_column(
        ID, ForeignKey(_VERSION, ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)
    success_y: Mapped[float] = mapped_column(Float, nullable=False)
    success_m: Mapped[int] = mapped_column(Integer, nullable=False)
    rating_y: Mapped[float] = mapped_column(Float, nullable=False)
    rating_m: Mapped[int] = mapped_column(Integer, nullable=False)


class PatternTagUnitHour(Base):
    """A unit's conversations of one version in one hour that carry one tag (each counted
    once, however often it lists the tag)."""

    __tablename__ = "pattern_tag_unit_hours"

    version_id: Mapped[int] = mapped_column(
        ID, ForeignKey(_VERSION, ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, nullable=False)
    success_y: Mapped[float] = mapped_column(Float, nullable=False)
    success_m: Mapped[int] = mapped_column(Integer, nullable=False)
    rating_y: Mapped[float] = mapped_column(Float, nullable=False)
    rating_m: Mapped[int] = mapped_column(Integer, nullable=False)


class RollupMark(Base):
    """How far a rollup has read the conversations (optimizer.watermark): one row per
    rollup by name; `mark` NULL before its first pass. A pass locks its row, so passes of
    several replicas take turns."""

    __tablename__ = "rollup_marks"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    mark: Mapped[int | None] = mapped_column(BigInteger)
