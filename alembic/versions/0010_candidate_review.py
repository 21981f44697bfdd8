"""candidate review: replay evaluations, approvals, structured transcripts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

- conversations.messages: the structured transcript ingest accepts alongside the text one
  (JSON list of {"role", "content"}); replay reads the user turns from it. NULL on older rows.
- prompts.promotion_mode: 'auto' or 'approve' for this prompt; NULL follows PROMOTION_MODE.
  prompts.judge_rubric: extra criteria for the replay judge of this prompt (optional).
- ai_prompt_versions.status_reason: why a version has its status (a candidate rejected by
  replay carries the figures).
- ai_ab_experiments.status (now 32 characters wide) gains 'awaiting_approval' (a winner found in approve mode; traffic
  keeps its split), which counts as live: still at most one live experiment per prompt.
- candidate_evaluations: one row per conversation replayed for a candidate: both answers, the
  judge's verdict in each order with its reason, the score, tokens and cost.

Downgrade drops the table and the columns; experiments awaiting approval become 'paused'
(live, no winner applied) so the older check constraint holds.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql")
OLD_STATUSES = "status IN ('running', 'paused', 'completed', 'stopped')"
NEW_STATUSES = "status IN ('running', 'paused', 'awaiting_approval', 'completed', 'stopped')"
OLD_LIVE = "status IN ('running', 'paused')"
NEW_LIVE = "status IN ('running', 'paused', 'awaiting_approval')"


def _now_default() -> sa.TextClause:
    # As in 0001: SQLite's CURRENT_TIMESTAMP has whole seconds; keep milliseconds there too.
    if op.get_bind().dialect.name == "sqlite":
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))")
    return sa.text("CURRENT_TIMESTAMP")


# Revision 0007's routing triggers: PostgreSQL refuses to change the type of a column a
# trigger names, and SQLite drops a table's triggers when batch mode rebuilds it (as it does
# to change a CHECK constraint). They are dropped first and made again, as 0007 made them.
_BUMP = "UPDATE routing_stamp SET value = value + 1 WHERE id = 1"
_WATCHED = {"prompts": ("id", "name"), "ai_ab_experiments": ("id", "prompt_id", "status")}


@contextmanager
def _routing_triggers_remade(table: str) -> Iterator[None]:
    postgres = op.get_bind().dialect.name == "postgresql"
    events = ("update",) if postgres else ("insert", "delete", "update")
    for event in events:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS routing_changed_{table}_{event}{on}")
    yield
    columns = ", ".join(_WATCHED[table])
    if postgres:
        old = ", ".join(f"OLD.{c}" for c in _WATCHED[table])
        new = ", ".join(f"NEW.{c}" for c in _WATCHED[table])
        op.execute(f"""
            CREATE CONSTRAINT TRIGGER routing_changed_{table}_update
            AFTER UPDATE OF {columns} ON {table}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (({old}) IS DISTINCT FROM ({new}))
            EXECUTE FUNCTION routing_changed()
        """)
        return
    for event in ("insert", "delete"):
        op.execute(f"""
            CREATE TRIGGER routing_changed_{table}_{event}
            AFTER {event.upper()} ON {table}
            BEGIN {_BUMP}; END
        """)
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _WATCHED[table])
    op.execute(f"""
        CREATE TRIGGER routing_changed_{table}_update
        AFTER UPDATE OF {columns} ON {table}
        FOR EACH ROW WHEN {changed}
        BEGIN {_BUMP}; END
    """)


def _experiment_statuses(check: str, live: str, width: int) -> None:
    with _routing_triggers_remade("ai_ab_experiments"):
        if width == 16:  # the downgrade: 'awaiting_approval' neither fits nor passes the check
            op.execute(
                "UPDATE ai_ab_experiments SET status = 'paused' WHERE status = 'awaiting_approval'"
            )
        _experiment_table(check, live, width)


def _experiment_table(check: str, live: str, width: int) -> None:
    with op.batch_alter_table("ai_ab_experiments", schema=None) as batch_op:
        batch_op.drop_index("uq_ai_ab_experiments_one_live")
        batch_op.drop_constraint(op.f("ck_ai_ab_experiments_status"), type_="check")
        batch_op.alter_column(
            "status",
            existing_type=sa.String(length=16 if width == 32 else 32),
            type_=sa.String(length=width),
            existing_nullable=False,
            existing_server_default=sa.text("'running'"),
        )
        batch_op.create_check_constraint(op.f("ck_ai_ab_experiments_status"), sa.text(check))
        batch_op.create_index(
            "uq_ai_ab_experiments_one_live",
            ["prompt_id"],
            unique=True,
            sqlite_where=sa.text(live),
            postgresql_where=sa.text(live),
        )


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages", sa.Text(), nullable=True))
    with _routing_triggers_remade("prompts"), op.batch_alter_table("prompts") as batch_op:
        batch_op.add_column(sa.Column("promotion_mode", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("judge_rubric", sa.Text(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_prompts_promotion_mode"),
            sa.text("promotion_mode IS NULL OR promotion_mode IN ('auto', 'approve')"),
        )
    with op.batch_alter_table("ai_prompt_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
    _experiment_statuses(NEW_STATUSES, NEW_LIVE, 32)
    op.create_table(
        "candidate_evaluations",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("prompt_id", ID, nullable=False),
        sa.Column("candidate_version_id", ID, nullable=False),
        sa.Column("control_version_id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("conversation_id", ID, nullable=True),
        sa.Column("sample", sa.String(length=16), nullable=False),
        sa.Column("segment", sa.String(length=200), nullable=True),
        sa.Column("control_answer", sa.Text(), nullable=False),
        sa.Column("candidate_answer", sa.Text(), nullable=False),
        sa.Column("verdict_candidate_first", sa.String(length=16), nullable=False),
        sa.Column("verdict_control_first", sa.String(length=16), nullable=False),
        sa.Column("reason_candidate_first", sa.Text(), nullable=True),
        sa.Column("reason_control_first", sa.Text(), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("output_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cost_usd", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=_now_default(), nullable=False
        ),
        sa.CheckConstraint(
            "sample IN ('failing', 'holdout')", name=op.f("ck_candidate_evaluations_sample")
        ),
        sa.CheckConstraint(
            "verdict_candidate_first IN ('candidate', 'control', 'tie') AND "
            "verdict_control_first IN ('candidate', 'control', 'tie')",
            name=op.f("ck_candidate_evaluations_verdicts"),
        ),
        sa.CheckConstraint(
            "score >= 0 AND score <= 1", name=op.f("ck_candidate_evaluations_score")
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_candidate_evaluations_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["candidate_version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_candidate_evaluations_candidate_version_id_ai_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["control_version_id"],
            ["ai_prompt_versions.id"],
            name=op.f("fk_candidate_evaluations_control_version_id_ai_prompt_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["optimization_jobs.id"],
            name=op.f("fk_candidate_evaluations_job_id_optimization_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_candidate_evaluations_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidate_evaluations")),
        sa.UniqueConstraint(
            "candidate_version_id",
            "control_version_id",
            "conversation_id",
            name=op.f("uq_candidate_evaluations_candidate_version_id"),
        ),
    )


def downgrade() -> None:
    op.drop_table("candidate_evaluations")
    _experiment_statuses(OLD_STATUSES, OLD_LIVE, 16)
    with op.batch_alter_table("ai_prompt_versions", schema=None) as batch_op:
        batch_op.drop_column("status_reason")
    with _routing_triggers_remade("prompts"), op.batch_alter_table("prompts") as batch_op:
        batch_op.drop_constraint(op.f("ck_prompts_promotion_mode"), type_="check")
        batch_op.drop_column("judge_rubric")
        batch_op.drop_column("promotion_mode")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("messages")
