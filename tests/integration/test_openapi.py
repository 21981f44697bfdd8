"""GET /openapi.json and GET /docs: the document is valid OpenAPI 3.1 (checked by
openapi-spec-validator), describes exactly the routes the app serves and the token each one
really needs, its request schemas accept the bodies the API accepts and refuse the ones it
refuses, and real answers (on SQLite and PostgreSQL) match its response schemas. The page
lists every route and schema, escaped, with nothing fetched from elsewhere."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_spec
from sqlalchemy.engine import Engine

from optimizer import ingest
from optimizer.config import Settings
from optimizer.http.docs_page import type_text
from optimizer.jobs.registry import SPECS
from tests.support.http_client import ClientMaker

ADMIN, INGEST = "openapi-admin-token", "openapi-ingest-token"
A = {"Authorization": f"Bearer {ADMIN}"}
I = {"Authorization": f"Bearer {INGEST}"}  # noqa: E741
PLACEHOLDER = re.compile(r"\{(\w+)\}")


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, Settings(admin_token=ADMIN, ingest_token=INGEST))


async def document(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/openapi.json")  # no token: like /health
    assert resp.status == 200 and resp.content_type == "application/json"
    return dict(await resp.json())


def served(client: TestClient) -> set[tuple[str, str]]:
    found = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter"))
        # The /ui dashboard serves HTML pages, not API: it is not in /openapi.json.
        if route.method != "HEAD" and not (path == "/ui" or path.startswith("/ui/")):
            found.add((route.method, path))
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, methods in doc["paths"].items() for method in methods}


def schema_validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    # The document's components beside the schema, so "#/components/schemas/X" resolves.
    return Draft202012Validator(
        {**schema, "components": doc["components"]}, format_checker=FormatChecker()
    )


def request_schema(doc: dict[str, Any], method: str, path: str) -> Draft202012Validator:
    body = doc["paths"][path][method.lower()]["requestBody"]
    return schema_validator(doc, body["content"]["application/json"]["schema"])


def check_answer(doc: dict[str, Any], method: str, path: str, status: int, answer: Any) -> None:
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in schema_validator(doc, schema).iter_errors(answer)
    ]
    assert not errors, (method, path, status, errors[:5])


# --- the document --------------------------------------------------------------------------


async def test_the_document_is_valid_openapi_3_1(client: TestClient) -> None:
    doc = await document(client)
    assert doc["openapi"].startswith("3.1")
    validate_spec(doc)  # raises on any violation of the OpenAPI 3.1 schema


async def test_it_documents_every_route_the_app_serves_and_no_other(client: TestClient) -> None:
    doc = await document(client)
    assert documented(doc) == served(client)
    assert ("GET", "/openapi.json") in served(client) and ("GET", "/docs") in served(client)


async def test_each_route_needs_the_token_its_document_names(client: TestClient) -> None:
    """A route documented without security answers without a token; one documented with a
    scheme refuses a request without it (401) and with the other API's token."""
    doc = await document(client)
    schemes = doc["components"]["securitySchemes"]
    assert {key: (s["type"], s["scheme"]) for key, s in schemes.items()} == {
        "adminToken": ("http", "bearer"),
        "ingestToken": ("http", "bearer"),
    }
    for method, path in sorted(documented(doc)):
        operation = doc["paths"][path][method.lower()]
        target = PLACEHOLDER.sub("1", path)
        names = [name for requirement in operation["security"] for name in requirement]
        resp = await client.request(method, target, data=b"{}")
        if not names:
            assert resp.status != 401, (method, path)
            continue
        assert resp.status == 401, (method, path, await resp.text())
        other = I if names == ["adminToken"] else A
        resp = await client.request(method, target, data=b"{}", headers=other)
        assert resp.status == 401, (method, path)
        assert "401" in operation["responses"]


async def test_admin_routes_document_the_signature_headers(client: TestClient) -> None:
    doc = await document(client)
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            refs = {p.get("$ref") for p in operation.get("parameters", ())}
            signed = "#/components/parameters/signature" in refs
            assert signed == (operation["security"] == [{"adminToken": []}]), (method, path)
    names = {p["name"] for p in doc["components"]["parameters"].values()}
    assert names == {"X-Timestamp", "X-Signature"}


async def test_the_conversation_record_schema_names_exactly_what_ingest_accepts(
    client: TestClient,
) -> None:
    record = (await document(client))["components"]["schemas"]["ConversationRecord"]
    assert tuple(record["properties"]) == ingest.FIELDS
    assert record["additionalProperties"] is False
    assert set(record["required"]) == {"prompt", "version", "unit_id"}


async def test_request_schemas_agree_with_the_api(client: TestClient) -> None:
    doc = await document(client)
    experiment = request_schema(doc, "POST", "/experiments")
    good = {
        "prompt": "support-bot",
        "variants": [2, 3],
        "weights": [1, 1, 2],
        "confidence": 0.95,
        "guardrails": [{"metric": "latency_ms", "cap": 5000}],
    }
    assert experiment.is_valid(good)
    for bad in (
        {"variants": [2]},
        {**good, "variants": []},
        {**good, "colour": 1},
        {**good, "confidence": 1.5},
        {**good, "primary_metric": "latency_ms"},
        {**good, "guardrails": [{"metric": "mood"}]},
    ):
        assert not experiment.is_valid(bad), bad
    jobs = request_schema(doc, "POST", "/jobs")
    assert jobs.is_valid({"type": "pattern_analysis", "prompt": "support-bot", "priority": 5})
    assert jobs.is_valid({"type": "full_cycle", "payload": '{"prompt": "bot"}'})
    assert not jobs.is_valid({"type": "nope"})
    assert not jobs.is_valid({"type": "full_cycle", "priority": 5000})
    # Which payload goes with which type: a field of one type's payload is refused for
    # another whose payload model does not have it.
    fields = {name: set(spec.payload.model_fields) for name, spec in SPECS.items()}
    for name, own in fields.items():
        for other, theirs in fields.items():
            extra = sorted(theirs - own)
            if extra and spec_forbids_extra(name):
                assert not jobs.is_valid({"type": name, "payload": {extra[0]: None}}), (
                    name,
                    other,
                    extra[0],
                )
    conversations = request_schema(doc, "POST", "/v1/conversations")
    row = {"prompt": "support-bot", "version": 1, "unit_id": "u1", "success": True}
    assert conversations.is_valid(row) and conversations.is_valid({"conversations": [row]})
    assert not conversations.is_valid({**row, "rating": 7})
    assert not conversations.is_valid({"conversations": []})


def spec_forbids_extra(job_type: str) -> bool:
    return SPECS[job_type].payload.model_config.get("extra") == "forbid"


async def test_query_parameters_are_documented(client: TestClient) -> None:
    doc = await document(client)

    def query(method: str, path: str) -> set[str]:
        return {
            p["name"] for p in doc["paths"][path][method]["parameters"] if p.get("in") == "query"
        }

    assert query("get", "/jobs") == {"status", "type", "limit"}
    assert query("get", "/experiments") == {"status", "prompt", "limit"}
    assert query("get", "/insights") == {"prompt", "actionable", "kind", "limit"}
    assert query("get", "/v1/prompts/{name}/resolve") == {"unit_id"}


# --- real answers match the document ----------------------------------------------------------


async def test_real_answers_match_the_response_schemas(client: TestClient) -> None:
    doc = await document(client)

    async def call(
        method: str, path: str, target: str, body: Any = None, headers: dict[str, str] = A
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        resp = await client.request(method, target, data=data, headers=headers)
        answer = await resp.json()
        check_answer(doc, method, path, resp.status, answer)
        return answer

    await call("POST", "/prompts", "/prompts", {"name": "bot", "content": "Be kind."})
    await call(
        "POST",
        "/prompts/{name}/versions",
        "/prompts/bot/versions",
        {"content": "Be brief.", "change_notes": "shorter"},
    )
    await call("GET", "/prompts", "/prompts")
    await call("GET", "/prompts/{name}", "/prompts/bot")
    started = await call("POST", "/experiments", "/experiments", {"prompt": "bot", "variants": [2]})
    eid = started["id"]
    resolved = await call(
        "GET", "/v1/prompts/{name}/resolve", "/v1/prompts/bot/resolve?unit_id=u1", headers=I
    )
    await call("GET", "/v1/config", "/v1/config", headers=I)
    row = {
        "prompt": "bot",
        "version": resolved["version"],
        "unit_id": "u1",
        "experiment_id": eid,
        "success": True,
        "latency_ms": 12.5,
        "tags": ["a"],
    }
    await call(
        "POST", "/v1/conversations", "/v1/conversations", {"conversations": [row]}, headers=I
    )
    await call(
        "POST",
        "/v1/conversations",
        "/v1/conversations",
        {"conversations": [row, {**row, "rating": 9}]},
        headers=I,
    )
    await call("GET", "/experiments", "/experiments?status=running")
    await call("GET", "/experiments/{id}", f"/experiments/{eid}")
    await call("POST", "/experiments/{id}/stop", f"/experiments/{eid}/stop", {"reason": "r"})
    await call("POST", "/prompts/{name}/rollback", "/prompts/bot/rollback", {"version": 2})
    job = await call("POST", "/jobs", "/jobs", {"type": "pattern_analysis", "prompt": "bot"})
    await call("GET", "/jobs", "/jobs")
    await call("GET", "/jobs/{id}", f"/jobs/{job['id']}")
    await call("POST", "/jobs/{id}/cancel", f"/jobs/{job['id']}/cancel")
    await call("GET", "/insights", "/insights?prompt=bot")
    await call("GET", "/health", "/health", headers={})
    await call("GET", "/ready", "/ready", headers={})
    # Errors: each status a route gives is documented, with the error shape.
    await call("POST", "/jobs", "/jobs", {"type": "nope"})
    await call("GET", "/jobs/{id}", "/jobs/999999")
    await call("POST", "/jobs/{id}/cancel", f"/jobs/{job['id']}/cancel")
    await call("POST", "/prompts", "/prompts", {"name": "bot", "content": "again"})
    await call("GET", "/insights", "/insights?prompt=ghost")
    await call("GET", "/experiments", "/experiments", headers={})


# --- the page ------------------------------------------------------------------------------


async def test_the_docs_page_lists_every_route_and_schema(client: TestClient) -> None:
    doc = await document(client)
    resp = await client.get("/docs")  # no token
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    for method, path in documented(doc):
        assert f'<span class="method">{method}</span> <span class="path">{path}</span>' in page, (
            method,
            path,
        )
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page, name
    # Nothing runs or loads from elsewhere: no script, no remote stylesheet or font.
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)


def test_the_page_escapes_what_it_shows() -> None:
    assert (
        type_text({"enum": ["<b>", "a&b"]}) == "one of <code>&lt;b&gt;</code>, <code>a&amp;b</code>"
    )
    assert type_text({"type": "string", "pattern": "^<x>$"}) == "string (matches ^&lt;x&gt;$)"
    assert 'href="#schema-Job"' in type_text({"$ref": "#/components/schemas/Job"})
