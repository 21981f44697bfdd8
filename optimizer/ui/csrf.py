"""Tokens that tie a POST to the dashboard's own pages (pure: no I/O).

A session's CSRF token is derived from its cookie token, so it needs no column and changes
with every login. The login form has no session yet: it uses a random nonce sent both as a
cookie and as a hidden field (double submit), which another site can neither read nor set.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

CSRF_MESSAGE = b"ui-csrf"


def _as_bytes(text: str) -> bytes:
    # surrogatepass: a field with undecodable bytes must fail the check, not raise.
    return text.encode("utf-8", "surrogatepass")


def csrf_for(token: str) -> str:
    """The CSRF token of the session whose cookie holds `token`."""
    return hmac.new(_as_bytes(token), CSRF_MESSAGE, hashlib.sha256).hexdigest()


def csrf_ok(token: str, sent: str | None) -> bool:
    """Whether `sent` (the form's field) is the session's CSRF token, in constant time."""
    if not sent:
        return False
    return hmac.compare_digest(_as_bytes(csrf_for(token)), _as_bytes(sent))


def new_nonce() -> str:
    """A fresh login nonce."""
    return secrets.token_urlsafe(32)


def nonce_ok(cookie: str | None, sent: str | None) -> bool:
    """Whether the login form's hidden nonce equals its cookie (both present)."""
    if not cookie or not sent:
        return False
    return hmac.compare_digest(_as_bytes(cookie), _as_bytes(sent))


def origin_ok(origin: str | None, host: str | None) -> bool:
    """A POST's Origin must name the host it was sent to. No Origin header passes: older
    browsers omit it, and the SameSite=Strict cookie already keeps other sites out. The
    scheme is not compared: behind a TLS proxy the service itself sees plain HTTP."""
    if origin is None:
        return True
    if not host:
        return False
    try:
        netloc = urlsplit(origin.strip()).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.strip().lower()
