"""Rows into a PostgreSQL table with COPY, inside the caller's SQLAlchemy transaction.

COPY skips what an INSERT pays per row (a statement to parse, plan and answer; SQLAlchemy's
and psycopg's per-row bookkeeping), and runs on the connection SQLAlchemy already holds, so
it commits or rolls back with everything else the transaction writes. Columns are always
named: a column this caller does not know (one with a server default) keeps its default.

Errors come out as SQLAlchemy's exception types, as an INSERT's would: an IntegrityError for
a broken constraint, an OperationalError for a lost connection (then invalidated, so the pool
drops it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError


def available(conn: Connection) -> bool:
    """COPY is used on PostgreSQL through psycopg 3; anything else inserts as before."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def copy_rows(
    conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """COPY `rows` (each a sequence of values in `columns` order) into `table`."""
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        lost = driver.broken or driver.closed
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            statement.as_string(driver),
            None,
            exc,
            psycopg.Error,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from exc
