"""A signed-in aiohttp test client on the /ui/ dashboard, and the checks every page test makes.

Logging in goes as a browser does: GET the login page (which sets the nonce cookie), POST
the token with that nonce, keep the session cookie.

    client, seeded = await seeded_client(make_client, engine)   # seed "small", then log in
    client = await signed_in(make_client, engine, ui_access="read-only")
    page = await html_of(client, "/ui/jobs")                    # 200, an HTML page, no NaN
    await client.post("/ui/...", data={"csrf": csrf_of(client), ...}, allow_redirects=False)
    assert await query_count(client, "/ui/jobs") <= 6
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.ui.csrf import csrf_for
from tests.support.http_client import ADMIN_TOKEN, ClientMaker
from tests.support.ui_seed import Seeded, seed_empty, seed_one_version, seed_small

COOKIE = "pw_ui"
_NONCE = re.compile(r'name="nonce" value="([^"]+)"')
_QUERIES = re.compile(r'db;desc="queries=(\d+)"')
_NAN = re.compile(r"\bnan\b", re.I)

# The seeds a page is shown on, by the name a test parametrizes with; the large one is the
# module fixture `large_seed` (tests/integration/conftest.py): it takes seconds to write.
SEEDS: dict[str, Callable[[Engine, datetime], Seeded]] = {
    "empty": seed_empty,
    "one_version": seed_one_version,
    "small": seed_small,
}


def nonce_of(page: str) -> str:
    """The hidden nonce of a login page."""
    found = _NONCE.search(page)
    assert found, "no login nonce in the page"
    return found.group(1)


async def login_answer(
    client: TestClient, token: str, *, next_path: str | None = None
) -> ClientResponse:
    """GET the login page, then POST `token` with its nonce; the POST's answer, unfollowed."""
    page = await client.get("/ui/login")
    assert page.status == 200, await page.text()
    data = {"token": token, "nonce": nonce_of(await page.text())}
    if next_path is not None:
        data["next"] = next_path
    return await client.post("/ui/login", data=data, allow_redirects=False)


def session_cookie(client: TestClient) -> str | None:
    """The session token the client's cookie jar holds for /ui/, if any."""
    morsel = client.session.cookie_jar.filter_cookies(client.make_url("/ui/")).get(COOKIE)
    return morsel.value if morsel is not None else None


def csrf_of(client: TestClient) -> str:
    """The CSRF token every POST form of the client's session carries (field `csrf`)."""
    token = session_cookie(client)
    assert token, "the client is not logged in"
    return csrf_for(token)


async def logged_in(client: TestClient, token: str) -> str:
    """Log `client` in with `token` (ADMIN_TOKEN) and return the CSRF token for its POSTs."""
    answer = await login_answer(client, token)
    assert answer.status == 303, await answer.text()
    return csrf_of(client)


async def signed_in(make_client: ClientMaker, engine: Engine, **overrides: Any) -> TestClient:
    """A client on the real app (`overrides` as `make_client` takes them), logged in as admin."""
    client = await make_client(engine, **overrides)
    await logged_in(client, ADMIN_TOKEN)
    return client


async def seeded_client(
    make_client: ClientMaker, engine: Engine, seed: str = "small", **overrides: Any
) -> tuple[TestClient, Seeded]:
    """`engine` seeded with SEEDS[seed], and a client logged in on it."""
    seeded = await asyncio.to_thread(SEEDS[seed], engine, utcnow())
    return await signed_in(make_client, engine, **overrides), seeded


def assert_html_page(text: str, headers: Mapping[str, str]) -> None:
    """An answer is one of the dashboard's HTML pages, with its security headers, and shows
    neither a traceback nor a JSON error body."""
    assert headers["Content-Type"].split(";")[0] == "text/html", headers["Content-Type"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    assert text.lstrip().startswith("<!doctype html>")
    assert "Traceback" not in text and '"error":' not in text


async def html_of(client: TestClient, path: str, status: int = 200) -> str:
    """The page at `path`, unfollowed, after checking its status, that it is an HTML page
    (assert_html_page) and that it shows no NaN: nothing shown may be NaN."""
    answer = await client.get(path, allow_redirects=False)
    text = await answer.text()
    assert answer.status == status, text
    assert_html_page(text, answer.headers)
    assert "Internal error" not in text  # the 500 page's words: no test asks for it
    assert not _NAN.search(text), "NaN on the page"
    return text


async def query_count(client: TestClient, path: str) -> int:
    """The statements GET `path` ran, from its Server-Timing header (optimizer/ui/timing.py)."""
    answer = await client.get(path)
    assert answer.status == 200, await answer.text()
    header = answer.headers["Server-Timing"]
    found = _QUERIES.search(header)
    assert found, header
    return int(found.group(1))
