"""used signatures: replay protection for signed admin requests shared by every replica

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

used_signatures holds the X-Signature digest of each accepted signed admin request until
its timestamp has left the window on every replica (expires_at). Recording one is an
insert: the primary key refuses a second one, so a replay is refused across restarts and
across replicas. Expired rows are deleted as new signatures arrive.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "used_signatures",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_used_signatures")),
    )
    with op.batch_alter_table("used_signatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_signatures_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("used_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_signatures_expires_at"))
    op.drop_table("used_signatures")
