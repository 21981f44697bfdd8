"""idempotency keys: a retried conversation batch is stored once, on every replica

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

idempotency_keys holds the Idempotency-Key of each stored POST /v1/conversations batch
with the sha256 of its body and the count answered, for 24 hours (expires_at). The row is
inserted in the batch's own transaction, and the primary key refuses a second one, so a
retry is answered from the row instead of being stored again, across restarts and
replicas. Expired rows are deleted as new keys arrive. No existing rows change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))
    op.drop_table("idempotency_keys")
