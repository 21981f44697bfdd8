"""This process's own commits that may change routing, counted as they happen.

A replica learns of other processes' changes from the routing stamp and NOTIFY
(optimizer.routing_refresh), within a fraction of a second. Its own changes it learns at
once: every SQLAlchemy connection of the process reports here when it commits a
transaction that wrote to a table resolve reads (an admin route, a job's promotion, a test
seeding rows, a plain-SQL `text()` statement alike). `generation()` then rises, and the
next resolve in this process waits for a snapshot read after that commit: a caller never
resolves against routing older than its own write.

The check reads the statement's first words only (the verb and the table it writes), so
it costs next to nothing on the statements of the hot path (ingest). A write it cannot see
(autocommit mode, a driver connection used directly) is still caught by the stamp.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool

ROUTING_TABLES = frozenset(
    {"prompts", "ai_prompt_versions", "ai_ab_experiments", "ai_ab_experiment_arms"}
)
_WRITE = re.compile(
    r"\s*(?:insert\s+(?:or\s+\w+\s+)?into|update(?:\s+or\s+\w+)?|delete\s+from"
    r'|truncate(?:\s+table)?(?:\s+only)?)\s+"?(\w+)',
    re.IGNORECASE,
)
# Statements that may write anywhere inside them (a CTE, MERGE): look at every table named.
_COMPOUND = re.compile(r"\s*(?:with|merge)\b", re.IGNORECASE)
_NAMED = re.compile(r"\b(" + "|".join(sorted(ROUTING_TABLES)) + r")\b", re.IGNORECASE)

# Kept in the connection's info (it lives as long as the database connection): "written"
# while the transaction that wrote is open, "committed" once it committed, until the
# connection is next used or returned to the pool, strictly after the commit took effect.
_STATE = "prompt_worker_routing_write"
_WRITTEN = "written"
_COMMITTED = "committed"

_lock = threading.Lock()
_generation = 0
_watching = False


def generation() -> int:
    """Rises after each commit of this process that wrote to a routing table."""
    return _generation


def _bump() -> None:
    global _generation
    with _lock:
        _generation += 1


def writes_routing(statement: str) -> bool:
    match = _WRITE.match(statement)
    if match is not None:
        return match.group(1).lower() in ROUTING_TABLES
    return _COMPOUND.match(statement) is not None and _NAMED.search(statement) is not None


def _on_statement(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    if writes_routing(statement):
        conn.info[_STATE] = _WRITTEN


def _on_commit(conn: Connection) -> None:
    if conn.info.get(_STATE) == _WRITTEN:
        conn.info[_STATE] = _COMMITTED
        # Raised now as well as after the commit: the sooner a reader stops trusting its
        # snapshot the better, and the second rise covers a reload that ran in between.
        _bump()


def _on_rollback(conn: Connection) -> None:
    # A lost connection is invalidated before this runs, and reading its info would raise
    # PendingRollbackError over the real error (the outage); nothing it wrote committed.
    if conn.invalidated:
        return
    if conn.info.get(_STATE) == _WRITTEN:
        del conn.info[_STATE]


def _after_commit(info: dict[Any, Any]) -> None:
    if info.get(_STATE) == _COMMITTED:
        del info[_STATE]
        _bump()


def _on_begin(conn: Connection) -> None:
    _after_commit(conn.info)


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    _after_commit(record.info)


def watch() -> None:
    """Listen on every engine of the process (idempotent)."""
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    event.listen(Engine, "before_cursor_execute", _on_statement)
    event.listen(Engine, "commit", _on_commit)
    event.listen(Engine, "rollback", _on_rollback)
    event.listen(Engine, "begin", _on_begin)
    event.listen(Pool, "checkin", _on_checkin)
