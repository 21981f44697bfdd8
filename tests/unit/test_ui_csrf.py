"""CSRF tokens, the login nonce and the Origin check of the dashboard (optimizer/ui/csrf.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from optimizer.ui.csrf import csrf_for, csrf_ok, new_nonce, nonce_ok, origin_ok


def test_the_csrf_token_is_the_hmac_of_the_session_token():
    token = "s3ss10n-tökén"
    expected = hmac.new(token.encode(), b"ui-csrf", hashlib.sha256).hexdigest()
    assert csrf_for(token) == expected
    assert csrf_ok(token, expected)


def test_another_sessions_token_or_a_missing_one_is_refused():
    assert not csrf_ok("session-a", csrf_for("session-b"))
    assert not csrf_ok("session-a", None)
    assert not csrf_ok("session-a", "")
    assert not csrf_ok("session-a", csrf_for("session-a")[:-1])
    assert not csrf_ok("session-a", csrf_for("session-a").upper())


def test_undecodable_or_hostile_input_is_refused_without_raising():
    assert not csrf_ok("session-a", "\udcff" * 64)
    assert not csrf_ok("session-a", "<script>alert(1)</script>")
    assert not nonce_ok("\udcff", "\udcff ")


def test_nonces_are_fresh_and_long():
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) >= 40 for n in nonces)


def test_the_nonce_must_be_the_same_in_cookie_and_field():
    nonce = new_nonce()
    assert nonce_ok(nonce, nonce)
    assert not nonce_ok(nonce, new_nonce())
    assert not nonce_ok(None, nonce)
    assert not nonce_ok(nonce, None)
    assert not nonce_ok("", "")


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "127.0.0.1:8081", True),  # no Origin: older browsers; SameSite still applies
        ("http://127.0.0.1:8081", "127.0.0.1:8081", True),
        ("https://Dash.Example.com", "dash.example.com", True),  # TLS proxy in front
        ("http://evil.example", "127.0.0.1:8081", False),
        ("http://127.0.0.1:8082", "127.0.0.1:8081", False),
        ("null", "127.0.0.1:8081", False),  # sandboxed frames and file:// pages
        ("", "127.0.0.1:8081", False),
        ("http://127.0.0.1:8081", None, False),
        ("http://[::1", "127.0.0.1", False),  # unparsable
    ],
)
def test_origin_must_name_the_host(origin, host, ok):
    assert origin_ok(origin, host) is ok
