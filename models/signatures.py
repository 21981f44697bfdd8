"""Signatures of accepted signed admin requests, kept while a replay of one could arrive."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UtcDateTime


class UsedSignature(Base):
    """One row per accepted X-Signature. The primary key makes recording it atomic on every
    replica sharing the database: a second insert of the same digest is a replay."""

    __tablename__ = "used_signatures"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex HMAC-SHA256
    # After this the request's timestamp is outside every replica's window: the row may go.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
