"""Hypothesis against every HTTP route, on SQLite and PostgreSQL: hostile bodies (random
JSON, valid bodies with any value, nested ones too, replaced by something hostile, bare
number tokens such as NaN or 1e400, random and invalid-UTF-8 bytes, deep nesting,
oversized), hostile path and query parameters, wrong content types and encodings, wrong
methods, wrong tokens and signatures.

Hostile values are what broke the server once or might: integers of hundreds of digits,
float edges (1e308, 5e-324, -0.0), NaN and Infinity as text, lone surrogates, NUL and other
control characters, in every string and number field and every path and query parameter.

Properties: never a 5xx (but /ready's 503); every 4xx our handlers produce is a JSON
{"error": ...}; a refused request leaves the row count of every table unchanged.

One server per database serves all examples; the event loop is driven from the synchronous
test, so hypothesis runs each example as a plain function call.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Engine
from yarl import URL

from models.experiments import LIVE_STATUSES as LIVE_EXPERIMENT_STATUSES
from models.experiments import Experiment
from models.prompts import Prompt
from optimizer import ingest, prompts
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.experiments import store
from optimizer.http import (
    admin_evaluations,
    admin_experiments,
    admin_insights,
    admin_jobs,
    admin_prompts,
)
from optimizer.http.application_api import RESOLVE_PARAMS
from optimizer.http.signing import sign
from optimizer.runtime import queue
from optimizer.runtime.job_input import parse_new_job
from tests.integration.test_ingest import seed
from tests.property.strategies import (
    ANY_CHAR,
    EXPERIMENT_SETTINGS,
    HOSTILE,
    HOSTILE_STRINGS,
    RAW_NUMBERS,
    TEXT,
    places,
    replaced,
    spoiled,
)
from tests.support.http_client import build_app, start_client

ADMIN, INGEST, SECRET = "prop-admin-token", "prop-ingest-token", "prop-hmac-secret"
MAX_BODY = 4096
# aiohttp's parser refuses longer request lines before any handler runs (plain-text 400).
MAX_LINE = 8190
# Codecs not installed are refused by the parser; a gzip/deflate body that only turns out
# to be broken at its end is too (a broken start reaches the handler: see the regression).
PARSER_ENCODINGS = ("br", "zstd", "gzip", "deflate")
KNOWN_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
METHODS = (*KNOWN_METHODS, "FOO")  # the parser refuses methods it does not know
PROPERTY_SETTINGS = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp template
    token: str | None = None
    fields: tuple[str, ...] = ()  # body fields the handler knows
    params: tuple[str, ...] = ()  # query parameters the handler knows


ROUTES = (
    Route("GET", "/health"),
    Route("GET", "/ready"),
    Route("GET", "/metrics"),
    Route("GET", "/openapi.json"),
    Route("GET", "/docs"),
    Route("POST", "/jobs", ADMIN, admin_jobs.NEW_JOB_FIELDS),
    Route("GET", "/jobs", ADMIN, params=admin_jobs.LIST_PARAMS),
    Route("GET", "/jobs/{id}", ADMIN),
    Route("POST", "/jobs/{id}/cancel", ADMIN),
    Route("POST", "/prompts", ADMIN, admin_prompts.NEW_PROMPT_FIELDS),
    Route("GET", "/prompts", ADMIN),
    Route("GET", "/prompts/{name}", ADMIN),
    Route("POST", "/prompts/{name}/versions", ADMIN, admin_prompts.NEW_VERSION_FIELDS),
    Route("POST", "/prompts/{name}/rollback", ADMIN, admin_prompts.ROLLBACK_FIELDS),
    Route(
        "GET",
        "/prompts/{name}/versions/{version}/evaluations",
        ADMIN,
        params=admin_evaluations.LIST_PARAMS,
    ),
    Route("POST", "/prompts/{name}/settings", ADMIN, admin_prompts.SETTINGS_FIELDS),
    Route("POST", "/experiments", ADMIN, admin_experiments.NEW_EXPERIMENT_FIELDS),
    Route("GET", "/experiments", ADMIN, params=admin_experiments.LIST_PARAMS),
    Route("GET", "/experiments/{id}", ADMIN),
    Route("GET", "/experiments/{id}/analyses", ADMIN, params=admin_experiments.ANALYSES_PARAMS),
    Route("POST", "/experiments/{id}/stop", ADMIN, admin_experiments.STOP_FIELDS),
    Route("POST", "/experiments/{id}/approve", ADMIN, admin_experiments.DECISION_FIELDS),
    Route("POST", "/experiments/{id}/reject", ADMIN, admin_experiments.DECISION_FIELDS),
    Route("POST", "/experiments/{id}/promote", ADMIN, admin_experiments.PROMOTE_FIELDS),
    Route("GET", "/insights", ADMIN, params=admin_insights.LIST_PARAMS),
    Route("GET", "/v1/prompts/{name}/resolve", INGEST, params=RESOLVE_PARAMS),
    Route("GET", "/v1/config", INGEST),
    Route("POST", "/v1/conversations", INGEST, ingest.FIELDS),
)
ADMIN_ROUTES = tuple(r for r in ROUTES if r.token == ADMIN)


@dataclass(frozen=True)
class Req:
    method: str
    target: str  # percent-encoded path and query, sent exactly as is
    headers: dict[str, str]
    body: bytes

    @property
    def refused_by_parser(self) -> bool:
        """Answered by aiohttp's HTTP parser before our code runs: not JSON, still 4xx."""
        encoding = self.headers.get("Content-Encoding", "")
        return (
            len(self.target) > MAX_LINE - 100
            or encoding in PARSER_ENCODINGS
            or self.method not in KNOWN_METHODS
        )


# --- strategies ----------------------------------------------------------------------------

# What a client can put in a header: no control characters (aiohttp refuses to send them).
HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=80,
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, HOSTILE)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=12,
)
INTERESTING = st.sampled_from(
    [
        "support-bot",
        "pattern_analysis",
        "full_cycle",
        "running",
        "pending",
        "u1",
        "",
        " ",
        "x" * 300,
        0,
        1,
        2,
        3,
        -1,
        2**31,
        2**63,
        2**64,
        1.5,
        1e308,
        True,
        False,
        None,
        [],
        {},
        [1, 2],
        [2],
        [2, 3],
        {"a": 1},
        "2026-01-01T00:00:00Z",
        "9999-12-31T23:59:59+14:00",
        "not a date",
        "\x00",
        "é" * 201,
        "primary_metric",
        "success",
        "rating",
    ]
)


def near_valid(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    known = st.dictionaries(
        st.sampled_from(fields), INTERESTING | HOSTILE | JSON_VALUES, max_size=len(fields)
    )
    extra = st.dictionaries(TEXT, SCALARS, max_size=1)
    return st.builds(lambda a, b: {**b, **a}, known, extra)


# A valid body per route, every field and nested field filled in: replacing any one value
# reaches the check behind it.
VALID: dict[str, dict[str, Any]] = {
    "/jobs": {
        "type": "experiment_creation",
        "prompt": "support-bot",
        "priority": 1,
        "run_at": "2026-01-01T00:00:00Z",
        "payload": {"variants": [3], "weights": [1, 2.5], "scope": "global", **EXPERIMENT_SETTINGS},
    },
    "/prompts": {"name": "fuzzed", "content": "Be kind.", "change_notes": "n"},
    "/prompts/{name}/versions": {"content": "Be brief.", "change_notes": "n"},
    "/prompts/{name}/rollback": {"version": 1, "reason": "r"},
    "/prompts/{name}/settings": {"promotion_mode": "approve", "judge_rubric": "Be exact."},
    "/experiments": {
        "prompt": "support-bot",
        "variants": [3],
        "weights": [1, 2.5],
        **EXPERIMENT_SETTINGS,
    },
    "/experiments/{id}/stop": {"reason": "r"},
    "/experiments/{id}/approve": {"reason": "r"},
    "/experiments/{id}/reject": {"reason": "r"},
    "/experiments/{id}/promote": {"version": 3, "reason": "r"},
    "/v1/conversations": {
        "prompt": "support-bot",
        "version": 1,
        "unit_id": "u1",
        "success": True,
        "rating": 4,
        "latency_ms": 10.0,
        "cost_usd": 0.01,
        "input_tokens": 10,
        "output_tokens": 5,
        "segment": "s",
        "tags": ["a", "b"],
        "transcript": "t",
        "occurred_at": "2026-01-01T00:00:00Z",
    },
}


# Mostly hostile values: the plainer ones are reached by near_valid and JSON_VALUES too.
REPLACEMENTS = st.one_of(
    st.sampled_from(HOSTILE_STRINGS), HOSTILE, HOSTILE, INTERESTING, JSON_VALUES
)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    return spoiled(base, REPLACEMENTS)


RAW_MARK = "__raw_number__"


@st.composite
def raw_number_bodies(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """`base` as JSON text with one value replaced by a bare number token, valid JSON or not
    (NaN, Infinity, 1e400, a number of 4,302 digits)."""
    at = draw(st.sampled_from(places(base)))
    text = json.dumps(replaced(base, at, RAW_MARK))
    return text.replace(f'"{RAW_MARK}"', draw(st.sampled_from(RAW_NUMBERS))).encode()


def dumps(value: Any, ascii_only: bool) -> bytes:
    # ascii_only: a lone surrogate travels as the escape \ud800 and reaches the handlers;
    # otherwise it is sent as invalid UTF-8 (surrogatepass), for the body check to refuse.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def documents_for(route: Route) -> st.SearchStrategy[Any]:
    """JSON documents shaped like the route's own, each with something wrong (or not)."""
    documents: st.SearchStrategy[Any] = JSON_VALUES
    if route.fields:
        documents = documents | near_valid(route.fields)
    if route.path in VALID:
        near = mutated(VALID[route.path])
        documents = st.one_of(near, near, near, documents)  # the first is the simplest
    if route.path == "/v1/conversations":
        # Good rows around a bad one: the batch must be refused whole.
        row = VALID[route.path]
        documents = documents | st.builds(
            lambda good, bad, at: {"conversations": good[:at] + [bad] + good[at:]},
            st.lists(st.just(row), max_size=5),
            mutated(row),
            st.integers(0, 5),
        )
    return documents


def body_bytes(route: Route) -> st.SearchStrategy[bytes]:
    """A body for a request that is right but for the body."""
    # Mostly ASCII-only, as JSON encoders send it: then a lone surrogate reaches the handlers.
    encoded = st.builds(dumps, documents_for(route), st.sampled_from([True, True, True, False]))
    if route.path not in VALID:
        return encoded
    return st.one_of(encoded, encoded, encoded, raw_number_bodies(VALID[route.path]))


def bodies(route: Route) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        body_bytes(route),
        st.binary(max_size=200),
        st.integers(MAX_BODY + 1, MAX_BODY * 3).map(lambda n: b'{"a": "' + b"x" * n + b'"}'),
        st.integers(60, 1500).map(lambda n: b"[" * n + b"]" * n),
        st.integers(4300, 4500).map(lambda n: b'{"priority": 1' + b"0" * n + b"}"),
    )


def pct(text: str) -> str:
    """Percent-encoded as UTF-8; a lone surrogate becomes the bytes it would be (invalid)."""
    return quote(text, safe="", errors="surrogatepass")


def percent_bytes(raw: bytes) -> str:
    return "".join(f"%{b:02X}" for b in raw)


HOSTILE_SEGMENTS = [
    "%00",
    "%ED%A0%80",
    "9" * 25,
    "9" * 400,
    "-" + "9" * 400,
    "1e308",
    "-0",
    "0x1",
    "NaN",
    "1.0",
    "%01",
    "%1B%5B2K",
    "%0D%0A",
    "%7F",
    "%C2%85",
    "%FF",
]


def hostile_segments(seeded: list[str]) -> st.SearchStrategy[str]:
    """A path parameter close to a real one, with something wrong with it."""
    real = st.sampled_from(seeded)
    return st.one_of(
        st.sampled_from(HOSTILE_SEGMENTS),
        st.builds(lambda s, bad: s + bad, real, st.sampled_from(HOSTILE_SEGMENTS)),
        st.builds(lambda s, bad: s + pct(bad), real, st.sampled_from(HOSTILE_STRINGS) | TEXT),
        (HOSTILE | TEXT).map(lambda v: pct(str(v))).filter(bool),
    )


def segments(kind: str, seeded: dict[str, list[str]]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(seeded[kind]),
        st.sampled_from([*seeded[kind], "1", "0", "-1", "..", ".", "%2F"]),
        hostile_segments(seeded[kind]),
        TEXT.filter(bool).map(pct),
        st.text(alphabet="abz-_.09", min_size=500, max_size=3000),
        st.text(alphabet=ANY_CHAR, min_size=300, max_size=1200).map(pct),
        st.binary(min_size=1, max_size=30).map(percent_bytes),
    )


VALID_QUERY = {
    "/jobs": {"status": "pending", "type": "full_cycle", "limit": "5"},
    "/experiments": {"status": "running", "prompt": "support-bot", "limit": "5"},
    "/insights": {"prompt": "support-bot", "actionable": "true", "kind": "theme", "limit": "5"},
    "/prompts/{name}/versions/{version}/evaluations": {
        "sample": "failing",
        "before": "9",
        "limit": "5",
    },
    "/v1/prompts/{name}/resolve": {"unit_id": "u1"},
}
QUERY_VALUES = st.one_of(
    INTERESTING.map(str),
    TEXT,
    st.text(min_size=300, max_size=2000),
    HOSTILE.map(str),
    st.sampled_from(HOSTILE_STRINGS),
)


def query_string(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{pct(k)}={pct(v)}" for k, v in pairs)


def near_queries(route: Route) -> st.SearchStrategy[str]:
    """The route's valid query with one parameter's value made hostile."""
    valid = VALID_QUERY.get(route.path, {})
    if not valid:
        return st.just("")

    def spoil(name: str, bad: str, where: int) -> str:
        value = (bad, valid[name] + bad, bad + valid[name])[where]
        return query_string(list({**valid, name: value}.items()))

    hostile = st.builds(
        spoil, st.sampled_from(sorted(valid)), st.sampled_from(HOSTILE_STRINGS), st.integers(0, 2)
    )
    return hostile | st.builds(
        lambda name, value: query_string(list({**valid, name: value}.items())),
        st.sampled_from(sorted(valid)),
        QUERY_VALUES,
    )


def queries(route: Route) -> st.SearchStrategy[str]:
    keys = st.sampled_from(route.params) | TEXT if route.params else TEXT
    pairs = st.lists(st.tuples(keys, QUERY_VALUES), max_size=4).map(query_string)
    garbage = st.sampled_from(
        [
            "%",
            "%%",
            "a=%ZZ",
            "=&&=",
            "&",
            "limit",
            "a=1=2",
            "%FF=%FE",
            "prompt=%00",
            "unit_id=%00",
            "status=%ED%A0%80",
        ]
    )
    valid = st.just(query_string(list(VALID_QUERY.get(route.path, {}).items())))
    return st.one_of(
        near_queries(route),
        st.just(""),
        valid,
        near_queries(route),
        pairs,
        garbage,
        st.binary(max_size=20).map(percent_bytes),
    )


def authorization(token: str | None) -> st.SearchStrategy[dict[str, str]]:
    right = {"Authorization": f"Bearer {token}"} if token else {}
    others = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {INGEST if token == ADMIN else ADMIN}"},
    ]
    printable = HEADER_TEXT.map(lambda s: {"Authorization": s})
    return st.one_of(
        st.just(right), st.just(right), st.just(right), st.sampled_from(others), printable
    )


def extra_headers() -> st.SearchStrategy[dict[str, str]]:
    content_type = st.sampled_from(
        [
            "application/json",
            "text/plain",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "application/xml",
            "application/json; charset=latin-1",
            "*/*",
            "garbage",
        ]
    )
    encoding = st.sampled_from(["identity", "x-nope", *PARSER_ENCODINGS])
    return st.builds(
        lambda ct, ce: {
            **({"Content-Type": ct} if ct else {}),
            **({"Content-Encoding": ce} if ce else {}),
        },
        st.none() | content_type,
        st.sampled_from([None] * 4) | encoding,
    )


@st.composite
def requests(draw: st.DrawFn, route: Route, seeded: dict[str, list[str]]) -> Req:
    # Half the examples get everything right but the body or query, so they reach the
    # validation and the transaction behind the guards; the rest are hostile throughout.
    near = not draw(st.booleans())  # near first: hypothesis starts from the simplest
    path = route.path
    for kind in ("id", "name", "version"):
        if "{" + kind + "}" in path:
            real = st.sampled_from(seeded[kind])
            segment = (
                st.one_of(real, real, hostile_segments(seeded[kind]))
                if near
                else segments(kind, seeded)
            )
            path = path.replace("{" + kind + "}", draw(segment))
    query = draw(queries(route))
    if near:
        method = route.method
        token = {"Authorization": f"Bearer {route.token}"} if route.token else {}
        headers = {**token, "Content-Type": "application/json"}
        body = draw(body_bytes(route))
    else:
        method = draw(st.sampled_from((route.method,) * 12 + METHODS))
        headers = {**draw(authorization(route.token)), **draw(extra_headers())}
        body = draw(bodies(route))
    return Req(method, path + (f"?{query}" if query else ""), headers, body)


# --- the server ----------------------------------------------------------------------------


class Harness:
    """A real app on a migrated SQLite file, driven from synchronous hypothesis tests."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")
        self.seeded: dict[str, list[str]] = {}
        self.plain = self._client(
            Settings(admin_token=ADMIN, ingest_token=INGEST, max_body_bytes=MAX_BODY)
        )
        self.signed = self._client(
            Settings(
                admin_token=ADMIN,
                ingest_token=INGEST,
                max_body_bytes=MAX_BODY,
                admin_hmac_secret=SECRET,
            )
        )

    def _client(self, config: Settings) -> TestClient:
        return self.loop.run_until_complete(start_client(build_app(self.engine, config)))

    def keep_an_experiment_running(self) -> None:
        """A stop that succeeded ends the seeded experiment, and every later stop would be a
        409 before its reason is read. Start another one, so each example gets that far."""
        with session_factory(self.engine).begin() as session:
            live = session.scalar(
                select(Experiment.id)
                .join(Prompt, Prompt.id == Experiment.prompt_id)
                .where(
                    Prompt.name == "support-bot", Experiment.status.in_(LIVE_EXPERIMENT_STATUSES)
                )
            )
            if live is None:
                version = prompts.add_version(
                    session, "support-bot", f"Be helpful ({uuid.uuid4()}).", now=utcnow()
                )
                live = store.create_experiment(
                    session, "support-bot", [version.number], now=utcnow()
                ).id
        self.seeded["id"][0] = str(live)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in self.tables))
            ).one()
        return dict(zip(self.tables, row, strict=True))

    async def _send(self, client: TestClient, req: Req) -> tuple[int, str, bytes]:
        root = str(client.make_url("/")).rstrip("/")
        try:
            async with client.session.request(
                req.method, URL(root + req.target, encoded=True), data=req.body, headers=req.headers
            ) as resp:
                return resp.status, resp.content_type, await resp.read()
        except aiohttp.ClientError:
            if not req.refused_by_parser:
                raise
            # aiohttp's parser answers HEAD with a body, which its client cannot read.
            return 400, "text/plain", b"(answer from aiohttp's parser, unreadable)"

    def exchange(self, req: Req, *, signed: bool = False) -> tuple[int, str, bytes, bool]:
        """Send `req`; return status, content type, body and whether the counts held."""
        before = self.counts()
        client = self.signed if signed else self.plain
        status, content_type, body = self.loop.run_until_complete(self._send(client, req))
        if currently_in_test_context():
            note(f"{req.method} {req.target[:200]} -> {status} {body[:300]!r}")
            event(f"status {status}")  # shown by --hypothesis-show-statistics
        return status, content_type, body, self.counts() == before

    def close(self) -> None:
        for client in (self.plain, self.signed):
            self.loop.run_until_complete(client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(module_engine: Engine) -> Iterator[Harness]:
    engine = module_engine
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    job, _ = queue.enqueue(
        engine,
        parse_new_job("pattern_analysis", prompt="support-bot"),
        max_attempts=3,
        now=utcnow(),
    )
    h = Harness(engine)
    h.seeded = {
        "id": [str(world.experiment_id), str(job.id)],
        "name": ["support-bot"],
        "version": ["1", "2"],
    }
    yield h
    h.close()


def check(
    route: Route, req: Req, status: int, content_type: str, body: bytes, unchanged: bool
) -> None:
    assert status < 500 or (route.path == "/ready" and status == 503), (status, body[:500])
    if status >= 400:
        assert unchanged, f"a refused request ({status}) changed the tables"
    if 400 <= status < 500 and req.method != "HEAD" and not req.refused_by_parser:
        assert content_type == "application/json", (status, content_type, body[:300])
        document = json.loads(body)
        assert isinstance(document, dict) and isinstance(document.get("error"), str)
        assert document["error"], document


# --- properties ----------------------------------------------------------------------------


def test_every_route_is_fuzzed(harness: Harness) -> None:
    served = set()
    for route in harness.plain.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter"))
        # The /ui dashboard has its own guard (tests/property/test_ui_properties.py).
        if route.method != "HEAD" and not (path == "/ui" or path.startswith("/ui/")):
            served.add((route.method, path))
    assert served == {(r.method, r.path) for r in ROUTES}


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_hostile_requests(harness: Harness, route: Route, data: st.DataObject) -> None:
    if route.path.startswith("/experiments/{id}"):
        harness.keep_an_experiment_running()
    req = data.draw(requests(route, harness.seeded))
    check(route, req, *harness.exchange(req))


@PROPERTY_SETTINGS
@given(data=st.data())
def test_bad_signatures_never_pass(harness: Harness, data: st.DataObject) -> None:
    route = data.draw(st.sampled_from(ADMIN_ROUTES))
    req = data.draw(requests(route, harness.seeded))
    now = int(time.time())
    stamp = data.draw(
        st.one_of(st.just(str(now)), st.integers(-(10**12), 10**13).map(str), HEADER_TEXT)
    )
    other = sign("not-the-secret", req.method, req.target, req.body, now)["X-Signature"]
    signature = data.draw(
        st.one_of(
            st.just(other),
            HEADER_TEXT,
            st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
                lambda h: "sha256=" + h
            ),
        )
    )
    headers = {"Authorization": f"Bearer {ADMIN}", "X-Timestamp": stamp, "X-Signature": signature}
    req = Req(route.method, req.target, headers, req.body)
    status, content_type, body, unchanged = harness.exchange(req, signed=True)
    check(route, req, status, content_type, body, unchanged)
    assert status in (401, 404, 405, 413) or req.refused_by_parser, body[:300]


# --- regressions found by the properties ---------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_body_not_matching_content_encoding_is_400(harness: Harness, encoding: str) -> None:
    """Was a 500: aiohttp's decode error escaped the error middleware."""
    # POST /jobs/{id}/cancel reads no body, so it has nothing to refuse.
    for route in (r for r in ROUTES if r.method == "POST" and "cancel" not in r.path):
        path = route.path.replace("{id}", "1").replace("{name}", "support-bot")
        headers = {"Authorization": f"Bearer {route.token}", "Content-Encoding": encoding}
        req = Req("POST", path, headers, b'{"type": "pattern_analysis"}')
        status, content_type, body, unchanged = harness.exchange(req)
        assert (status, content_type, unchanged) == (400, "application/json", True), body
        assert "content-encoding" in json.loads(body)["error"].lower()
    ok = harness.exchange(Req("GET", "/health", {}, b""))  # the server is still serving
    assert ok[0] == 200


def test_request_line_over_the_parser_limit(harness: Harness) -> None:
    req = Req("GET", "/prompts/" + "a" * MAX_LINE, {"Authorization": f"Bearer {ADMIN}"}, b"")
    status, _, _, unchanged = harness.exchange(req)
    assert 400 <= status < 500 and unchanged
