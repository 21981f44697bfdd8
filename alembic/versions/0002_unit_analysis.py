"""per-unit analysis: the slice each conversation's unit is assigned to, fixed metric caps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

conversations.assigned_arm_id: the arm whose slice the unit falls in (set by ingest from the
deterministic assignment). It differs from arm_id only for units of a stopped arm's slice,
which are served the control: the sample-ratio test counts units by slice, so it keeps
working after an arm stops, and the comparison leaves those routed units out of control.
Rows stored before this revision have NULL and count by arm_id.

ai_ab_experiments.metric_caps: per-metric caps of heavy-tailed metrics (JSON), fixed once
from the control's early data (or configured) so one extreme conversation cannot decide.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "assigned_arm_id",
                sa.Integer().with_variant(sa.BigInteger(), "postgresql"),
                nullable=True,
            )
        )
        batch_op.create_foreign_key(
            op.f("fk_conversations_assigned_arm_id_ai_ab_experiment_arms"),
            "ai_ab_experiment_arms",
            ["assigned_arm_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("ai_ab_experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("metric_caps", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_ab_experiments", schema=None) as batch_op:
        batch_op.drop_column("metric_caps")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_conversations_assigned_arm_id_ai_ab_experiment_arms"), type_="foreignkey"
        )
        batch_op.drop_column("assigned_arm_id")
