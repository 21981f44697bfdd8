"""Optional HMAC-signed admin requests (ADMIN_HMAC_SECRET), on top of the bearer token.

A signed request carries two headers:

    X-Timestamp: <unix seconds>
    X-Signature: sha256=<hex of HMAC-SHA256(secret, message)>

    message = f"{timestamp}.{METHOD}.{path_qs}.".encode() + raw body bytes

`path_qs` is the request target exactly as sent on the request line: the path plus "?query"
when there is one, percent-encoded as on the wire (for example `/jobs?status=pending`). A
proxy that rewrites paths must be configured to keep them, or signatures will not match.

A signature is accepted once. Accepted signatures are remembered in memory until their
timestamp leaves the window, so replay protection is per process: replicas behind a load
balancer each keep their own memory, and a signed request could be replayed once to every
other replica within the window. Deployments that need more should pin admin traffic to
one replica. Two identical requests in the same second carry the same signature, so the
second is refused as a replay: send it again with a new timestamp.

`SignatureVerifier` is the pure logic (clock injected); `check_admin_signature` is the
aiohttp glue called by the admin guard in optimizer.http.auth.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import threading
import time
from collections.abc import Callable

from aiohttp import web

from optimizer.config import Settings
from optimizer.http.errors import ApiError

TIMESTAMP_HEADER = "X-Timestamp"
SIGNATURE_HEADER = "X-Signature"
SCHEME = "sha256="
# Enough for ~160 signed admin requests a second over the default 300 s window; the admin
# API is not a hot path. Only requests signed with the secret can fill it.
MAX_REMEMBERED = 50_000
_HEX_DIGITS = frozenset("0123456789abcdef")
# Ten digits cover unix time until the year 2286; more is garbage, not a clock.
_MAX_TIMESTAMP_DIGITS = 12


def signing_message(method: str, path_qs: str, body: bytes, timestamp: int | str) -> bytes:
    return f"{timestamp}.{method.upper()}.{path_qs}.".encode() + body


def compute_signature(secret: str | bytes, method: str, path_qs: str, body: bytes,
                      timestamp: int | str) -> str:
    """The hex HMAC-SHA256 that goes after "sha256=" in X-Signature."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, signing_message(method, path_qs, body, timestamp),
                    hashlib.sha256).hexdigest()


def sign(secret: str | bytes, method: str, path_qs: str, body: bytes = b"",
         timestamp: int | None = None) -> dict[str, str]:
    """Headers that sign one admin request (for clients and tests)."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    digest = compute_signature(secret, method, path_qs, body, stamp)
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: SCHEME + digest}


class SignatureRejected(Exception):
    """Why a request's signature was refused; `header` names the header at fault."""

    def __init__(self, header: str, message: str, *, status: int = 401,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.header = header
        self.status = status
        self.retry_after = retry_after


class SignatureVerifier:
    """Checks signed requests and refuses each accepted signature a second time."""

    def __init__(self, secret: str | bytes, window_seconds: float, *,
                 clock: Callable[[], float] = time.time,
                 max_remembered: int = MAX_REMEMBERED) -> None:
        if not secret:
            raise ValueError("an HMAC secret is required")
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._window = window_seconds
        self._clock = clock
        self._max = max_remembered
        self._seen: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []
        # aiohttp calls this from one event loop, but a lock keeps the class honest if the
        # admin guard ever runs in threads.
        self._lock = threading.Lock()

    @property
    def remembered(self) -> int:
        return len(self._seen)

    def verify(self, method: str, path_qs: str, body: bytes, timestamp: str | None,
               signature: str | None) -> None:
        """Return when the request is correctly signed, fresh and new; else raise
        SignatureRejected. The expected signature is never part of a message."""
        stamp = self._parse_timestamp(timestamp)
        given = self._parse_signature(signature)
        now = self._clock()
        skew = now - stamp
        if abs(skew) > self._window:
            side = "old" if skew > 0 else "in the future"
            raise SignatureRejected(
                TIMESTAMP_HEADER,
                f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s {side}, outside the allowed window "
                f"of {self._window:g} s (ADMIN_SIGNATURE_WINDOW_SECONDS): sign each request "
                "with the current unix time and check the client's clock")
        # The header text, not int(stamp): the client signed the digits it sent.
        expected = compute_signature(self._secret, method, path_qs, body,
                                     (timestamp or "").strip())
        if not hmac.compare_digest(given, expected):
            raise SignatureRejected(
                SIGNATURE_HEADER,
                f"{SIGNATURE_HEADER} does not match this request: sign "
                f"'<{TIMESTAMP_HEADER}>.<METHOD>.<path?query>.' followed by the raw body "
                "with HMAC-SHA256 and ADMIN_HMAC_SECRET")
        self._remember(given, stamp + self._window, now)

    def _remember(self, digest: str, expires_at: float, now: float) -> None:
        with self._lock:
            self._forget_expired(now)
            if digest in self._seen:
                raise SignatureRejected(
                    SIGNATURE_HEADER,
                    f"{SIGNATURE_HEADER} was already used: a signed request is accepted "
                    f"once; send it again with a new {TIMESTAMP_HEADER} and signature")
            if len(self._seen) >= self._max:
                # Forgetting an unexpired signature would let it be replayed: refuse
                # instead until the oldest one expires.
                wait = max(1, math.ceil(self._expiries[0][0] - now))
                raise SignatureRejected(
                    SIGNATURE_HEADER,
                    f"too many signed admin requests in the last {self._window:g} s "
                    f"(at most {self._max} are remembered for replay protection); "
                    f"retry after {wait} s", status=429, retry_after=wait)
            self._seen[digest] = expires_at
            heapq.heappush(self._expiries, (expires_at, digest))

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, digest = heapq.heappop(self._expiries)
            self._seen.pop(digest, None)

    @staticmethod
    def _parse_timestamp(raw: str | None) -> int:
        if raw is None or not raw.strip():
            raise SignatureRejected(
                TIMESTAMP_HEADER,
                f"missing {TIMESTAMP_HEADER} header: signed admin requests are required "
                "(ADMIN_HMAC_SECRET is set); send the current unix time in seconds")
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > _MAX_TIMESTAMP_DIGITS:
            raise SignatureRejected(
                TIMESTAMP_HEADER,
                f"{TIMESTAMP_HEADER} must be unix time in whole seconds (digits only); "
                f"got {text[:40]!r}")
        return int(text)

    @staticmethod
    def _parse_signature(raw: str | None) -> str:
        if raw is None or not raw.strip():
            raise SignatureRejected(
                SIGNATURE_HEADER,
                f"missing {SIGNATURE_HEADER} header: signed admin requests are required "
                f"(ADMIN_HMAC_SECRET is set); send '{SIGNATURE_HEADER}: sha256=<hex "
                "HMAC-SHA256>'")
        text = raw.strip()
        digest = text[len(SCHEME):].lower() if text.lower().startswith(SCHEME) else ""
        if len(digest) != 64 or not set(digest) <= _HEX_DIGITS:
            raise SignatureRejected(
                SIGNATURE_HEADER,
                f"{SIGNATURE_HEADER} must be 'sha256=' followed by 64 hex digits; "
                f"got {text[:80]!r}")
        return digest


ADMIN_SIGNATURES = web.AppKey("admin_signatures", SignatureVerifier)


def install(app: web.Application, settings: Settings) -> None:
    """Create the per-process verifier when ADMIN_HMAC_SECRET is set."""
    if settings.admin_hmac_secret:
        app[ADMIN_SIGNATURES] = SignatureVerifier(settings.admin_hmac_secret,
                                                  settings.admin_signature_window_seconds)


async def check_admin_signature(request: web.Request) -> None:
    """Raise ApiError unless the request is signed, when signing is configured."""
    verifier = request.app.get(ADMIN_SIGNATURES)
    if verifier is None:
        return
    # read() caches the body, so the handler reads the same bytes again; an oversized
    # body raises here and is answered as a 413.
    body = await request.read()
    try:
        verifier.verify(request.method, request.raw_path, body,
                        request.headers.get(TIMESTAMP_HEADER),
                        request.headers.get(SIGNATURE_HEADER))
    except SignatureRejected as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        raise ApiError(exc.status, str(exc), field=exc.header, headers=headers) from None
