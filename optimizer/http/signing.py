"""Optional HMAC-signed admin requests (ADMIN_HMAC_SECRET), on top of the bearer token.

A signed request carries two headers:

    X-Timestamp: <unix seconds>
    X-Signature: sha256=<hex of HMAC-SHA256(secret, message)>

    message = f"{timestamp}.{METHOD}.{path_qs}.".encode() + raw body bytes

`path_qs` is the request target exactly as sent on the request line: the path plus "?query"
when there is one, percent-encoded as on the wire (for example `/jobs?status=pending`). A
proxy that rewrites paths must be configured to keep them, or signatures will not match.

A signature is accepted once, across restarts and across replicas sharing the database:
each accepted signature is recorded in the used_signatures table, where the primary key
refuses a second copy. The insert is atomic on SQLite and PostgreSQL, so of two requests
carrying one signature, to the same replica or to two, exactly one goes through. Rows are
kept one window past the last moment their timestamp is accepted (replicas' clocks may
disagree by that much) and deleted by a later signed request. When the database does not
answer, signed requests are refused with 503 (fail closed), never let through unchecked.
Two identical requests in the same second carry the same signature, so the second is
refused as a replay: send it again with a new timestamp.

`SignatureVerifier` is the pure logic (clock injected), `remember_signature` the database
write, and `check_admin_signature` the aiohttp glue called by the admin guard in
optimizer.http.auth.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models.signatures import UsedSignature
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.http.errors import ApiError
from optimizer.http.keys import ENGINE

TIMESTAMP_HEADER = "X-Timestamp"
SIGNATURE_HEADER = "X-Signature"
SCHEME = "sha256="
_HEX_DIGITS = frozenset("0123456789abcdef")
# Ten digits cover unix time until the year 2286; more is garbage, not a clock.
_MAX_TIMESTAMP_DIGITS = 12


def signing_message(method: str, path_qs: str, body: bytes, timestamp: int | str) -> bytes:
    return f"{timestamp}.{method.upper()}.{path_qs}.".encode() + body


def compute_signature(
    secret: str | bytes, method: str, path_qs: str, body: bytes, timestamp: int | str
) -> str:
    """The hex HMAC-SHA256 that goes after "sha256=" in X-Signature."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(
        key, signing_message(method, path_qs, body, timestamp), hashlib.sha256
    ).hexdigest()


def sign(
    secret: str | bytes, method: str, path_qs: str, body: bytes = b"", timestamp: int | None = None
) -> dict[str, str]:
    """Headers that sign one admin request (for clients and tests)."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    digest = compute_signature(secret, method, path_qs, body, stamp)
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: SCHEME + digest}


class SignatureRejected(Exception):
    """Why a request's signature was refused (401); `header` names the header at fault."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header


@dataclass(frozen=True)
class FreshSignature:
    """A correctly signed, fresh request's signature, still to be recorded as used."""

    digest: str
    expires_at: datetime  # from then on no replica accepts its timestamp


class SignatureVerifier:
    """Checks that a request is correctly signed and fresh; the database says whether new."""

    def __init__(
        self, secret: str | bytes, window_seconds: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not secret:
            raise ValueError("an HMAC secret is required")
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._window = window_seconds
        self._clock = clock

    def verify(
        self, method: str, path_qs: str, body: bytes, timestamp: str | None, signature: str | None
    ) -> FreshSignature:
        """The signature when the request is correctly signed and fresh; else raise
        SignatureRejected. The expected signature is never part of a message."""
        stamp = self._parse_timestamp(timestamp)
        given = self._parse_signature(signature)
        skew = self._clock() - stamp
        if abs(skew) > self._window:
            side = "old" if skew > 0 else "in the future"
            raise SignatureRejected(
                TIMESTAMP_HEADER,
                f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s {side}, outside the allowed window "
                f"of {self._window:g} s (ADMIN_SIGNATURE_WINDOW_SECONDS): sign each request "
                "with the current unix time and check the client's clock",
            )
        # The header text, not int(stamp): the client signed the digits it sent.
        expected = compute_signature(self._secret, method, path_qs, body, (timestamp or "").strip())
        if not hmac.compare_digest(given, expected):
            raise SignatureRejected(
                SIGNATURE_HEADER,
                f"{SIGNATURE_HEADER} does not match this request: sign "
                f"'<{TIMESTAMP_HEADER}>.<METHOD>.<path?query>.' followed by the raw body "
                "with HMAC-SHA256 and ADMIN_HMAC_SECRET",
            )
        # One window past the last accepted moment: a replica whose clock runs up to a
        # window behind this one still finds the row.
        return FreshSignature(given, datetime.fromtimestamp(stamp + 2 * self._window, UTC))

    @staticmethod
    def _parse_timestamp(raw: str | None) -> int:
        if raw is None or not raw.strip():
            raise SignatureRejected(
                TIMESTAMP_HEADER,
                f"missing {TIMESTAMP_HEADER} header: signed admin requests are required "
                "(ADMIN_HMAC_SECRET is set); send the current unix time in seconds",
            )
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > _MAX_TIMESTAMP_DIGITS:
            raise SignatureRejected(
                TIMESTAMP_HEADER,
                f"{TIMESTAMP_HEADER} must be unix time in whole seconds (digits only); "
                f"got {text[:40]!r}",
            )
        return int(text)

    @staticmethod
    def _parse_signature(raw: str | None) -> str:
        if raw is None or not raw.strip():
            raise SignatureRejected(
                SIGNATURE_HEADER,
                f"missing {SIGNATURE_HEADER} header: signed admin requests are required "
                f"(ADMIN_HMAC_SECRET is set); send '{SIGNATURE_HEADER}: sha256=<hex "
                "HMAC-SHA256>'",
            )
        text = raw.strip()
        digest = text[len(SCHEME) :].lower() if text.lower().startswith(SCHEME) else ""
        if len(digest) != 64 or not set(digest) <= _HEX_DIGITS:
            raise SignatureRejected(
                SIGNATURE_HEADER,
                f"{SIGNATURE_HEADER} must be 'sha256=' followed by 64 hex digits; "
                f"got {text[:80]!r}",
            )
        return digest


def remember_signature(engine: Engine, signature: FreshSignature, *, now: datetime) -> bool:
    """Record `signature` as used; False when it already was (a replay). Also deletes the
    rows whose time has passed, so the table holds only the last few windows' signatures."""
    try:
        with engine.begin() as conn:
            conn.execute(delete(UsedSignature).where(UsedSignature.expires_at < now))
            conn.execute(
                insert(UsedSignature).values(
                    digest=signature.digest, expires_at=signature.expires_at
                )
            )
    except IntegrityError:  # the primary key: recorded before, here or on another replica
        return False
    return True


ADMIN_SIGNATURES = web.AppKey("admin_signatures", SignatureVerifier)


def install(app: web.Application, settings: Settings) -> None:
    """Create the verifier when ADMIN_HMAC_SECRET is set."""
    if settings.admin_hmac_secret:
        app[ADMIN_SIGNATURES] = SignatureVerifier(
            settings.admin_hmac_secret, settings.admin_signature_window_seconds
        )


async def check_admin_signature(request: web.Request) -> None:
    """Raise ApiError unless the request is signed, when signing is configured. A database
    that does not answer propagates as such: the error middleware answers 503."""
    verifier = request.app.get(ADMIN_SIGNATURES)
    if verifier is None:
        return
    # read() caches the body, so the handler reads the same bytes again; an oversized
    # body raises here and is answered as a 413.
    body = await request.read()
    try:
        fresh = verifier.verify(
            request.method,
            request.raw_path,
            body,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
        )
    except SignatureRejected as exc:
        raise ApiError(401, str(exc), field=exc.header) from None
    if not await asyncio.to_thread(remember_signature, request.app[ENGINE], fresh, now=utcnow()):
        raise ApiError(
            401,
            f"{SIGNATURE_HEADER} was already used: a signed request is "
            f"accepted once; send it again with a new {TIMESTAMP_HEADER} "
            "and signature",
            field=SIGNATURE_HEADER,
        )
