"""experiment rollups: per (experiment, slice, unit) sums kept as conversations arrive

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

experiment_unit_sums holds, per (experiment, slice, unit), the unit's sums, and
experiment_stratum_sums per (experiment, slice, unit segment) the sums over units a check
reads (optimizer.experiments.rollup): a check reads a few rows instead of every
conversation.
ai_ab_experiments.rolled_up_to is how far each experiment's rollup has read, and
rollup_caps the caps its sums were capped at.

conversations.commit_order: on PostgreSQL the id of the transaction that stored the row
(pg_current_xact_id(), a 64-bit counter that never wraps), the rollup's watermark there;
rows ids are not one, because transactions commit out of order. The column is added
without a default first and the default set after, so PostgreSQL does not rewrite the
table: rows stored before this revision keep NULL and are rolled up by the first pass.
On SQLite the column stays NULL (row ids are in commit order there: one writer at a time).
Indexes: on PostgreSQL (commit_order) and (experiment_id, commit_order), on SQLite
(experiment_id, id); they replace (experiment_id, arm_id).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql")
METRICS = ("success", "rating", "cost_usd", "latency_ms")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # IF NOT EXISTS: on a large table an operator may prepare the column and build the
        # indexes beforehand with CREATE INDEX CONCURRENTLY, which does not block ingest
        # (docs/operations.md).
        op.execute("ALTER TABLE conversations ADD COLUMN IF NOT EXISTS commit_order BIGINT")
        op.execute(
            "ALTER TABLE conversations ALTER COLUMN commit_order "
            "SET DEFAULT (pg_current_xact_id()::text::bigint)"
        )
        op.create_index(
            "ix_conversations_commit_order", "conversations", ["commit_order"], if_not_exists=True
        )
        op.create_index(
            "ix_conversations_experiment_commit",
            "conversations",
            ["experiment_id", "commit_order"],
            if_not_exists=True,
        )
    else:
        with op.batch_alter_table("conversations", schema=None) as batch_op:
            batch_op.add_column(sa.Column("commit_order", sa.BigInteger(), nullable=True))
        op.create_index("ix_conversations_experiment_id", "conversations", ["experiment_id", "id"])
    # Replaced by the index above: an experiment's rows are read by commit order now.
    op.drop_index("ix_conversations_experiment_arm", table_name="conversations")
    with op.batch_alter_table("ai_ab_experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rolled_up_to", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("rollup_caps", sa.Text(), nullable=True))
    op.create_table(
        "experiment_unit_sums",
        sa.Column("experiment_id", ID, nullable=False),
        sa.Column("slice_arm_id", ID, nullable=False),
        sa.Column("unit_id", sa.String(length=200), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("own_conversations", sa.Integer(), nullable=False),
        sa.Column("stratum", sa.String(length=200), nullable=True),
        *(
            sa.Column(f"{metric}_{part}", sa.Float(), nullable=False)
            for metric in METRICS
            for part in ("y", "m")
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["ai_ab_experiments.id"],
            name=op.f("fk_experiment_unit_sums_experiment_id_ai_ab_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["slice_arm_id"],
            ["ai_ab_experiment_arms.id"],
            name=op.f("fk_experiment_unit_sums_slice_arm_id_ai_ab_experiment_arms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id", "slice_arm_id", "unit_id", name=op.f("pk_experiment_unit_sums")
        ),
    )

    op.create_table(
        "experiment_stratum_sums",
        sa.Column("experiment_id", ID, nullable=False),
        sa.Column("slice_arm_id", ID, nullable=False),
        sa.Column("stratum_key", sa.String(length=201), nullable=False),
        sa.Column("stratum", sa.String(length=200), nullable=True),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        *(
            sa.Column(
                f"{metric}_{part}", sa.Float() if part != "units" else sa.Integer(), nullable=False
            )
            for metric in METRICS
            for part in ("units", "sy", "sm", "syy", "smm", "sym")
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["ai_ab_experiments.id"],
            name=op.f("fk_experiment_stratum_sums_experiment_id_ai_ab_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["slice_arm_id"],
            ["ai_ab_experiment_arms.id"],
            name=op.f("fk_experiment_stratum_sums_slice_arm_id_ai_ab_experiment_arms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "experiment_id",
            "slice_arm_id",
            "stratum_key",
            name=op.f("pk_experiment_stratum_sums"),
        ),
    )


def downgrade() -> None:
    op.drop_table("experiment_stratum_sums")
    op.drop_table("experiment_unit_sums")
    with op.batch_alter_table("ai_ab_experiments", schema=None) as batch_op:
        batch_op.drop_column("rollup_caps")
        batch_op.drop_column("rolled_up_to")
    op.create_index("ix_conversations_experiment_arm", "conversations", ["experiment_id", "arm_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_conversations_commit_order", table_name="conversations")
        op.drop_index("ix_conversations_experiment_commit", table_name="conversations")
    else:
        op.drop_index("ix_conversations_experiment_id", table_name="conversations")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("commit_order")
