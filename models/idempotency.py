"""Idempotency keys of accepted conversation batches, kept while a retry may still come."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UtcDateTime


class IdempotencyKey(Base):
    """One row per Idempotency-Key of a stored batch, written in the batch's transaction.
    The primary key makes the key atomic on every replica: a second batch with the same key
    cannot commit beside the first."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))  # hex digest of the raw body bytes
    accepted: Mapped[int] = mapped_column(Integer)  # the 202 answer's count, replayed as is
    # After this a retry is a new batch: the row may go.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
