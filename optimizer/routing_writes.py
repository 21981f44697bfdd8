"""This process's own commits that may change routing, counted as they happen.

A replica learns of other processes' changes from the routing stamp and NOTIFY
(optimizer.routing_refresh), within a fraction of a second. Its own changes it learns at
once: every SQLAlchemy connection of the process reports here when it commits a
transaction that wrote to a table resolve reads (an admin route, a job's promotion, a test
seeding rows, a plain-SQL `text()` statement alike). `generation()` then rises, and the
next resolve in this process waits for a snapshot read after that commit: a caller never
resolves against routing older than its own write.

The check reads the statement's first words only (the verb and the table it writes), so
it costs next to nothing on the statements of the hot path (ingest); an UPDATE of a
routing table counts only when it sets a column resolve reads (ROUTING_COLUMNS), so an
experiment check, which updates its rollup watermark and caps, does not count. A write it
cannot see (autocommit mode, a driver connection used directly) is still caught by the
stamp. The generation rises only once the commit succeeded (a failed commit is not a
change).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.pool import Pool

# Per table, the columns whose change can change some unit's answer: the lists of
# migration 0007's WATCHED, whose triggers move the stamp on a change of these only. Keep
# the two equal (tests/integration/test_routing_snapshot.py compares this with the
# triggers in the database).
ROUTING_COLUMNS: dict[str, frozenset[str]] = {
    "prompts": frozenset({"id", "name"}),
    "ai_prompt_versions": frozenset({"id", "prompt_id", "version", "content", "status"}),
    "ai_ab_experiments": frozenset({"id", "prompt_id", "status"}),
    "ai_ab_experiment_arms": frozenset(
        {"id", "experiment_id", "version_id", "is_control", "weight", "status"}
    ),
}
ROUTING_TABLES = frozenset(ROUTING_COLUMNS)
_WRITE = re.compile(
    r"\s*(insert\s+(?:or\s+\w+\s+)?into|update(?:\s+or\s+\w+)?|delete\s+from"
    r'|truncate(?:\s+table)?)(?:\s+only)?\s+(?:"?\w+"?\.)?"?(\w+)"?',
    re.IGNORECASE,
)
# Statements that may write anywhere inside them (a CTE, MERGE): look at every table named.
_COMPOUND = re.compile(r"\s*(?:with|merge)\b", re.IGNORECASE)
_NAMED = re.compile(r"\b(" + "|".join(sorted(ROUTING_TABLES)) + r")\b", re.IGNORECASE)
# The SET list of an UPDATE as SQLAlchemy renders it, or a person types it: `column =` a
# bound parameter (qmark, pyformat, named or numeric, with a PostgreSQL cast as psycopg's
# dialect renders them) or a literal. Anything else is not understood, so it counts.
_END = r"(?:where|returning|from)\b"
_VALUE = (
    r"(?:(?:\?|%\(\w+\)s|:\w+|\$\d+)"
    rf"(?:::\w+(?:\s+(?!{_END})\w+)*(?:\(\s*\d+(?:\s*,\s*\d+)?\s*\))?(?:\[\])*)?"
    r"|null|true|false|-?\d+(?:\.\d+)?|'(?:[^']|'')*')"
)
_SET = re.compile(r"\s+set\b", re.IGNORECASE)
_ASSIGNMENT = re.compile(rf'\s*"?(\w+)"?\s*=\s*{_VALUE}\s*(,|{_END}|;?\s*$)', re.IGNORECASE)

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
        table = match.group(2).lower()
        if table not in ROUTING_TABLES:
            return False
        if match.group(1).lower().startswith("update"):
            columns = _set_columns(statement, match.end())
            return columns is None or not columns.isdisjoint(ROUTING_COLUMNS[table])
        return True
    return _COMPOUND.match(statement) is not None and _NAMED.search(statement) is not None


def _set_columns(statement: str, start: int) -> set[str] | None:
    """The columns an UPDATE's SET list assigns, from `start` (after the table name); None
    when the list is not of the simple shape _ASSIGNMENT knows."""
    set_keyword = _SET.match(statement, start)
    if set_keyword is None:
        return None
    columns: set[str] = set()
    position = set_keyword.end()
    while True:
        assignment = _ASSIGNMENT.match(statement, position)
        if assignment is None:
            return None
        columns.add(assignment.group(1).lower())
        if assignment.group(2) != ",":
            return columns
        position = assignment.end()


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
    # Runs just before the driver's commit: the generation rises once it succeeded (at the
    # connection's next use or return to the pool), never here.
    if conn.info.get(_STATE) == _WRITTEN:
        conn.info[_STATE] = _COMMITTED


def _on_error(context: ExceptionContext) -> None:
    # The commit (or anything after it, before the next begin) failed: nothing committed.
    conn = context.connection
    if conn is None or conn.invalidated or conn.closed:
        return
    if conn.info.get(_STATE) == _COMMITTED:
        del conn.info[_STATE]


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
    event.listen(Engine, "handle_error", _on_error)
    event.listen(Engine, "begin", _on_begin)
    event.listen(Pool, "checkin", _on_checkin)
