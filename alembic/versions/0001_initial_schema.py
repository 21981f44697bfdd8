"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Builds every table. On PostgreSQL, an insert (or a return to 'pending') on
optimization_jobs NOTIFYs channel 'optimization_jobs', so a job inserted by hand in
SQL wakes the workers at once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


NOTIFY_CHANNEL = "optimization_jobs"


def _now_default() -> sa.TextClause:
    # SQLite's CURRENT_TIMESTAMP has whole seconds; keep milliseconds there too.
    if op.get_bind().dialect.name == "sqlite":
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))")
    return sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    now = _now_default()
    op.create_table(
        "optimization_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("payload", sa.Text(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=True),
        sa.Column("run_after", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("locked_by", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "cancel_requested", sa.Boolean(), server_default=sa.text("(false)"), nullable=False
        ),
        sa.Column("progress", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("current_step", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_optimization_jobs_status"),
        ),
        sa.CheckConstraint(
            "type IN ('pattern_analysis', 'variant_generation', 'experiment_creation', 'experiment_monitoring', 'full_cycle')",
            name=op.f("ck_optimization_jobs_type"),
        ),
        sa.CheckConstraint(
            "attempts >= 0 AND max_attempts >= 1", name=op.f("ck_optimization_jobs_attempts")
        ),
        sa.CheckConstraint(
            "progress BETWEEN 0 AND 100", name=op.f("ck_optimization_jobs_progress")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_optimization_jobs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_optimization_jobs_dedupe_key")),
    )
    with op.batch_alter_table("optimization_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_optimization_jobs_claim", ["status", "run_after", "priority"], unique=False
        )
        batch_op.create_index(
            "ix_optimization_jobs_finished", ["status", "finished_at"], unique=False
        )

    op.create_table(
        "prompts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
        sa.UniqueConstraint("name", name=op.f("uq_prompts_name")),
    )
    op.create_table(
        "llm_calls",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("requested_model", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column(
            "provider", sa.String(length=32), server_default=sa.text("'anthropic'"), nullable=False
        ),
        sa.Column("input_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "cache_creation_input_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "cache_read_input_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("cost_usd", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("latency_ms", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["optimization_jobs.id"],
            name=op.f("fk_llm_calls_job_id_optimization_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_calls")),
    )
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_llm_calls_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_llm_calls_job_id"), ["job_id"], unique=False)

    op.create_table(
        "ai_prompt_versions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prompt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'candidate'"), nullable=False
        ),
        sa.Column("change_notes", sa.Text(), nullable=True),
        sa.Column(
            "parent_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "source", sa.String(length=32), server_default=sa.text("'manual'"), nullable=False
        ),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("insight_ids", sa.Text(), nullable=True),
        sa.Column(
            "llm_call_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.CheckConstraint(
            "status IN ('candidate', 'testing', 'active', 'retired', 'rejected')",
            name=op.f("ck_ai_prompt_versions_status"),
        ),
        sa.ForeignKeyConstraint(
            ["llm_call_id"],
            ["llm_calls.id"],
            name=op.f("fk_ai_prompt_versions_llm_call_id_llm_calls"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_ai_prompt_versions_parent_version_id_ai_prompt_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_ai_prompt_versions_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_prompt_versions")),
        sa.UniqueConstraint("prompt_id", "content_hash", name="uq_ai_prompt_versions_content"),
        sa.UniqueConstraint("prompt_id", "version", name="uq_ai_prompt_versions_number"),
    )
    with op.batch_alter_table("ai_prompt_versions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_ai_prompt_versions_one_active",
            ["prompt_id"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "ai_ab_experiments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prompt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'running'"), nullable=False
        ),
        sa.Column(
            "primary_metric",
            sa.String(length=64),
            server_default=sa.text("'success'"),
            nullable=False,
        ),
        sa.Column("guardrails", sa.Text(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("confidence", sa.Float(), server_default=sa.text("(0.9)"), nullable=False),
        sa.Column(
            "min_conversations_per_arm",
            sa.Integer(),
            server_default=sa.text("(100)"),
            nullable=False,
        ),
        sa.Column("min_runtime_hours", sa.Float(), server_default=sa.text("(24)"), nullable=False),
        sa.Column("max_runtime_hours", sa.Float(), server_default=sa.text("(336)"), nullable=False),
        sa.Column(
            "winner_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_by", sa.String(length=200), server_default=sa.text("'system'"), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'paused', 'completed', 'stopped')",
            name=op.f("ck_ai_ab_experiments_status"),
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_ai_ab_experiments_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["winner_version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_ai_ab_experiments_winner_version_id_ai_prompt_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_ab_experiments")),
    )
    with op.batch_alter_table("ai_ab_experiments", schema=None) as batch_op:
        batch_op.create_index(
            "uq_ai_ab_experiments_one_live",
            ["prompt_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('running', 'paused')"),
            postgresql_where=sa.text("status IN ('running', 'paused')"),
        )

    op.create_table(
        "ai_pattern_insights",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prompt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("evidence", sa.Text(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("is_actionable", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("effect_size", sa.Float(), nullable=True),
        sa.Column("occurrences", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_ai_pattern_insights_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_ai_pattern_insights_version_id_ai_prompt_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_pattern_insights")),
        sa.UniqueConstraint("prompt_id", "fingerprint", name="uq_ai_pattern_insights_fingerprint"),
    )
    op.create_table(
        "prompt_activations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prompt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "from_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "to_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["from_version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_prompt_activations_from_version_id_ai_prompt_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_prompt_activations_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_prompt_activations_to_version_id_ai_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_activations")),
    )
    with op.batch_alter_table("prompt_activations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prompt_activations_prompt_id"), ["prompt_id"], unique=False
        )

    op.create_table(
        "ai_ab_experiment_analyses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "experiment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("decision", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("srm_detected", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("statistics", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["ai_ab_experiments.id"],
            name=op.f("fk_ai_ab_experiment_analyses_experiment_id_ai_ab_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["optimization_jobs.id"],
            name=op.f("fk_ai_ab_experiment_analyses_job_id_optimization_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_ab_experiment_analyses")),
    )
    with op.batch_alter_table("ai_ab_experiment_analyses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ai_ab_experiment_analyses_experiment_id"),
            ["experiment_id"],
            unique=False,
        )

    op.create_table(
        "ai_ab_experiment_arms",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "experiment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("is_control", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("weight", sa.Float(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'active'"), nullable=False
        ),
        sa.Column("stopped_reason", sa.Text(), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'stopped')", name=op.f("ck_ai_ab_experiment_arms_status")
        ),
        sa.CheckConstraint("weight > 0", name=op.f("ck_ai_ab_experiment_arms_weight")),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["ai_ab_experiments.id"],
            name=op.f("fk_ai_ab_experiment_arms_experiment_id_ai_ab_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_ai_ab_experiment_arms_version_id_ai_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_ab_experiment_arms")),
        sa.UniqueConstraint("experiment_id", "version_id", name="uq_ai_ab_experiment_arms_version"),
    )
    with op.batch_alter_table("ai_ab_experiment_arms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ai_ab_experiment_arms_experiment_id"), ["experiment_id"], unique=False
        )

    op.create_table(
        "conversations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prompt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "experiment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("arm_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("unit_id", sa.String(length=200), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("rating", sa.SmallInteger(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("segment", sa.String(length=200), nullable=True),
        sa.Column("tags", sa.Text(), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.CheckConstraint(
            "rating IS NULL OR rating BETWEEN 1 AND 5", name=op.f("ck_conversations_rating")
        ),
        sa.ForeignKeyConstraint(
            ["arm_id"],
            ["ai_ab_experiment_arms.id"],
            name=op.f("fk_conversations_arm_id_ai_ab_experiment_arms"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["ai_ab_experiments.id"],
            name=op.f("fk_conversations_experiment_id_ai_ab_experiments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_conversations_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_conversations_version_id_ai_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversations_experiment_arm", ["experiment_id", "arm_id"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_prompt_time", ["prompt_id", "occurred_at"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_version_time", ["version_id", "occurred_at"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION optimization_jobs_notify() RETURNS trigger AS $$
            BEGIN
                PERFORM pg_notify('{NOTIFY_CHANNEL}', NEW.id::text);
                RETURN NEW;
            END
            $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER optimization_jobs_notify_insert
            AFTER INSERT ON optimization_jobs
            FOR EACH ROW EXECUTE FUNCTION optimization_jobs_notify()
        """)
        op.execute("""
            CREATE TRIGGER optimization_jobs_notify_requeue
            AFTER UPDATE OF status ON optimization_jobs
            FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status <> 'pending')
            EXECUTE FUNCTION optimization_jobs_notify()
        """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS optimization_jobs_notify_requeue ON optimization_jobs")
        op.execute("DROP TRIGGER IF EXISTS optimization_jobs_notify_insert ON optimization_jobs")
        op.execute("DROP FUNCTION IF EXISTS optimization_jobs_notify()")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_version_time")
        batch_op.drop_index("ix_conversations_prompt_time")
        batch_op.drop_index("ix_conversations_experiment_arm")

    op.drop_table("conversations")
    with op.batch_alter_table("ai_ab_experiment_arms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ai_ab_experiment_arms_experiment_id"))

    op.drop_table("ai_ab_experiment_arms")
    with op.batch_alter_table("ai_ab_experiment_analyses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ai_ab_experiment_analyses_experiment_id"))

    op.drop_table("ai_ab_experiment_analyses")
    with op.batch_alter_table("prompt_activations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_activations_prompt_id"))

    op.drop_table("prompt_activations")
    op.drop_table("ai_pattern_insights")
    with op.batch_alter_table("ai_ab_experiments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ai_ab_experiments_one_live",
            sqlite_where=sa.text("status IN ('running', 'paused')"),
            postgresql_where=sa.text("status IN ('running', 'paused')"),
        )

    op.drop_table("ai_ab_experiments")
    with op.batch_alter_table("ai_prompt_versions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ai_prompt_versions_one_active",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.drop_table("ai_prompt_versions")
    with op.batch_alter_table("llm_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llm_calls_job_id"))
        batch_op.drop_index(batch_op.f("ix_llm_calls_created_at"))

    op.drop_table("llm_calls")
    op.drop_table("prompts")
    with op.batch_alter_table("optimization_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_optimization_jobs_finished")
        batch_op.drop_index("ix_optimization_jobs_claim")

    op.drop_table("optimization_jobs")
