"""pattern rollups: per (prompt version, hour, unit) sums, also per segment and per tag

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

pattern_unit_hours, pattern_segment_unit_hours and pattern_tag_unit_hours hold, per
(version, hour, unit) and per (version, hour, segment or tag, unit), what pattern analysis
needs (optimizer.patterns.rollup), so a run reads sums of the last 7 days' hours instead of
every conversation. rollup_marks is how far each rollup has read the conversations (one row
per rollup; 'patterns' starts with no mark, so the first pass reads every row it needs).
The primary keys lead with (version_id, hour): a run reads one version's range of hours.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql")
METRICS = ("success", "rating")  # optimizer.stats.metrics.PATTERNS
MEAN_METRICS = ("rating",)


def _sums(squares: bool) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [sa.Column("n", sa.Integer(), nullable=False)]
    for metric in METRICS:
        columns += [
            sa.Column(f"{metric}_y", sa.Float(), nullable=False),
            sa.Column(f"{metric}_m", sa.Integer(), nullable=False),
        ]
        if squares and metric in MEAN_METRICS:
            columns.append(sa.Column(f"{metric}_q", sa.Float(), nullable=False))
    return columns


def _rollup_table(name: str, group: str | None) -> None:
    key = ["version_id", "hour", *([group] if group else []), "unit_id"]
    op.create_table(
        name,
        sa.Column("version_id", ID, nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        *([sa.Column(group, sa.String(length=200), nullable=False)] if group else []),
        sa.Column("unit_id", sa.String(length=200), nullable=False),
        *_sums(squares=group is None),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["ai_prompt_versions.id"],
            name=op.f(f"fk_{name}_version_id_ai_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*key, name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    _rollup_table("pattern_unit_hours", None)
    _rollup_table("pattern_segment_unit_hours", "segment")
    _rollup_table("pattern_tag_unit_hours", "tag")
    op.create_table(
        "rollup_marks",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("mark", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_marks")),
    )
    op.execute("INSERT INTO rollup_marks (name, mark) VALUES ('patterns', NULL)")


def downgrade() -> None:
    op.drop_table("rollup_marks")
    op.drop_table("pattern_tag_unit_hours")
    op.drop_table("pattern_segment_unit_hours")
    op.drop_table("pattern_unit_hours")
