"""The LLM clients for real: the `anthropic` SDK against a local fake of the Messages API,
usage rows in a real database, limits, fallback, and the offline generator."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from models.llm_calls import LlmCall
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import JobDeferred, PermanentJobError
from optimizer.llm import NotConfiguredClient, build_llm_client
from optimizer.llm.anthropic_client import AnthropicClient
from optimizer.llm.client import LlmError, LlmNotConfigured, LlmRequest
from optimizer.llm.offline import OfflineClient
from optimizer.llm.pricing import cost_usd
from optimizer.prompt_text import content_hash
from optimizer.variants.meta_prompt import InsightFacts, build_request
from optimizer.variants.parse import parse_variants
from optimizer.variants.validate import placeholders, validate_variants
from tests.support.fake_anthropic import FakeAnthropic, Reply

KEY = "sk-ant-test-0123456789abcdef"
SONNET, OPUS = "claude-sonnet-5-5", "claude-opus-5-5"
SETTINGS = Settings(
    anthropic_api_key=KEY,
    llm_max_retries=0,
    llm_model_sonnet=SONNET,
    llm_model_opus=OPUS,
    llm_calls_per_hour=100,
    llm_daily_budget_usd=20.0,
)
# The SDK honours retry-after-ms over its own backoff: retries in tests take milliseconds.
FAST = {"retry-after-ms": "1"}
ACTIVE = "You are {{bot_name}}, the support agent of {{ product }}. Answer politely."


def request(model: str = "sonnet", **changes: object) -> LlmRequest:
    base = LlmRequest(
        purpose="variant_generation",
        model=model,
        system="You improve prompts. " * 20,
        user="Improve this prompt.",
        max_tokens=4000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def rows(engine: Engine) -> list[LlmCall]:
    with session_factory(engine)() as session:
        return list(session.scalars(select(LlmCall).order_by(LlmCall.id)))


def add_row(
    engine: Engine, created_at: datetime, *, cost: float = 0.0, provider: str = "anthropic"
) -> None:
    with session_factory(engine).begin() as session:
        session.add(
            LlmCall(
                purpose="variant_generation",
                requested_model=SONNET,
                model=SONNET,
                provider=provider,
                outcome="ok",
                cost_usd=cost,
                created_at=created_at,
            )
        )


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(text="<improved_prompt>\nbetter\n</improved_prompt>") as server:
        yield server


ClientFactory = Callable[..., AnthropicClient]


@pytest.fixture
async def make_client(fake: FakeAnthropic) -> AsyncIterator[ClientFactory]:
    made: list[AnthropicClient] = []

    def factory(
        engine: Engine,
        clock: Callable[[], datetime] = utcnow,
        timeout: float = 30.0,
        **settings: object,
    ) -> AnthropicClient:
        client = AnthropicClient(
            SETTINGS.model_copy(update=settings),  # type: ignore[arg-type]
            session_factory(engine),
            clock,
            base_url=fake.base_url,
            timeout=timeout,
        )
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


# --- success -----------------------------------------------------------------------------


async def test_streams_the_reply_and_records_the_call(
    engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.usage.update(
        input_tokens=1200,
        output_tokens=345,
        cache_creation_input_tokens=800,
        cache_read_input_tokens=0,
    )
    sent = request(job_id=None)
    reply = await make_client(engine).complete(sent)

    [seen] = fake.requests
    assert seen.path == "/v1/messages" and seen.stream is True
    assert seen.model == SONNET and seen.body["max_tokens"] == 4000
    assert seen.body["system"] == [
        {"type": "text", "text": sent.system, "cache_control": {"type": "ephemeral"}}
    ]
    assert seen.body["messages"] == [{"role": "user", "content": "Improve this prompt."}]
    # The key goes as x-api-key or, in newer SDKs, as a bearer token.
    assert KEY in (seen.headers.get("x-api-key", "") + seen.headers.get("authorization", ""))

    assert reply.text == fake.text and reply.provider == "anthropic"
    assert (reply.requested_model, reply.model, reply.fell_back) == (SONNET, SONNET, False)
    assert (reply.input_tokens, reply.output_tokens) == (1200, 345)
    assert (reply.cache_creation_input_tokens, reply.cache_read_input_tokens) == (800, 0)
    assert reply.cost_usd == pytest.approx(cost_usd(SONNET, 1200, 345, 800, 0))
    assert reply.cost_usd == pytest.approx((1200 * 2 + 345 * 10 + 800 * 2.5) / 1e6)

    [row] = rows(engine)
    assert row.id == reply.call_id and row.outcome == "ok" and row.error is None
    assert (row.provider, row.purpose, row.requested_model, row.model) == (
        "anthropic",
        "variant_generation",
        SONNET,
        SONNET,
    )
    assert (row.input_tokens, row.output_tokens, row.cache_creation_input_tokens) == (
        1200,
        345,
        800,
    )
    assert row.cost_usd == pytest.approx(reply.cost_usd) and row.latency_ms > 0


async def test_full_model_id_is_sent_as_given_and_the_answering_model_recorded(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.script(Reply(model="claude-haiku-4-5-20251001"))
    reply = await make_client(sqlite_engine).complete(request("claude-haiku-4-5"))
    assert fake.requests[0].model == "claude-haiku-4-5"
    assert reply.model == "claude-haiku-4-5-20251001"
    assert reply.cost_usd == pytest.approx((1000 * 1 + 200 * 5) / 1e6)


async def test_slow_stream_still_completes(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    text = "word " * 40
    fake.script(Reply(text=text, chunk_delay=0.02))
    client = make_client(sqlite_engine, timeout=2.0)
    reply = await client.complete(request())
    assert reply.text == text
    assert rows(sqlite_engine)[0].latency_ms >= 200  # 13 chunks x 20 ms


async def test_retry_inside_the_sdk_is_invisible_when_it_succeeds(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.script(Reply(status=500, error_type="api_error", headers=FAST))
    reply = await make_client(sqlite_engine, llm_max_retries=1).complete(request())
    assert reply.text == fake.text and len(fake.requests) == 2
    assert fake.requests[1].headers["x-stainless-retry-count"] == "1"
    assert [r.outcome for r in rows(sqlite_engine)] == ["ok"]


# --- overload and fallback ---------------------------------------------------------------


async def test_overloaded_sonnet_falls_back_to_opus(
    engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.always(SONNET, Reply(status=529, error_type="overloaded_error", headers=FAST))
    fake.texts_by_model[OPUS] = "answer from opus"
    reply = await make_client(engine, llm_max_retries=1).complete(request("sonnet"))

    assert [r.model for r in fake.requests] == [SONNET, SONNET, OPUS]  # SDK retried once
    assert reply.text == "answer from opus" and reply.fell_back is True
    assert (reply.requested_model, reply.model) == (SONNET, OPUS)
    first, second = rows(engine)
    assert (first.outcome, first.model, first.requested_model) == ("overloaded", SONNET, SONNET)
    assert "529" in (first.error or "") and "overloaded_error" in (first.error or "")
    assert (second.outcome, second.model, second.requested_model) == ("ok", OPUS, SONNET)
    assert second.id == reply.call_id


async def test_overloaded_opus_falls_back_to_sonnet_and_both_failing_is_an_error(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.always(OPUS, Reply.error(529))
    fake.always(SONNET, Reply.error(529))
    with pytest.raises(LlmError, match="overloaded") as caught:
        await make_client(sqlite_engine).complete(request("opus"))
    assert not isinstance(caught.value, PermanentJobError)
    assert [r.model for r in fake.requests] == [OPUS, SONNET]
    assert [(r.outcome, r.model) for r in rows(sqlite_engine)] == [
        ("overloaded", OPUS),
        ("overloaded", SONNET),
    ]


async def test_overload_announced_inside_the_stream_also_falls_back(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.script(
        Reply(
            stream_end="error_event",
            error_type="overloaded_error",
            text="a long answer that will be cut off",
        )
    )
    reply = await make_client(sqlite_engine).complete(request("claude-sonnet-5"))
    # A full id that is neither configured model falls back to the sonnet id.
    assert [r.model for r in fake.requests] == ["claude-sonnet-5", SONNET]
    assert reply.fell_back and reply.model == SONNET
    assert [r.outcome for r in rows(sqlite_engine)] == ["overloaded", "ok"]


def test_alias_resolution_and_fallback_targets(sqlite_engine: Engine) -> None:
    client = AnthropicClient(SETTINGS, session_factory(sqlite_engine), utcnow)
    assert client.resolve("sonnet") == SONNET and client.resolve("opus") == OPUS
    assert client.resolve("claude-x-1") == "claude-x-1"
    assert client.fallback_for(SONNET) == OPUS and client.fallback_for(OPUS) == SONNET
    assert client.fallback_for("claude-x-1") == SONNET


# --- rate limits and limits --------------------------------------------------------------


async def test_rate_limit_defers_the_job_until_retry_after(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.always(SONNET, Reply.error(429, retry_after="120"))
    before = utcnow()
    with pytest.raises(JobDeferred) as caught:
        # A long retry-after is not slept through inside the SDK: one request only.
        await make_client(sqlite_engine, llm_max_retries=3).complete(request())
    assert len(fake.requests) == 1
    expected = before + timedelta(seconds=120)
    assert expected - timedelta(seconds=1) <= caught.value.until <= expected + timedelta(seconds=5)
    assert "429" in str(caught.value)
    [row] = rows(sqlite_engine)
    assert row.outcome == "rate_limited" and "rate_limit_error" in (row.error or "")


async def test_rate_limit_without_retry_after_waits_a_minute(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.script(Reply.error(429))
    now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    with pytest.raises(JobDeferred) as caught:
        await make_client(sqlite_engine, clock=lambda: now).complete(request())
    assert caught.value.until == now + timedelta(seconds=60)


async def test_hourly_limit_defers_before_any_request(
    engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    for minutes in (50, 30, 10):
        add_row(engine, now - timedelta(minutes=minutes))
    add_row(engine, now - timedelta(minutes=90))  # outside the hour
    add_row(engine, now - timedelta(minutes=5), provider="offline")  # not an API call
    client = make_client(engine, clock=lambda: now, llm_calls_per_hour=3)
    with pytest.raises(JobDeferred, match="LLM_CALLS_PER_HOUR=3") as caught:
        await client.complete(request())
    assert caught.value.until == now + timedelta(minutes=10)  # oldest in window + 1 h
    assert fake.requests == [] and len(rows(engine)) == 5

    relaxed = make_client(engine, clock=lambda: now, llm_calls_per_hour=4)
    assert (await relaxed.complete(request())).text == fake.text


async def test_budget_defers_until_next_utc_midnight_before_any_request(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    now = datetime(2026, 11, 22, 18, 45, tzinfo=UTC)
    add_row(sqlite_engine, now - timedelta(hours=2), cost=19.0)
    add_row(sqlite_engine, now - timedelta(days=1), cost=500.0)  # yesterday does not count
    client = make_client(sqlite_engine, clock=lambda: now)
    # $1.00 is left today; 120k output tokens at $10/M could cost $1.20, 4000 only $0.04.
    big = request(max_tokens=120_000)
    with pytest.raises(JobDeferred, match="LLM_DAILY_BUDGET_USD") as caught:
        await client.complete(big)
    assert caught.value.until == datetime(2026, 11, 23, tzinfo=UTC)
    assert fake.requests == []
    assert (await client.complete(request())).call_id is not None  # a small call fits


# --- errors that end the job, and errors worth a retry -----------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "ANTHROPIC_API_KEY"),
        (403, "not allowed"),
        (400, "invalid"),
        (404, "LLM_MODEL_SONNET"),
    ],
)
async def test_client_errors_are_permanent_and_never_show_the_key(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory, status: int, words: str
) -> None:
    fake.always(SONNET, Reply.error(status, message=f"echo {KEY}"))
    with pytest.raises(PermanentJobError, match=words) as caught:
        await make_client(sqlite_engine, llm_max_retries=2).complete(request())
    assert len(fake.requests) == 1  # 4xx are not retried
    [row] = rows(sqlite_engine)
    assert row.outcome == "error" and str(status) in (row.error or "")
    assert KEY not in str(caught.value) and KEY not in (row.error or "")


async def test_persistent_server_error_is_a_retryable_llm_error(
    engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.always(SONNET, Reply(status=500, error_type="api_error", headers=FAST))
    with pytest.raises(LlmError, match="500") as caught:
        await make_client(engine, llm_max_retries=1).complete(request())
    assert not isinstance(caught.value, PermanentJobError)
    assert len(fake.requests) == 2  # the SDK's retry, then no fallback for a 500
    assert [r.outcome for r in rows(engine)] == ["error"]


@pytest.mark.parametrize("end", ["malformed", "truncated", "disconnect"])
async def test_broken_stream_is_an_llm_error(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory, end: str
) -> None:
    fake.script(Reply(stream_end=end, text="x" * 200))
    with pytest.raises(LlmError, match="stream") as caught:
        await make_client(sqlite_engine).complete(request())
    assert not isinstance(caught.value, PermanentJobError)
    [row] = rows(sqlite_engine)
    assert row.outcome == "error" and "stream" in (row.error or "")


async def test_stalled_stream_times_out(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.script(Reply(chunk_delay=2.0))
    with pytest.raises(LlmError, match="timed out"):
        await make_client(sqlite_engine, timeout=0.3).complete(request())
    assert [r.outcome for r in rows(sqlite_engine)] == ["timeout"]


async def test_cancelled_call_is_still_recorded(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.script(Reply(chunk_delay=1.0))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(make_client(sqlite_engine).complete(request()), 0.3)
    [row] = rows(sqlite_engine)
    assert row.outcome == "error" and "cancelled" in (row.error or "")


async def test_empty_reply_is_an_llm_error(
    sqlite_engine: Engine, fake: FakeAnthropic, make_client: ClientFactory
) -> None:
    fake.script(Reply(text="", stop_reason="refusal"))
    with pytest.raises(LlmError, match="no text"):
        await make_client(sqlite_engine).complete(request())
    assert [r.outcome for r in rows(sqlite_engine)] == ["error"]


# --- building the client -----------------------------------------------------------------


async def test_no_api_key_gives_a_client_that_says_what_to_set(sqlite_engine: Engine) -> None:
    settings = SETTINGS.model_copy(update={"anthropic_api_key": None})
    client = build_llm_client(settings, session_factory(sqlite_engine), utcnow)
    assert isinstance(client, NotConfiguredClient) and client.provider == "anthropic"
    with pytest.raises(LlmNotConfigured, match="ANTHROPIC_API_KEY.*LLM_PROVIDER=offline"):
        await client.complete(request())
    assert rows(sqlite_engine) == []


async def test_built_client_honours_anthropic_base_url(
    sqlite_engine: Engine, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    client = build_llm_client(SETTINGS, session_factory(sqlite_engine), utcnow)
    assert isinstance(client, AnthropicClient)
    try:
        reply = await client.complete(request("opus"))
    finally:
        await client.aclose()
    assert reply.model == OPUS and fake.requests[0].model == OPUS


# --- the offline generator ---------------------------------------------------------------


def offline_request(n: int, insights: list[InsightFacts]) -> LlmRequest:
    return build_request(
        model="sonnet",
        active_prompt=ACTIVE,
        active_version=1,
        insights=insights,
        transcripts=[],
        n=n,
        job_id=None,
    )


BILLING = InsightFacts(
    id=7,
    kind="segment",
    title="Billing questions fail",
    detail="41% success",
    evidence={"dimension": "segment", "value": "billing", "n": 120},
)
THEME = InsightFacts(
    id=8,
    kind="failure_theme",
    title="Refund {{x}} <b>policy</b> unclear",
    detail=None,
    evidence={"n": 40},
)


async def test_offline_variants_parse_validate_and_name_the_segment(engine: Engine) -> None:
    settings = SETTINGS.model_copy(update={"llm_provider": "offline"})
    client = build_llm_client(settings, session_factory(engine), utcnow)
    assert isinstance(client, OfflineClient) and client.provider == "offline"
    sent = offline_request(3, [BILLING, THEME])
    reply = await client.complete(sent)
    again = await client.complete(sent)
    assert again.text == reply.text  # deterministic

    parsed = parse_variants(reply.text)
    valid, dropped = validate_variants(parsed, ACTIVE, {content_hash(ACTIVE): 1})
    assert dropped == [] and len(valid) == 3
    for variant in valid:
        assert variant.content.startswith(ACTIVE)
        assert placeholders(variant.content) == placeholders(ACTIVE)
        assert "billing" in variant.content and "Refund x bpolicy/b unclear" in variant.content
        assert len(variant.content) < 2 * len(ACTIVE) + 2000
        notes = variant.change_notes or ""
        assert notes.startswith("[offline generator]") and "Billing questions fail" in notes
    assert "quote the exact amounts and dates" in valid[0].content

    assert (reply.provider, reply.model, reply.requested_model) == ("offline", "offline", "sonnet")
    assert reply.fell_back is False and reply.cost_usd == 0.0
    first = rows(engine)[0]
    assert first.id == reply.call_id
    assert (first.provider, first.model, first.requested_model, first.outcome) == (
        "offline",
        "offline",
        "sonnet",
        "ok",
    )
    assert first.cost_usd == 0.0 and len(rows(engine)) == 2


async def test_offline_without_insights_and_with_many_variants(sqlite_engine: Engine) -> None:
    client = OfflineClient(session_factory(sqlite_engine), utcnow)
    reply = await client.complete(offline_request(10, []))
    valid, dropped = validate_variants(
        parse_variants(reply.text), ACTIVE, {content_hash(ACTIVE): 1}
    )
    assert dropped == [] and len(valid) == 10  # all distinct
    assert all("generic clarity guidance" in (v.change_notes or "") for v in valid)


async def test_offline_ignores_limits_and_answers_failure_themes(sqlite_engine: Engine) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    for _ in range(3):
        add_row(sqlite_engine, now - timedelta(minutes=1), cost=100.0)
    client = OfflineClient(session_factory(sqlite_engine), lambda: now)
    reply = await client.complete(request(purpose="failure_themes"))
    assert reply.text == '{"themes": []}'
    with pytest.raises(LlmError, match="purpose 'summarise'"):
        await client.complete(request(purpose="summarise"))
    assert [r.provider for r in rows(sqlite_engine)] == ["anthropic"] * 3 + ["offline"]
