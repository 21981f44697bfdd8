"""The /ui/ dashboard's shell on SQLite and PostgreSQL, through the real app: login and
logout, the session cookie, expiry and token rotation, the throttle, UI_ACCESS with and
without ADMIN_HMAC_SECRET, CSRF and Origin checks, the read-only refusal, `next=` kept local,
and HTML error pages with the security headers.

The pages themselves belong to other modules; these tests mount two test-only routes (a
page and an action) through ROUTE_MODULES, as a route module would.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
import types
from collections.abc import Callable
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from yarl import URL

from models.ui_sessions import UiSession
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from optimizer.ui import app as ui_app
from optimizer.ui import routes_auth, sessions
from optimizer.ui.web import act, form, page
from tests.support.http_client import ADMIN_TOKEN, INGEST_TOKEN, ClientMaker
from tests.support.ui_client import (
    COOKIE,
    assert_html_page,
    csrf_of,
    logged_in,
    login_answer,
    nonce_of,
    session_cookie,
    signed_in,
)

# --- test-only routes -------------------------------------------------------------------

DONE: list[str] = []
FAILURES: dict[str, Callable[[], Exception]] = {
    "invalid": lambda: InvalidInput("priority must be a whole number; got 'high'", "priority"),
    "missing": lambda: NotFound("no job 99"),
    "conflict": lambda: Conflict("job 3 has already finished"),
    "outage": lambda: DatabaseUnavailable("connection refused by db.internal:5432 user=pw"),
    "boom": lambda: RuntimeError("secret detail /srv/app.py line 12"),
}


def _count_sessions(session: Session) -> dict[str, object]:
    n = session.scalar(select(func.count()).select_from(UiSession))
    return {"status": 200, "title": "Test page", "message": f"sessions: {n}", "field": None}


async def _test_page(request: web.Request) -> web.Response:
    return await page(request, "error.html", _count_sessions, section="jobs")


async def _test_act(request: web.Request) -> web.Response:
    fields = await form(request)
    what = fields.get("what", "ok")

    def work(engine: Engine) -> None:
        if what in FAILURES:
            raise FAILURES[what]()
        DONE.append(what)

    return await act(request, work, done="/ui/test-page?x=1", notice="job-added")


TEST_ROUTES = types.ModuleType("ui_test_routes")
TEST_ROUTES.add_routes = lambda ui: (  # type: ignore[attr-defined]
    ui.router.add_get("/test-page", _test_page),
    ui.router.add_post("/test-act", _test_act),
)


@pytest.fixture(autouse=True)
def test_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_app, "ROUTE_MODULES", (*ui_app.ROUTE_MODULES, TEST_ROUTES))
    DONE.clear()


def session_rows(engine: Engine) -> list[UiSession]:
    with session_factory(engine)() as session:
        return list(session.scalars(select(UiSession)))


# --- login ------------------------------------------------------------------------------


async def test_a_page_without_a_session_redirects_to_login_with_next(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    answer = await client.get("/ui/test-page?a=1&b=ü", allow_redirects=False)
    assert answer.status == 303
    location = answer.headers["Location"]
    assert location.startswith("/ui/login?next=")
    page_ = await client.get(location)
    assert page_.status == 200
    text = await page_.text()
    assert_html_page(text, page_.headers)
    # The login form sends the path back, escaped in the hidden field.
    assert 'name="next" value="/ui/test-page?a=1&amp;b=' in text
    assert "/ui/logout" not in text  # no nav before login


async def test_login_sets_a_strict_http_only_cookie_and_stores_only_its_hmac(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    form_page = await client.get("/ui/login")
    nonce_cookie = form_page.cookies["pw_ui_login"]
    assert nonce_cookie["path"] == "/ui/login"
    assert nonce_cookie["httponly"] and nonce_cookie["samesite"] == "Strict"
    assert not nonce_cookie["secure"]
    before = utcnow()
    answer = await client.post(
        "/ui/login",
        data={"token": ADMIN_TOKEN, "nonce": nonce_of(await form_page.text())},
        headers={"User-Agent": "Mozilla/5.0 <tëst> " + "x" * 300},
        allow_redirects=False,
    )
    assert answer.status == 303
    assert answer.headers["Location"] == "/ui/"
    cookie = answer.cookies[COOKIE]
    assert cookie["path"] == "/ui/"
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert cookie["max-age"] == str(8 * 3600)
    assert not cookie["secure"]
    assert answer.cookies["pw_ui_login"].value == ""  # the nonce is spent
    [row] = session_rows(engine)
    token = cookie.value
    assert len(token) >= 40
    assert row.id_hash == hmac.new(ADMIN_TOKEN.encode(), token.encode(), hashlib.sha256).hexdigest()
    assert token not in row.id_hash
    assert row.user_agent is not None and row.user_agent.startswith("Mozilla/5.0 <tëst> ")
    assert len(row.user_agent) == 200
    assert before + timedelta(hours=8) <= row.expires_at <= utcnow() + timedelta(hours=8)
    page_ = await client.get("/ui/test-page")
    assert page_.status == 200
    assert "sessions: 1" in await page_.text()


async def test_cookies_are_secure_when_configured(engine: Engine, make_client: ClientMaker) -> None:
    client = await make_client(engine, ui_secure_cookies=True, ui_session_hours=0.5)
    form_page = await client.get("/ui/login")
    assert form_page.cookies["pw_ui_login"]["secure"]
    # The client's jar keeps Secure cookies off plain HTTP, as browsers do: send it by hand.
    nonce = nonce_of(await form_page.text())
    answer = await client.post(
        "/ui/login",
        data={"token": ADMIN_TOKEN, "nonce": nonce},
        headers={"Cookie": f"pw_ui_login={nonce}"},
        allow_redirects=False,
    )
    assert answer.status == 303
    assert answer.cookies[COOKIE]["secure"]
    assert answer.cookies[COOKIE]["max-age"] == "1800"


async def test_the_ingest_token_is_refused_with_a_clear_message(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    answer = await login_answer(client, INGEST_TOKEN)
    assert answer.status == 403
    text = await answer.text()
    assert_html_page(text, answer.headers)
    assert "INGEST_TOKEN" in text and "ADMIN_TOKEN" in text
    assert INGEST_TOKEN not in text and ADMIN_TOKEN not in text
    assert COOKIE not in answer.cookies
    assert session_rows(engine) == []
    assert 'name="nonce"' in text  # the form is shown again, ready for another try


@pytest.mark.parametrize("token", ["wrong-token", ADMIN_TOKEN + "x", "<script>x</script>", "ü"])
async def test_a_wrong_token_is_refused(engine: Engine, make_client: ClientMaker, token) -> None:
    client = await make_client(engine)
    answer = await login_answer(client, token)
    assert answer.status == 403
    text = await answer.text()
    assert "does not match ADMIN_TOKEN" in text
    assert "<script>x</script>" not in text
    assert session_rows(engine) == []


async def test_an_empty_token_asks_for_one(engine: Engine, make_client: ClientMaker) -> None:
    client = await make_client(engine)
    answer = await login_answer(client, "  ")
    assert answer.status == 400
    assert "Enter the admin token" in await answer.text()


async def test_a_login_without_its_nonce_is_refused(engine: Engine, make_client: ClientMaker):
    client = await make_client(engine)
    await client.get("/ui/login")
    for data in ({"token": ADMIN_TOKEN}, {"token": ADMIN_TOKEN, "nonce": "forged"}):
        answer = await client.post("/ui/login", data=data, allow_redirects=False)
        assert answer.status == 403
        assert "reload the page" in await answer.text()
    assert session_rows(engine) == []
    # A client that never loaded the form has no nonce cookie at all.
    other = await make_client(engine)
    answer = await other.post(
        "/ui/login", data={"token": ADMIN_TOKEN, "nonce": "x"}, allow_redirects=False
    )
    assert answer.status == 403


async def test_ten_failures_throttle_the_address_even_for_the_right_token(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    for _ in range(5):
        assert (await login_answer(client, "wrong")).status == 403
        assert (await login_answer(client, INGEST_TOKEN)).status == 403
    answer = await login_answer(client, ADMIN_TOKEN)
    assert answer.status == 429
    assert 1 <= int(answer.headers["Retry-After"]) <= 300
    text = await answer.text()
    assert_html_page(text, answer.headers)
    assert "Too many failed logins" in text
    assert session_rows(engine) == []


@pytest.mark.parametrize(
    ("next_path", "location"),
    [
        ("/ui/test-page?x=ü&y=2", "/ui/test-page?x=ü&y=2"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui//evil.example", "/ui/"),
        ("/ui/../admin", "/ui/"),
        ("/\\evil.example", "/ui/"),
        ("javascript:alert(1)", "/ui/"),
        ("", "/ui/"),
    ],
)
async def test_next_stays_inside_the_dashboard(
    engine: Engine, make_client: ClientMaker, next_path: str, location: str
) -> None:
    client = await make_client(engine)
    answer = await login_answer(client, ADMIN_TOKEN, next_path=next_path)
    assert answer.status == 303
    assert answer.headers["Location"] == location


# --- sessions end -------------------------------------------------------------------------


async def test_logout_deletes_the_session(engine: Engine, make_client: ClientMaker) -> None:
    client = await make_client(engine)
    csrf = await logged_in(client, ADMIN_TOKEN)
    token = session_cookie(client)
    assert len(session_rows(engine)) == 1
    answer = await client.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/ui/login?notice=logged-out"
    assert answer.cookies[COOKIE].value == ""
    assert session_rows(engine) == []
    login_page = await client.get("/ui/login?notice=logged-out")
    assert "You have been logged out." in await login_page.text()
    # The old cookie, replayed by hand, opens nothing.
    other = await make_client(engine)
    replay = await other.get(
        "/ui/test-page", headers={"Cookie": f"{COOKIE}={token}"}, allow_redirects=False
    )
    assert replay.status == 303 and replay.headers["Location"].startswith("/ui/login")


async def test_rotating_admin_token_ends_every_session(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await signed_in(make_client, engine)
    token = session_cookie(client)
    rotated = await make_client(engine, admin_token="a-brand-new-admin-token")
    answer = await rotated.get(
        "/ui/test-page", headers={"Cookie": f"{COOKIE}={token}"}, allow_redirects=False
    )
    assert answer.status == 303
    assert answer.headers["Location"].startswith("/ui/login")
    # The old token no longer logs in; the new one does.
    assert (await login_answer(rotated, ADMIN_TOKEN)).status == 403
    assert (await login_answer(rotated, "a-brand-new-admin-token")).status == 303


async def test_an_expired_session_is_refused_and_deleted_at_the_next_login(
    engine: Engine, make_client: ClientMaker
) -> None:
    old = sessions.create(engine, ADMIN_TOKEN, ua=None, now=utcnow() - timedelta(hours=9), hours=8)
    client = await make_client(engine)
    answer = await client.get(
        "/ui/test-page", headers={"Cookie": f"{COOKIE}={old}"}, allow_redirects=False
    )
    assert answer.status == 303
    assert len(session_rows(engine)) == 1
    await logged_in(client, ADMIN_TOKEN)
    [row] = session_rows(engine)
    assert row.id_hash != sessions.session_id(ADMIN_TOKEN, old)


async def test_a_forged_cookie_opens_nothing(engine: Engine, make_client: ClientMaker) -> None:
    client = await make_client(engine)
    for value in ("x" * 43, "", "%00", "ü" * 100, "x" * 4000):
        answer = await client.get(
            "/ui/test-page", headers={"Cookie": f"{COOKIE}={value}"}, allow_redirects=False
        )
        assert answer.status == 303


async def test_bearer_tokens_open_no_dashboard_page(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    for token in (ADMIN_TOKEN, INGEST_TOKEN):
        auth = {"Authorization": f"Bearer {token}"}
        answer = await client.get("/ui/test-page", headers=auth, allow_redirects=False)
        assert answer.status == 303
        assert answer.headers["Location"].startswith("/ui/login")
        action = await client.post("/ui/test-act", headers=auth, allow_redirects=False)
        assert action.status == 303
    assert DONE == []


# --- UI_ACCESS ----------------------------------------------------------------------------


async def test_without_admin_token_the_login_page_names_it(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine, admin_token=None)
    answer = await client.get("/ui/login")
    assert answer.status == 503
    text = await answer.text()
    assert_html_page(text, answer.headers)
    assert "ADMIN_TOKEN" in text
    assert (await client.post("/ui/login", data={"token": "x"})).status == 503


@pytest.mark.parametrize(
    ("access", "names"),
    [("auto", ("ADMIN_HMAC_SECRET", "UI_ACCESS")), ("off", ("UI_ACCESS=off",))],
)
async def test_a_dashboard_that_is_off_says_which_setting_opens_it(
    engine: Engine, make_client: ClientMaker, access: str, names: tuple[str, ...]
) -> None:
    client = await make_client(engine, ui_access=access, admin_hmac_secret="hmac-secret-xyz")
    for path in ("/ui/login", "/ui/test-page", "/ui/nope"):
        answer = await client.get(path, allow_redirects=False)
        assert answer.status == 503
        text = await answer.text()
        assert_html_page(text, answer.headers)
        assert all(name in text for name in names)
        assert "hmac-secret-xyz" not in text
    refused = await client.post("/ui/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
    assert refused.status == 503
    assert session_rows(engine) == []
    # The stylesheet is still served, so the 503 page looks like the rest.
    assert (await client.get("/ui/static/ui.css")).status == 200


async def test_read_only_shows_pages_and_refuses_changes(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine, ui_access="read-only", admin_hmac_secret="hmac-secret")
    csrf = await logged_in(client, ADMIN_TOKEN)
    page_ = await client.get("/ui/test-page")
    assert page_.status == 200
    text = await page_.text()
    assert "badge-read-only" in text
    answer = await client.post("/ui/test-act", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 403
    assert "UI_ACCESS=read-only" in await answer.text()
    assert DONE == []
    logout = await client.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert logout.status == 303
    assert session_rows(engine) == []


async def test_full_access_with_the_secret_set_allows_actions(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine, ui_access="full", admin_hmac_secret="hmac-secret")
    csrf = await logged_in(client, ADMIN_TOKEN)
    answer = await client.post("/ui/test-act", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/ui/test-page?x=1&notice=job-added"
    assert DONE == ["ok"]
    shown = await client.get(answer.headers["Location"])
    assert "The job has been added to the queue." in await shown.text()


# --- CSRF and Origin --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [{}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": "<script>"}],
    ids=["missing", "empty", "wrong", "hostile"],
)
async def test_a_post_without_the_right_csrf_token_is_refused(
    engine: Engine, make_client: ClientMaker, data: dict[str, str]
) -> None:
    client = await signed_in(make_client, engine)
    answer = await client.post("/ui/test-act", data=data, allow_redirects=False)
    assert answer.status == 403
    text = await answer.text()
    assert_html_page(text, answer.headers)
    assert "missing or invalid CSRF token" in text
    assert DONE == []
    assert (await client.post("/ui/logout", data=data, allow_redirects=False)).status == 403
    assert len(session_rows(engine)) == 1


async def test_another_sessions_csrf_token_is_refused(
    engine: Engine, make_client: ClientMaker
) -> None:
    first = await make_client(engine)
    other_csrf = await logged_in(first, ADMIN_TOKEN)
    second = await signed_in(make_client, engine)
    answer = await second.post("/ui/test-act", data={"csrf": other_csrf}, allow_redirects=False)
    assert answer.status == 403
    assert DONE == []


async def test_a_csrf_token_in_a_json_body_does_not_count(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    csrf = await logged_in(client, ADMIN_TOKEN)
    answer = await client.post("/ui/test-act", json={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 403
    assert DONE == []


@pytest.mark.parametrize("path", ["/ui/test-act", "/ui/login"])
async def test_a_form_that_is_not_utf8_is_a_400_not_a_500(
    engine: Engine, make_client: ClientMaker, path: str
) -> None:
    client = await make_client(engine)
    csrf = await logged_in(client, ADMIN_TOKEN)
    answer = await client.post(
        path,
        data=b"csrf=" + csrf.encode() + b"&what=ok&reason=a\xff\xfeb",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert answer.status == 400
    text = await answer.text()
    assert_html_page(text, answer.headers)
    assert "not UTF-8" in text
    assert DONE == []


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_post_from_another_origin_is_refused(
    engine: Engine, make_client: ClientMaker, origin: str
) -> None:
    client = await make_client(engine)
    csrf = await logged_in(client, ADMIN_TOKEN)
    answer = await client.post(
        "/ui/test-act", data={"csrf": csrf}, headers={"Origin": origin}, allow_redirects=False
    )
    assert answer.status == 403
    assert "Origin" in await answer.text()
    assert DONE == []
    # The login form is checked too.
    page_ = await client.get("/ui/login")
    login = await client.post(
        "/ui/login",
        data={"token": ADMIN_TOKEN, "nonce": nonce_of(await page_.text())},
        headers={"Origin": origin},
        allow_redirects=False,
    )
    assert login.status == 403


async def test_a_post_from_the_dashboards_own_origin_passes(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    csrf = await logged_in(client, ADMIN_TOKEN)
    own = str(client.make_url("/")).rstrip("/")
    answer = await client.post(
        "/ui/test-act", data={"csrf": csrf}, headers={"Origin": own}, allow_redirects=False
    )
    assert answer.status == 303
    assert DONE == ["ok"]


# --- errors are HTML pages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "status", "shown"),
    [
        ("invalid", 400, "priority must be a whole number; got &#39;high&#39;"),
        ("missing", 404, "no job 99"),
        ("conflict", 409, "job 3 has already finished"),
        ("outage", 503, "database unavailable"),
        ("boom", 500, "Internal error; it has been logged."),
    ],
)
async def test_errors_of_an_action_become_html_pages(
    engine: Engine,
    make_client: ClientMaker,
    what: str,
    status: int,
    shown: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await make_client(engine)
    csrf = await logged_in(client, ADMIN_TOKEN)
    answer = await client.post(
        "/ui/test-act", data={"csrf": csrf, "what": what}, allow_redirects=False
    )
    assert answer.status == status
    text = await answer.text()
    assert_html_page(text, answer.headers)
    assert shown in text
    assert "secret detail" not in text and "db.internal" not in text
    if what == "invalid":
        assert "<code>priority</code>" in text
    if what == "outage":
        assert answer.headers["Retry-After"] == "5"
    if what == "boom":
        assert any("unexpected error" in r.getMessage() for r in caplog.records)


async def test_aiohttp_errors_under_ui_are_html_pages(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine, max_body_bytes=1024)
    csrf = await logged_in(client, ADMIN_TOKEN)
    missing = await client.get("/ui/no/such/page")
    assert missing.status == 404
    assert "There is no page at /ui/no/such/page" in await missing.text()
    wrong = await client.put("/ui/login", data="x")
    assert wrong.status == 405
    assert wrong.headers["Allow"]
    assert_html_page(await wrong.text(), wrong.headers)
    big = await client.post(
        "/ui/test-act", data={"csrf": csrf, "what": "x" * 5000}, allow_redirects=False
    )
    assert big.status == 413
    big_text = await big.text()
    assert_html_page(big_text, big.headers)
    assert "MAX_BODY_BYTES" in big_text
    missing_static = await client.get("/ui/static/nope.css")
    assert missing_static.status == 404
    assert_html_page(await missing_static.text(), missing_static.headers)
    assert DONE == []


async def test_a_file_upload_where_text_is_expected_is_a_400(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    csrf = await logged_in(client, ADMIN_TOKEN)
    body = aiohttp_form(csrf)
    answer = await client.post("/ui/test-act", data=body, allow_redirects=False)
    assert answer.status == 400
    assert "field what must be text" in await answer.text()
    assert DONE == []


def aiohttp_form(csrf: str):  # type: ignore[no-untyped-def]
    from aiohttp import FormData

    data = FormData()
    data.add_field("csrf", csrf)
    data.add_field("what", b"bytes", filename="what.txt", content_type="text/plain")
    return data


# --- the rest of the shell ----------------------------------------------------------------


async def test_static_files_need_no_session_and_ui_redirects_to_ui_slash(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    css = await client.get("/ui/static/ui.css")
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert '"DejaVu Sans", system-ui, sans-serif' in await css.text()
    root = await client.get("/ui?x=1", allow_redirects=False)
    assert root.status == 301
    assert root.headers["Location"] == "/ui/"
    for path in ("/ui/static/..%2Ftemplates%2Fbase.html", "/ui/static/%2E%2E/app.py"):
        climb = await client.get(URL(path, encoded=True), allow_redirects=False)
        assert climb.status == 404
        assert "{% extends" not in await climb.text()


async def test_every_answer_carries_server_timing_with_a_query_count(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(engine)
    redirect = await client.get("/ui/test-page", allow_redirects=False)
    assert re.fullmatch(r'app;dur=\d+\.\d, db;desc="queries=0"', redirect.headers["Server-Timing"])
    await logged_in(client, ADMIN_TOKEN)
    answer = await client.get("/ui/test-page")
    # The session lookup and the page's own count: two statements, BEGIN not counted.
    assert re.fullmatch(r'app;dur=\d+\.\d, db;desc="queries=2"', answer.headers["Server-Timing"])
    for name in ("X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"):
        assert answer.headers[name]


async def test_the_page_context_has_the_sessions_csrf_token(
    engine: Engine, make_client: ClientMaker
) -> None:
    client = await signed_in(make_client, engine)
    text = await (await client.get("/ui/test-page")).text()
    assert f'name="csrf" value="{csrf_of(client)}"' in text
    assert 'href="/ui/jobs" class="active"' in text


@pytest.mark.parametrize(
    ("https", "configured", "secure"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_cookies_are_secure_over_https_or_when_configured(
    https: bool, configured: bool, secure: bool
) -> None:
    request = make_mocked_request(
        "GET", "/ui/login", sslcontext=ssl.create_default_context() if https else None
    )
    settings = Settings(admin_token=ADMIN_TOKEN, ui_secure_cookies=configured)
    assert routes_auth._secure(request, settings) is secure
