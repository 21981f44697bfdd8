"""Hypothesis against every /ui route of the dashboard, on SQLite and PostgreSQL: hostile
path parameters, query strings and form fields (lone surrogates, NUL, control characters,
huge numbers, long text), sent by a logged-in browser with a valid CSRF token (so every
handler is reached), and forged POSTs without one.

Properties: never a 5xx; every answer is an HTML page (the JSON that jobs.js polls
excepted) with the security headers and no traceback; a POST refused for its CSRF token
changes no table.

One logged-in client per database serves all examples (the API's property tests drive
their loop the same way).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from tests.property.strategies import HOSTILE_STRINGS, TEXT
from tests.support.http_client import ADMIN_TOKEN, build_app, start_client
from tests.support.ui_client import logged_in
from tests.support.ui_seed import Seeded, seed_small

# Every route the dashboard serves (method, path as aiohttp formats it), and the names
# each one reads from its query string or form.
ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/ui"): (),
    ("GET", "/ui/"): ("notice",),
    ("GET", "/ui/login"): ("next",),
    ("POST", "/ui/login"): ("token", "nonce", "next"),
    ("POST", "/ui/logout"): (),
    ("GET", "/ui/static/{name}"): (),
    ("GET", "/ui/prompts"): ("after",),
    ("GET", "/ui/prompts/{name}"): (),
    ("GET", "/ui/prompts/{name}/versions/{n}"): ("sample", "before"),
    ("GET", "/ui/prompts/{name}/diff"): ("from", "to", "view"),
    ("POST", "/ui/prompts/{name}/rollback"): ("version", "reason"),
    ("POST", "/ui/prompts/{name}/settings"): ("promotion_mode", "judge_rubric"),
    ("GET", "/ui/experiments"): ("status", "prompt", "before"),
    ("GET", "/ui/experiments/{id}"): (),
    ("POST", "/ui/experiments/{id}/stop"): ("reason",),
    ("POST", "/ui/experiments/{id}/approve"): ("reason",),
    ("POST", "/ui/experiments/{id}/reject"): ("reason",),
    ("POST", "/ui/experiments/{id}/promote"): ("arm", "reason"),
    ("GET", "/ui/insights"): ("prompt", "actionable", "kind"),
    ("GET", "/ui/jobs"): ("status", "type", "before"),
    ("GET", "/ui/jobs/live"): ("ids",),
    ("GET", "/ui/jobs/new"): ("type",),
    ("POST", "/ui/jobs/new"): ("type", "prompt", "payload", "priority", "run_at"),
    ("GET", "/ui/jobs/{id}"): (),
    ("POST", "/ui/jobs/{id}/cancel"): (),
}
# Not reached by a user's action: logging out would end the harness's session.
SKIPPED = {("POST", "/ui/logout")}
JSON_ROUTES = {("GET", "/ui/jobs/live")}
PARAMETER = re.compile(r"\{(\w+)\}")
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Sent:
    method: str
    target: str  # path and query, percent-encoded
    form: dict[str, str] | None


class UiHarness:
    """A logged-in client on the real app over a seeded database."""

    def __init__(self, engine: Engine, seeded: Seeded) -> None:
        self.engine = engine
        self.seeded = seeded
        self.loop = asyncio.new_event_loop()
        self.client: TestClient = self.loop.run_until_complete(start_client(build_app(engine)))
        self.csrf = self.loop.run_until_complete(logged_in(self.client, ADMIN_TOKEN))
        self.tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in self.tables))
            ).one()
        return dict(zip(self.tables, row, strict=True))

    async def _send(self, sent: Sent) -> tuple[int, str, dict[str, str], str]:
        async with self.client.session.request(
            sent.method,
            self.client.make_url(sent.target),
            data=sent.form,
            allow_redirects=False,
        ) as answer:
            body = await answer.text(errors="replace")
            return answer.status, answer.content_type, dict(answer.headers), body

    def exchange(self, sent: Sent) -> tuple[int, str, dict[str, str], str]:
        answer = self.loop.run_until_complete(self._send(sent))
        note(f"{sent.method} {sent.target[:200]} {sent.form!r:.300} -> {answer[0]}")
        return answer

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def ui(module_engine: Engine) -> Iterator[UiHarness]:
    harness = UiHarness(module_engine, seed_small(module_engine, utcnow()))
    yield harness
    harness.close()


def hostile_text(*, long: bool = False) -> st.SearchStrategy[str]:
    """Hostile values; `long` adds texts of thousands of characters (form fields only: in a
    URL they would pass aiohttp's 8,190-byte request line, refused before any handler)."""
    values = (
        st.sampled_from(HOSTILE_STRINGS)
        | TEXT
        | st.integers(-(10**30), 10**30).map(str)
        | st.sampled_from(["0", "-1", "1e400", "NaN", "..", "%2e%2e", "//evil.example", "{}"])
    )
    return values | st.text(min_size=2_000, max_size=5_000) if long else values


def path_value(name: str, seeded: Seeded) -> st.SearchStrategy[str]:
    known: list[str] = {
        "name": [seeded.multi_version_prompt or "", *seeded.prompt_names[:1]],
        "id": [str(seeded.running_experiment_id), str(seeded.pending_job_id)],
        "n": ["1", "2", "4"],
        "static": ["ui.css", "jobs.js"],
    }.get(name, [])
    return st.sampled_from(known) | hostile_text() if known else hostile_text()


def sendable(value: str) -> str:
    """A form value aiohttp's client can encode: lone surrogates become U+FFFD (a browser
    does the same to a form field)."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def encode(value: str) -> str:
    # surrogatepass: a lone surrogate reaches the server as the bytes a careless client sends.
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def requests(draw: st.DrawFn, route: tuple[str, str], seeded: Seeded, csrf: str) -> Sent:
    method, template = route
    path = PARAMETER.sub(lambda m: encode(draw(path_value(m.group(1), seeded))), template)
    names = ROUTES[route]
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    values = {name: draw(hostile_text(long=method == "POST")) for name in chosen}
    if method == "GET":
        query = "&".join(f"{encode(k)}={encode(v)}" for k, v in values.items())
        return Sent(method, path + ("?" + query if query else ""), None)
    form = {k: sendable(v) for k, v in values.items()}
    if template != "/ui/login":
        form["csrf"] = csrf
    return Sent(method, path, form)


def test_every_ui_route_is_fuzzed(ui: UiHarness) -> None:
    served = set()
    for route in ui.client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter"))
        if route.method != "HEAD" and (path == "/ui" or path.startswith("/ui/")):
            served.add((route.method, path))
    assert served == set(ROUTES)


FUZZED = sorted(set(ROUTES) - SKIPPED)


@pytest.mark.parametrize("route", FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_hostile_dashboard_requests(ui: UiHarness, route: tuple[str, str], data: st.DataObject):
    sent = data.draw(requests(route, ui.seeded, ui.csrf))
    status, content_type, headers, body = ui.exchange(sent)
    assert status < 500, (status, body[:500])
    assert "Traceback" not in body
    if 300 <= status < 400:
        return
    if route in JSON_ROUTES:
        assert content_type == "application/json", (status, content_type)
        return
    if route == ("GET", "/ui/static/{name}") and status == 200:
        return
    assert content_type == "text/html", (status, content_type, body[:300])
    assert "default-src 'self'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "route", [r for r in FUZZED if r[0] == "POST" and r[1] != "/ui/login"], ids=str
)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_a_post_without_its_csrf_token_changes_nothing(
    ui: UiHarness, route: tuple[str, str], data: st.DataObject
) -> None:
    sent = data.draw(requests(route, ui.seeded, ui.csrf))
    assert sent.form is not None
    forged = {k: v for k, v in sent.form.items() if k != "csrf"}
    if data.draw(st.booleans()):
        forged["csrf"] = sendable(data.draw(hostile_text()))
    before = ui.counts()
    status, content_type, _, body = ui.exchange(Sent(sent.method, sent.target, forged))
    if forged.get("csrf") == ui.csrf:  # hypothesis guessed it: nothing to check
        return
    assert status == 403, (status, body[:300])
    assert content_type == "text/html"
    assert "CSRF" in body
    assert ui.counts() == before
