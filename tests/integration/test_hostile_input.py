"""Hostile values that gave 500s or temporary job errors (issue 11), on SQLite and
PostgreSQL: integers of hundreds of digits in number fields, lone surrogates and NUL in
string fields, path and query parameters. Each must be a 400 that names the field, or a job
that fails at once with the field named, and nothing may be written."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import InvalidInput, PermanentJobError
from optimizer.jobs.context import ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.resolve import check_unit_id
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.job_input import decode_stored_payload, parse_new_job
from optimizer.runtime.queue import NewJob
from optimizer.runtime.worker import Worker
from tests.integration.test_ingest import World, seed
from tests.support.http_client import ClientMaker

ADMIN, INGEST = "hostile-admin-token", "hostile-ingest-token"
HUGE = int("9" * 400)
NUL, SURROGATE = "\x00", "\ud800"
NUL_WORDS, SURROGATE_WORDS = "NUL", "lone surrogate"


@dataclasses.dataclass
class Site:
    engine: Engine
    client: TestClient
    running: World  # support-bot: v1 control against v2, running
    plain: World  # plain-bot: v1 active, v2 and v3 candidates, no experiment

    def counts(self) -> dict[str, int]:
        tables = sorted(t for t in inspect(self.engine).get_table_names() if t != "alembic_version")
        with self.engine.connect() as conn:
            return {
                t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one())
                for t in tables
            }

    async def send(
        self, method: str, target: str, body: Any = None, token: str = ADMIN
    ) -> tuple[int, dict[str, Any]]:
        # ensure_ascii: a lone surrogate travels as the JSON escape \ud800, as a client's
        # JSON encoder sends it, not as bytes that are invalid UTF-8.
        data = b"" if body is None else json.dumps(body, ensure_ascii=True).encode()
        resp = await self.client.request(
            method, target, data=data, headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, await resp.json()


@pytest.fixture
async def site(engine: Engine, make_client: ClientMaker) -> Site:
    running = seed(engine, "support-bot", experiment=[(1, 1.0), (2, 1.0)])
    plain = seed(engine, "plain-bot")
    client = await make_client(engine, Settings(admin_token=ADMIN, ingest_token=INGEST))
    return Site(engine, client, running, plain)


async def refused(
    site: Site, method: str, target: str, body: Any = None, *, token: str = ADMIN
) -> dict[str, Any]:
    """The answer to a request that must be a JSON 400 and write nothing."""
    before = await asyncio.to_thread(site.counts)
    status, answer = await site.send(method, target, body, token)
    assert status == 400, (status, answer)
    assert isinstance(answer.get("error"), str) and answer["error"], answer
    assert await asyncio.to_thread(site.counts) == before
    return answer


# --- huge numbers ----------------------------------------------------------------------------

HUGE_SETTINGS = [
    ({"confidence": HUGE}, "confidence"),
    ({"confidence": -HUGE}, "confidence"),
    ({"min_runtime_hours": HUGE}, "min_runtime_hours"),
    ({"max_runtime_hours": HUGE}, "max_runtime_hours"),
    ({"max_runtime_hours": -HUGE}, "max_runtime_hours"),
    ({"min_conversations_per_arm": HUGE}, "min_conversations_per_arm"),
    ({"weights": [HUGE, 1]}, "weights[0]"),
    ({"weights": [1, -HUGE]}, "weights[1]"),
    ({"guardrails": [{"metric": "rating", "tolerance": HUGE}]}, "guardrails[0].tolerance"),
    ({"guardrails": [{"metric": "latency_ms", "cap": HUGE}]}, "guardrails[0].cap"),
    ({"guardrails": [{"metric": "cost_usd", "cap": -HUGE}]}, "guardrails[0].cap"),
    # Not a number at all, but it crashed the same check: a list is not hashable.
    ({"guardrails": [{"metric": ["rating"]}]}, "guardrails[0].metric"),
    ({"guardrails": [{"metric": {"rating": 1}}]}, "guardrails[0].metric"),
]


@pytest.mark.parametrize(("extra", "field"), HUGE_SETTINGS)
async def test_huge_numbers_in_a_new_experiment_are_400_naming_the_field(
    site: Site, extra: dict[str, Any], field: str
) -> None:
    body = {"prompt": "plain-bot", "variants": [2], **extra}
    answer = await refused(site, "POST", "/experiments", body)
    assert answer["field"] == field and answer["error"].startswith(field), answer
    assert "9" * 80 not in answer["error"], "the whole number was echoed back"
    # The same request without the hostile value is accepted: nothing else was wrong.
    status, _ = await site.send("POST", "/experiments", {"prompt": "plain-bot", "variants": [2]})
    assert status == 201


async def test_a_huge_version_number_in_a_new_experiment_is_400(site: Site) -> None:
    answer = await refused(
        site, "POST", "/experiments", {"prompt": "plain-bot", "variants": [HUGE]}
    )
    assert answer["field"] == "variants[0]" and "9" * 80 not in answer["error"]


FAST = Settings(
    poll_interval_seconds=0.05,
    lease_seconds=1.0,
    retry_base_seconds=0.0,
    job_timeout_seconds=30,
    shutdown_grace_seconds=0.5,
)


async def run_job_to_the_end(engine: Engine, job_type: str, payload: dict[str, Any]) -> queue.Job:
    """One job through the real worker and handlers; returns the finished row."""
    job, _ = queue.enqueue(
        engine, NewJob(type=job_type, payload=payload), max_attempts=3, now=utcnow()
    )
    ctx = ServiceContext(
        settings=FAST,
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=utcnow,
    )
    worker = Worker(ctx, default_handlers(), worker_id="hostile", rng=random.Random(1))

    def done() -> bool:
        return queue.get_job(engine, job.id).status in ("completed", "failed")

    worker.start()
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not await asyncio.to_thread(done):
            assert asyncio.get_running_loop().time() < deadline, "the job never finished"
            await asyncio.sleep(0.05)
    finally:
        await worker.stop(1)
    return queue.get_job(engine, job.id)


@pytest.mark.parametrize(("extra", "field"), HUGE_SETTINGS)
async def test_huge_numbers_in_an_experiment_creation_job_fail_it_at_once(
    engine: Engine, extra: dict[str, Any], field: str
) -> None:
    seed(engine, "plain-bot")
    job = await run_job_to_the_end(
        engine, "experiment_creation", {"prompt": "plain-bot", "variants": [2], **extra}
    )
    assert (job.status, job.attempts) == ("failed", 1), job.error
    assert job.error is not None and field in job.error and "9" * 80 not in job.error


# --- lone surrogates and NUL in bodies -------------------------------------------------------


def body_cases(bad: str) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, body, field) with `bad` in one string field; {eid} is the running
    experiment."""
    return [
        ("POST", "/experiments/{eid}/stop", {"reason": f"done{bad}"}, "reason"),
        ("POST", "/experiments", {"prompt": f"plain-bot{bad}", "variants": [2]}, "prompt"),
        ("POST", "/experiments", {"prompt": bad, "variants": [2]}, "prompt"),
        ("POST", "/jobs", {"type": "pattern_analysis", "prompt": f"plain-bot{bad}"}, "prompt"),
        (
            "POST",
            "/jobs",
            {"type": "experiment_creation", "payload": {"prompt": f"plain-bot{bad}"}},
            "payload.prompt",
        ),
        (
            "POST",
            "/jobs",
            {
                "type": "experiment_creation",
                "payload": {"prompt": "plain-bot", "guardrails": [{"metric": f"rating{bad}"}]},
            },
            "payload.guardrails[0].metric",
        ),
        ("POST", "/prompts", {"name": "new-bot", "content": f"Be kind.{bad}"}, "content"),
        (
            "POST",
            "/prompts",
            {"name": "new-bot", "content": "Be kind.", "change_notes": bad},
            "change_notes",
        ),
        ("POST", "/prompts", {"name": f"new-bot{bad}", "content": "Be kind."}, "name"),
        ("POST", "/prompts/plain-bot/versions", {"content": f"Be brief.{bad}"}, "content"),
        ("POST", "/prompts/plain-bot/rollback", {"version": 2, "reason": f"r{bad}"}, "reason"),
    ]


@pytest.mark.parametrize(
    ("bad", "words"), [(SURROGATE, SURROGATE_WORDS), (NUL, NUL_WORDS)], ids=["surrogate", "nul"]
)
async def test_unstorable_text_in_an_admin_body_is_400_naming_the_field(
    site: Site, bad: str, words: str
) -> None:
    for method, path, body, field in body_cases(bad):
        target = path.format(eid=site.running.experiment_id)
        answer = await refused(site, method, target, body)
        assert answer["field"] == field, (target, body, answer)
        if field != "name":  # a name's own rule (letters, digits, . _ -) refuses it first
            assert words in answer["error"], (target, answer)


@pytest.mark.parametrize("bad", [SURROGATE, NUL], ids=["surrogate", "nul"])
async def test_unstorable_text_in_an_unknown_body_key_is_400(site: Site, bad: str) -> None:
    await refused(
        site, "POST", f"/experiments/{site.running.experiment_id}/stop", {f"reason{bad}": "x"}
    )
    await refused(
        site, "POST", "/experiments", {"prompt": "plain-bot", "variants": [2], f"x{bad}": 1}
    )


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        (field, bad)
        for field in ("unit_id", "prompt", "segment", "transcript")
        for bad in (SURROGATE, NUL)
    ],
)
async def test_unstorable_text_in_a_conversation_is_400_naming_the_row(
    site: Site, field: str, bad: str
) -> None:
    row = {"prompt": "plain-bot", "version": 1, "unit_id": "u1", "segment": "s", "transcript": "t"}
    answer = await refused(
        site,
        "POST",
        "/v1/conversations",
        {"conversations": [row, {**row, field: f"a{bad}"}]},
        token=INGEST,
    )
    assert [(e["index"], e["field"]) for e in answer["errors"]] == [(1, field)]


# --- NUL in path and query parameters --------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "token", "field"),
    [
        ("/experiments?prompt=%00", ADMIN, "prompt"),
        ("/experiments?prompt=support-bot%00", ADMIN, "prompt"),
        ("/experiments?status=%00", ADMIN, "status"),
        ("/jobs?status=%00", ADMIN, "status"),
        ("/jobs?type=%00", ADMIN, "type"),
        ("/insights?prompt=support-bot%00", ADMIN, "prompt"),
        ("/insights?kind=%00", ADMIN, "kind"),
        ("/prompts/support-bot%00", ADMIN, "name"),
        ("/v1/prompts/bot%00/resolve?unit_id=u1", INGEST, "prompt"),
        ("/v1/prompts/support-bot%00/resolve?unit_id=u1", INGEST, "prompt"),
        ("/v1/prompts/support-bot/resolve?unit_id=u1%00", INGEST, "unit_id"),
        ("/v1/prompts/support-bot/resolve?unit_id=%00", INGEST, "unit_id"),
    ],
)
async def test_nul_in_a_path_or_query_parameter_is_400_naming_it(
    site: Site, target: str, token: str, field: str
) -> None:
    answer = await refused(site, "GET", target, token=token)
    assert answer["field"] == field, answer


# --- empty and blank unit ids ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("unit_id=", "unit_id is empty"),
        ("unit_id=%20%09", "unit_id is blank"),
        ("unit_id=" + "u" * 250, "unit_id is 250 characters; at most 200"),
    ],
)
async def test_a_bad_unit_id_at_resolve_says_what_is_wrong(
    site: Site, query: str, message: str
) -> None:
    answer = await refused(site, "GET", f"/v1/prompts/support-bot/resolve?{query}", token=INGEST)
    assert answer["field"] == "unit_id" and answer["error"].startswith(message), answer


@pytest.mark.parametrize(
    ("unit", "problem"),
    [
        ("", "is empty"),
        (" \t", "is blank"),
        ("u" * 250, "is 250 characters; at most 200"),
    ],
)
async def test_a_bad_unit_id_at_ingest_says_what_is_wrong(
    site: Site, unit: str, problem: str
) -> None:
    answer = await refused(
        site,
        "POST",
        "/v1/conversations",
        {"prompt": "plain-bot", "version": 1, "unit_id": unit},
        token=INGEST,
    )
    [error] = answer["errors"]
    assert error["field"] == "unit_id" and error["problem"].startswith(problem), error


# --- the same checks outside HTTP ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"prompt": "plain-bot\\u0000"}',
        '{"prompt": "\\ud800"}',
        '{"prompt": "plain-bot", "guardrails": [{"metric": "rating\\u0000"}]}',
        '{"\\u0000": 1}',
    ],
)
def test_a_stored_payload_with_unstorable_text_fails_for_good(raw: str) -> None:
    with pytest.raises(PermanentJobError, match="payload field") as caught:
        decode_stored_payload(raw)
    # The message is stored in the job row: it must not carry the NUL or surrogate itself.
    str(caught.value).encode("utf-8")
    assert NUL not in str(caught.value)


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
async def test_an_experiment_creation_job_naming_an_unstorable_prompt_fails_at_once(
    engine: Engine, bad: str
) -> None:
    seed(engine, "plain-bot")
    job = await run_job_to_the_end(
        engine, "experiment_creation", {"prompt": f"plain-bot{bad}", "variants": [2]}
    )
    assert (job.status, job.attempts) == ("failed", 1), job.error
    assert job.error is not None and "prompt" in job.error


def test_a_new_job_from_the_cli_refuses_unstorable_text() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_new_job("pattern_analysis", prompt=f"bot{NUL}")
    assert caught.value.field == "prompt"
    with pytest.raises(InvalidInput) as caught:
        parse_new_job("experiment_creation", payload={"prompt": SURROGATE})
    assert caught.value.field == "payload.prompt"


def test_check_unit_id_names_the_problem() -> None:
    for value, message in (
        ("", "unit_id is empty"),
        ("  ", "unit_id is blank"),
        (7, "unit_id must be a string"),
        (f"u{NUL}", NUL_WORDS),
        (f"u{SURROGATE}", SURROGATE_WORDS),
    ):
        with pytest.raises(InvalidInput, match=message):
            check_unit_id(value)
