"""Logging an aiohttp test client into the /ui/ dashboard, as a browser does: GET the login
page (which sets the nonce cookie), POST the token with that nonce, keep the session cookie.

    client = await make_client(engine)              # tests/support/http_client.py
    csrf = await logged_in(client, ADMIN_TOKEN)
    await client.post("/ui/...", data={"csrf": csrf, ...}, allow_redirects=False)
"""

from __future__ import annotations

import re

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from optimizer.ui.csrf import csrf_for

COOKIE = "pw_ui"
_NONCE = re.compile(r'name="nonce" value="([^"]+)"')


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
