"""job types from the specs: drop the CHECK constraint on optimization_jobs.type

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

The list of job types lives in the code (optimizer/jobs/registry.py, one JobSpec per type),
so that adding a job type is one module and its test, without a migration. POST /jobs and
`prompt-worker jobs add` refuse an unknown type with a 400 naming the known ones; a row
inserted by hand in SQL with an unknown type is claimed and failed at once (one attempt, no
retry) with "no handler for job type ...", and the worker goes on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The types as 0001 enforced them; a downgrade restores exactly that.
TYPES_0001 = (
    "pattern_analysis",
    "variant_generation",
    "experiment_creation",
    "experiment_monitoring",
    "full_cycle",
)


def upgrade() -> None:
    with op.batch_alter_table("optimization_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_optimization_jobs_type"), type_="check")


def downgrade() -> None:
    listed = ", ".join(f"'{name}'" for name in TYPES_0001)
    with op.batch_alter_table("optimization_jobs", schema=None) as batch_op:
        batch_op.create_check_constraint(
            op.f("ck_optimization_jobs_type"), sa.text(f"type IN ({listed})")
        )
