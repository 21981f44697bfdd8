"""Idempotency keys for conversation batches: a retry with the same key and body is answered
from the database instead of being stored again.

The key's row goes in with the batch, in its transaction (`remember`), so a batch is never
stored without its key or its key without the batch. Its primary key settles a race between
replicas: a second transaction inserting the same key waits on PostgreSQL (on SQLite, on the
database lock) until the first ends, then fails if the first committed, and the caller
answers from the stored row instead (`stored_answer`). Rows are kept `KEPT` and deleted as
new keys arrive, on whichever replica takes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.idempotency import IdempotencyKey
from optimizer.db import read_only
from optimizer.errors import Conflict, InvalidInput

HEADER = "Idempotency-Key"
MAX_LENGTH = 200
KEPT = timedelta(hours=24)


@dataclass(frozen=True)
class Claim:
    """A request's key and the identity of its body (sha256 of the raw bytes)."""

    key: str
    body_sha256: str


class KeyReused(Conflict):
    """The key was used for a different body within KEPT."""


class KeyTaken(Exception):
    """Another transaction stored a batch with this key first (internal to ingest)."""


def claim(values: list[str], body: bytes) -> Claim | None:
    """The request's claim from its Idempotency-Key header values; None without the header."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInput(f"{HEADER} is sent {len(values)} times; send it once", field=HEADER)
    key = values[0]
    if not 1 <= len(key) <= MAX_LENGTH or not (key.isascii() and key.isprintable()):
        raise InvalidInput(
            f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters; "
            f"got {len(key)} characters"
            + ("" if key.isascii() and key.isprintable() else " with some outside that range"),
            field=HEADER,
        )
    return Claim(key, hashlib.sha256(body).hexdigest())


def stored_answer(engine: Engine, request: Claim, *, now: datetime) -> int | None:
    """The count answered to the batch stored with this key, if any within KEPT; KeyReused
    when that batch's body was another."""
    with read_only(engine).connect() as conn:  # a read: no SQLite write lock
        row = conn.execute(
            select(IdempotencyKey.body_sha256, IdempotencyKey.accepted).where(
                IdempotencyKey.key == request.key, IdempotencyKey.expires_at > now
            )
        ).first()
    if row is None:
        return None
    if row.body_sha256 != request.body_sha256:
        raise KeyReused(
            f"{HEADER} {request.key!r} was used in the last {_hours(KEPT)} h for a different "
            f"body; nothing was stored. Send a new batch with a new {HEADER}, or retry "
            "with exactly the bytes first sent"
        )
    return int(row.accepted)


def remember(conn: Connection, request: Claim, accepted: int, *, now: datetime) -> None:
    """Record the key inside the batch's transaction; KeyTaken when another batch holds it.
    Expired rows go first, so the table holds about KEPT worth of keys."""
    conn.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    try:
        conn.execute(
            insert(IdempotencyKey).values(
                key=request.key,
                body_sha256=request.body_sha256,
                accepted=accepted,
                expires_at=now + KEPT,
            )
        )
    except IntegrityError:  # the caller's transaction, batch included, rolls back
        raise KeyTaken(request.key) from None


def _hours(span: timedelta) -> int:
    return int(span.total_seconds() // 3600)
