"""Dashboard sessions in the database (table ui_sessions), so every replica sees a login and
logging out really ends it.

The cookie carries a random token; the row's key is HMAC-SHA256(ADMIN_TOKEN, token). Expiry
is absolute (UI_SESSION_HOURS from login) and costs no write per page view.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from models.ui_sessions import UiSession
from optimizer import db

USER_AGENT_CHARS = 200  # the column's length


def session_id(admin_token: str, token: str) -> str:
    """The row key of the session whose cookie holds `token`."""
    key = admin_token.encode("utf-8", "surrogatepass")
    return hmac.new(key, token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def create(engine: Engine, admin_token: str, *, ua: str | None, now: datetime, hours: float) -> str:
    """Start a session and return the cookie's token. Expired sessions are deleted here:
    logins are rare, and the table then never holds more than the live ones plus a few."""
    token = secrets.token_urlsafe(32)
    with db.session_factory(engine).begin() as session:
        session.execute(delete(UiSession).where(UiSession.expires_at <= now))
        session.execute(
            insert(UiSession).values(
                id_hash=session_id(admin_token, token),
                created_at=now,
                expires_at=now + timedelta(hours=hours),
                user_agent=ua[:USER_AGENT_CHARS] if ua else None,
            )
        )
    return token


def lookup(engine: Engine, admin_token: str, cookie: str, now: datetime) -> bool:
    """Whether `cookie` belongs to a live session."""
    query = select(UiSession.id_hash).where(
        UiSession.id_hash == session_id(admin_token, cookie), UiSession.expires_at > now
    )
    with db.session_factory(db.read_only(engine))() as session:
        return session.execute(query).first() is not None


def revoke(engine: Engine, admin_token: str, cookie: str) -> None:
    """End the session whose cookie holds `cookie` (nothing happens if there is none)."""
    with db.session_factory(engine).begin() as session:
        session.execute(
            delete(UiSession).where(UiSession.id_hash == session_id(admin_token, cookie))
        )
