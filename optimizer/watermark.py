"""Reading the conversations stored since a mark, every row exactly once, on both databases.

The rollups (optimizer.experiments.rollup, optimizer.patterns.rollup) add up new rows in
passes; a pass reads [previous mark, mark_now()) and stores mark_now() as the next mark.

- PostgreSQL: each row carries the id of the transaction that stored it (`commit_order`,
  pg_current_xact_id(), a 64-bit counter that never wraps). Transactions commit out of
  order, so row ids are no watermark there; but every transaction id below the oldest still
  running one (pg_snapshot_xmin) belongs to a finished transaction, so all its rows are
  visible to the next statement. Rows stored before revision 0006 carry NULL and are read by
  a first pass (no previous mark). An idle transaction left open holds xmin back, and with
  it the rollups: they then lag, never count wrong.
- SQLite: one writer at a time, so row ids are in commit order; the mark is max(id) + 1.

Rows must be added through ingest or any INSERT that leaves commit_order to its default.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, text, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.conversations import Conversation as C

_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


def mark_now(session: Session) -> int:
    """The mark a pass may read up to (exclusive)."""
    if session.get_bind().dialect.name == "postgresql":
        return int(session.scalar(text(_XMIN)))
    return int(session.scalar(select(func.coalesce(func.max(C.id), 0))) or 0) + 1


def order_column(dialect: str) -> Any:
    return C.commit_order if dialect == "postgresql" else C.id


def stored_between(
    dialect: str, since: Any, until: Any, *, within: tuple[Any, Any] | None = None
) -> ColumnElement[bool]:
    """Rows stored from mark `since` (None: from the start) up to mark `until` (numbers,
    or bind parameters for a statement built once); with `within` = (column, value), only
    rows whose column has that value, read through the (column, order) index."""
    order = order_column(dialect)
    if since is None:
        new = or_(order.is_(None), order < until)
        return new if within is None else and_(within[0] == within[1], new)
    if within is None:
        return and_(order >= since, order < until)
    column, value = within
    if dialect != "postgresql":
        return and_(column == value, order >= since, order < until)
    # Row comparisons only the (column, order) index answers: PostgreSQL's planner, misled by
    # the correlated statistics of a busy table, would otherwise scan every new row.
    return and_(
        column == value,
        tuple_(column, order) >= tuple_(value, since),
        tuple_(column, order) < tuple_(value, until),
    )


def not_read_yet(dialect: str, within: tuple[Any, Any], mark: Any) -> ColumnElement[bool]:
    """Rows whose `within` = (column, value) matches that a rollup with `mark` (a scalar SQL
    expression; NULL: no pass yet) has not read, through the (column, order) index."""
    column, value = within
    order = order_column(dialect)
    since = func.coalesce(mark, 0)
    if dialect != "postgresql":
        return and_(column == value, order >= since)
    after = and_(column == value, tuple_(column, order) >= tuple_(value, since))
    # Rows stored before revision 0006 (no commit order) are read by a first pass.
    return or_(after, and_(column == value, order.is_(None), mark.is_(None)))
