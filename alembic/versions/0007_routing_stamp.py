"""routing stamp: every change to what resolve answers raises a counter and, on PostgreSQL,
notifies the replicas

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Each process answers resolve and GET /v1/config from a snapshot in memory
(optimizer.routing_refresh). routing_stamp is one row whose `value` triggers raise in the
transaction of every change to the rows that snapshot is built from: a prompt added,
renamed or deleted; a version's content, number or status; an experiment's status; an
arm's weight, status, version or role. Replicas read the stamp a few times a second and
rebuild their snapshot when it moved, so a change made by plain SQL counts too. Updates
of other columns (an experiment's decision notes or rollup watermark) do not move it.

On PostgreSQL the triggers are deferred constraint triggers: they run at commit, once per
transaction (a transaction-local setting remembers that the stamp moved), so the row lock
on the stamp is the last lock a transaction takes and two writers cannot deadlock on it.
They also NOTIFY channel 'prompt_routing' (delivered at commit), which wakes the replicas
within milliseconds; the stamp is what they fall back on when a notification is lost.

On SQLite a batch migration that recreates one of the watched tables drops its triggers:
such a migration must create them again (tests/integration/test_routing_snapshot.py
checks that every trigger exists at head).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "prompt_routing"
# Per table, the columns whose change can change some unit's answer. Migrations never
# import the service's code, so optimizer.routing_writes.ROUTING_COLUMNS (which of this
# process's own UPDATEs count) repeats these lists; tests/integration/
# test_routing_snapshot.py checks the two agree.
WATCHED = {
    "prompts": ("id", "name"),
    "ai_prompt_versions": ("id", "prompt_id", "version", "content", "status"),
    "ai_ab_experiments": ("id", "prompt_id", "status"),
    "ai_ab_experiment_arms": (
        "id",
        "experiment_id",
        "version_id",
        "is_control",
        "weight",
        "status",
    ),
}
BUMP = "UPDATE routing_stamp SET value = value + 1 WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        "routing_stamp",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_routing_stamp_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_stamp")),
    )
    op.execute("INSERT INTO routing_stamp (id, value) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


def _postgresql_triggers() -> None:
    op.execute(f"""
        CREATE FUNCTION routing_changed() RETURNS trigger AS $$
        BEGIN
            IF current_setting('prompt_worker.routing_changed', true)
                    IS DISTINCT FROM 'on' THEN
                PERFORM set_config('prompt_worker.routing_changed', 'on', true);
                {BUMP};
                PERFORM pg_notify('{CHANNEL}', '');
            END IF;
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql
    """)
    for table, columns in WATCHED.items():
        old = ", ".join(f"OLD.{c}" for c in columns)
        new = ", ".join(f"NEW.{c}" for c in columns)
        op.execute(f"""
            CREATE CONSTRAINT TRIGGER routing_changed_{table}_rows
            AFTER INSERT OR DELETE ON {table}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            EXECUTE FUNCTION routing_changed()
        """)
        op.execute(f"""
            CREATE CONSTRAINT TRIGGER routing_changed_{table}_update
            AFTER UPDATE OF {", ".join(columns)} ON {table}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (({old}) IS DISTINCT FROM ({new}))
            EXECUTE FUNCTION routing_changed()
        """)
        op.execute(f"""
            CREATE TRIGGER routing_changed_{table}_truncate
            AFTER TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION routing_changed()
        """)


def _sqlite_triggers() -> None:
    for table, columns in WATCHED.items():
        for event in ("insert", "delete"):
            op.execute(f"""
                CREATE TRIGGER routing_changed_{table}_{event}
                AFTER {event.upper()} ON {table}
                BEGIN {BUMP}; END
            """)
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
        op.execute(f"""
            CREATE TRIGGER routing_changed_{table}_update
            AFTER UPDATE OF {", ".join(columns)} ON {table}
            FOR EACH ROW WHEN {changed}
            BEGIN {BUMP}; END
        """)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in WATCHED:
        events = ("rows", "update", "truncate") if postgres else ("insert", "delete", "update")
        for event in events:
            on = f" ON {table}" if postgres else ""
            op.execute(f"DROP TRIGGER IF EXISTS routing_changed_{table}_{event}{on}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS routing_changed()")
    op.drop_table("routing_stamp")
