"""The real LLM client: the `anthropic` SDK, streaming, with model fallback and limits.

Per attempt: check the hourly call limit and the daily budget, stream the reply (long
outputs would hit the SDK's non-streaming time limit), record one `llm_calls` row. The SDK
retries 429, 5xx and connection errors itself (LLM_MAX_RETRIES). What is left after that:

- 529 overloaded (also as an error event inside the stream): try the other model once;
- 429 rate limited: defer the job until the server's retry-after;
- 400/401/403/404/413/422: retrying cannot help -> PermanentJobError;
- anything else (5xx, timeouts, a broken or truncated stream, empty text) -> LlmError,
  and the queue retries the job later.

The base URL is not passed, so the SDK honours ANTHROPIC_BASE_URL (tests point it at a
local fake). Keys and transcripts never reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
from sqlalchemy.orm import Session, sessionmaker

from optimizer.clock import iso
from optimizer.config import Settings
from optimizer.errors import JobDeferred, PermanentJobError, PromptWorkerError
from optimizer.llm import usage
from optimizer.llm.client import LlmError, LlmReply, LlmRequest
from optimizer.llm.pricing import cost_usd, worst_case_cost

log = logging.getLogger(__name__)

PROVIDER = "anthropic"
# The SDK's own default; with streaming it bounds each wait for the next chunk.
REQUEST_TIMEOUT_SECONDS = 600.0
DEFAULT_RATE_LIMIT_WAIT = timedelta(seconds=60)
# A 429 asking for a longer wait than this defers the job at once instead of letting the
# SDK sleep through it while holding a worker slot.
MAX_INLINE_RETRY_WAIT_SECONDS = 30.0
PERMANENT = {
    400: "the Anthropic API rejected the request as invalid",
    401: "the Anthropic API rejected ANTHROPIC_API_KEY; set a valid key",
    403: "ANTHROPIC_API_KEY is not allowed to make this request (check the key's "
    "workspace and model access)",
    404: "the Anthropic API does not know model {model}; check LLM_MODEL_SONNET, "
    "LLM_MODEL_OPUS or the job's model",
    413: "the request is too large for the Anthropic API",
    422: "the Anthropic API could not process the request",
}


@dataclass(frozen=True)
class Failure:
    outcome: str  # the llm_calls outcome
    detail: str  # for the row and the log: no key, no transcript
    error: PromptWorkerError


class _Overloaded(LlmError):
    """529 after the SDK's retries: worth one try on the other model."""


@dataclass(frozen=True)
class _Attempt:
    request: LlmRequest
    model: str
    requested_model: str
    fell_back: bool


class AnthropicClient:
    provider = PROVIDER

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        *,
        base_url: str | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        if not settings.anthropic_api_key:
            raise ValueError("AnthropicClient needs settings.anthropic_api_key")
        self._settings, self._sessions, self._clock = settings, sessions, clock
        self._base_url, self._timeout = base_url, timeout
        # Built on first use, inside the running event loop (no network either way).
        self._sdk: anthropic.AsyncAnthropic | None = None

    def resolve(self, model: str) -> str:
        return {
            "sonnet": self._settings.llm_model_sonnet,
            "opus": self._settings.llm_model_opus,
        }.get(model, model)

    def fallback_for(self, model: str) -> str:
        sonnet, opus = self._settings.llm_model_sonnet, self._settings.llm_model_opus
        return opus if model == sonnet else sonnet

    async def complete(self, request: LlmRequest) -> LlmReply:
        first = self.resolve(request.model)
        try:
            return await self._attempt(_Attempt(request, first, first, fell_back=False))
        except _Overloaded:
            pass  # one try on the other model, below
        second = self.fallback_for(first)
        log.warning(
            "llm model overloaded, falling back",
            extra={"model": first, "fallback": second, "purpose": request.purpose},
        )
        try:
            return await self._attempt(_Attempt(request, second, first, fell_back=True))
        except _Overloaded:
            raise LlmError(
                f"Anthropic reports {first} and {second} overloaded (HTTP 529) "
                "after retries; the job will be retried later"
            ) from None

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    def _client(self) -> anthropic.AsyncAnthropic:
        if self._sdk is None:
            options: dict[str, Any] = {}
            # Older SDKs have no middleware; they only lose the early deferral.
            if "middleware" in inspect.signature(anthropic.AsyncAnthropic).parameters:
                options["middleware"] = [_no_long_inline_waits]
            self._sdk = anthropic.AsyncAnthropic(
                api_key=self._settings.anthropic_api_key,
                base_url=self._base_url,
                max_retries=self._settings.llm_max_retries,
                timeout=self._timeout,
                **options,
            )
        return self._sdk

    async def _attempt(self, attempt: _Attempt) -> LlmReply:
        request = attempt.request
        estimate = worst_case_cost(attempt.model, _input_chars(request), request.max_tokens)
        await asyncio.to_thread(
            usage.check_limits,
            self._sessions,
            self._settings,
            now=self._clock(),
            estimate_usd=estimate,
        )
        started = time.monotonic()
        try:
            message = await self._stream(request, attempt.model)
            text = reply_text(message)
        except asyncio.CancelledError:
            # The job was cancelled or timed out mid-call; tokens may be billed, so the
            # attempt is still recorded and counts against the hourly limit.
            cancelled = Failure(
                "error", "cancelled before the reply was complete", LlmError("cancelled")
            )
            await asyncio.shield(self._record_failure(attempt, cancelled, started))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
            failure = classify(exc, now=self._clock(), model=attempt.model)
            await self._record_failure(attempt, failure, started)
            if failure.outcome == "overloaded":
                raise _Overloaded(failure.detail) from None
            raise failure.error from None
        return await self._success(attempt, message, text, started)

    async def _stream(self, request: LlmRequest, model: str) -> Any:
        system: Any = [
            {"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}
        ]
        async with self._client().messages.stream(
            model=model,
            max_tokens=request.max_tokens,
            system=system,
            messages=messages_of(request),
        ) as stream:
            return await stream.get_final_message()

    async def _success(
        self, attempt: _Attempt, message: Any, text: str, started: float
    ) -> LlmReply:
        tokens = usage_tokens(message)
        answered = getattr(message, "model", None) or attempt.model
        cost = cost_usd(answered, *tokens)
        call_id = await asyncio.to_thread(
            usage.record_call,
            self._sessions,
            usage.CallRecord(
                purpose=attempt.request.purpose,
                requested_model=attempt.requested_model,
                model=answered,
                provider=PROVIDER,
                outcome="ok",
                created_at=self._clock(),
                job_id=attempt.request.job_id,
                latency_ms=_elapsed_ms(started),
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                cache_creation_input_tokens=tokens[2],
                cache_read_input_tokens=tokens[3],
                cost_usd=cost,
            ),
        )
        log.info(
            "llm call ok",
            extra={
                "call_id": call_id,
                "purpose": attempt.request.purpose,
                "model": answered,
                "fell_back": attempt.fell_back,
                "input_tokens": tokens[0],
                "output_tokens": tokens[1],
                "cost_usd": round(cost, 6),
                "stop_reason": getattr(message, "stop_reason", None),
            },
        )
        return LlmReply(
            text=text,
            provider=PROVIDER,
            requested_model=attempt.requested_model,
            model=answered,
            fell_back=attempt.fell_back,
            call_id=call_id,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            cache_creation_input_tokens=tokens[2],
            cache_read_input_tokens=tokens[3],
            cost_usd=cost,
        )

    async def _record_failure(self, attempt: _Attempt, failure: Failure, started: float) -> None:
        await asyncio.to_thread(
            usage.record_call,
            self._sessions,
            usage.CallRecord(
                purpose=attempt.request.purpose,
                requested_model=attempt.requested_model,
                model=attempt.model,
                provider=PROVIDER,
                outcome=failure.outcome,
                created_at=self._clock(),
                job_id=attempt.request.job_id,
                latency_ms=_elapsed_ms(started),
                error=failure.detail,
            ),
        )
        log.warning(
            "llm call failed",
            extra={
                "purpose": attempt.request.purpose,
                "model": attempt.model,
                "outcome": failure.outcome,
                "error": failure.detail[:200],
            },
        )


def messages_of(request: LlmRequest) -> list[Any]:
    """The request's conversation for the Messages API: its history, then `user`."""
    return [
        *({"role": role, "content": content} for role, content in request.history),
        {"role": "user", "content": request.user},
    ]


def _input_chars(request: LlmRequest) -> int:
    return (
        len(request.system)
        + len(request.user)
        + sum(len(content) for _, content in request.history)
    )


def classify(exc: Exception, *, now: datetime, model: str) -> Failure:
    """What an exception from one streamed call means for the row and for the job."""
    if isinstance(exc, anthropic.APIStatusError):
        return _status_failure(exc, now=now, model=model)
    if isinstance(exc, LlmError):  # raised by reply_text
        return Failure("error", str(exc), exc)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or names & {"APITimeoutError", "TimeoutException"}:
        detail = "the request to the Anthropic API timed out"
        return Failure("timeout", detail, LlmError(detail + "; the job will be retried"))
    if isinstance(exc, anthropic.APIConnectionError):
        detail = "could not reach the Anthropic API (connection error)"
        return Failure("error", detail, LlmError(detail + "; the job will be retried"))
    # Bad JSON, events out of order, a dropped connection while reading the stream.
    detail = f"malformed or interrupted stream from the Anthropic API ({type(exc).__name__})"
    return Failure("error", detail, LlmError(detail + "; the job will be retried"))


def _status_failure(exc: anthropic.APIStatusError, *, now: datetime, model: str) -> Failure:
    status, kind = exc.status_code, getattr(exc, "type", None)
    said = usage.redact(str(getattr(exc, "api_message", None) or ""))
    detail = f"HTTP {status} {kind or 'error'}: {said}"
    detail = detail.rstrip(": ")
    if status == 529 or kind == "overloaded_error":
        return Failure("overloaded", detail, LlmError(detail))
    if status == 429:
        wait = retry_after_seconds(exc.response.headers, now=now)
        until = now + (
            timedelta(seconds=max(wait, 1.0)) if wait is not None else DEFAULT_RATE_LIMIT_WAIT
        )
        return Failure(
            "rate_limited",
            detail,
            JobDeferred(
                f"the Anthropic API rate limit was hit for {model} (HTTP 429) after retries; "
                f"the job waits until {iso(until)}",
                until=until,
            ),
        )
    if status in PERMANENT:
        message = PERMANENT[status].format(model=model)
        return Failure("error", detail, PermanentJobError(f"{message} ({detail[:300]})"))
    return Failure(
        "error",
        detail,
        LlmError(f"the Anthropic API failed: {detail[:300]}; the job will be retried"),
    )


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime) -> float | None:
    """The server's requested wait: retry-after-ms, retry-after in seconds, or a date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(headers.get(name, "")) * scale
        except ValueError:
            continue
    try:
        parsed = email.utils.parsedate_to_datetime(headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:  # "-0000" dates: UTC by RFC 5322
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - now).total_seconds()


async def _no_long_inline_waits(request: Any, call_next: Any) -> Any:
    response = await call_next(request)
    http = response.http_response
    wait = retry_after_seconds(http.headers, now=datetime.now().astimezone())
    if http.status_code == 429 and wait is not None and wait > MAX_INLINE_RETRY_WAIT_SECONDS:
        http.headers["x-should-retry"] = "false"  # the SDK obeys this over its own policy
    return response


def reply_text(message: Any) -> str:
    if getattr(message, "stop_reason", None) is None:
        # message_stop never arrived: the stream ended early, the text may be cut anywhere.
        raise LlmError("the Anthropic stream ended before the message was complete")
    text = "".join(
        block.text for block in message.content if getattr(block, "type", None) == "text"
    )
    if not text.strip():
        raise LlmError(f"the model returned no text (stop_reason={message.stop_reason})")
    return text


def usage_tokens(message: Any) -> tuple[int, int, int, int]:
    """input, output, cache write, cache read; a missing count is 0."""
    used = getattr(message, "usage", None)
    values = [
        getattr(used, name, None)
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    ]
    counts = [v if isinstance(v, int) else 0 for v in values]
    return counts[0], counts[1], counts[2], counts[3]


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 1)
