"""Dashboard logins (/ui/): one row per live session, deleted at logout or after expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import NOW, Base, UtcDateTime


class UiSession(Base):
    """The browser holds a random token in its cookie; the row holds only an HMAC of it keyed
    with ADMIN_TOKEN, so a copy of this table opens no session and cannot test guesses of the
    admin token, and a new ADMIN_TOKEN ends every session (the old ids no longer match)."""

    __tablename__ = "ui_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex HMAC-SHA256
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=NOW)
    # Absolute: the session ends then however busy it was (UI_SESSION_HOURS after login).
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    user_agent: Mapped[str | None] = mapped_column(String(200))
