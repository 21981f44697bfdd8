"""The one interface every LLM call goes through.

Two implementations: `optimizer.llm.anthropic_client.AnthropicClient` (the real `anthropic`
SDK, streaming, retries, model fallback, usage recorded in `llm_calls`, call limits and the
daily budget) and `optimizer.llm.offline.OfflineClient` (deterministic, no network; only for
the demo and tests that ask for it with LLM_PROVIDER=offline).

Callers build an `LlmRequest` and get an `LlmReply` or one of the errors below. They never
build SDK clients themselves: handlers take the client from `ctx.llm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from optimizer.errors import PermanentJobError, PromptWorkerError

# Model aliases a job payload may use; anything else is taken as a full model id.
MODEL_ALIASES = ("sonnet", "opus")


@dataclass(frozen=True)
class LlmRequest:
    purpose: str  # what the call is for: "variant_generation", "failure_themes", "replay"
    model: str  # an alias ("sonnet", "opus") or a full model id
    system: str  # the large static instructions; marked for prompt caching
    user: str  # the per-call part (data, insights, transcripts); the latest user turn
    max_tokens: int = 8000
    job_id: int | None = None
    # Structured facts behind `user`, for the offline client, which cannot read prose.
    # The real client ignores it.
    context: dict[str, Any] = field(default_factory=dict)
    # Earlier turns of a conversation, (role, content) with role "user" or "assistant",
    # oldest first, sent before `user` (replay answers a logged conversation's later turns).
    history: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LlmReply:
    text: str
    provider: str  # "anthropic" or "offline"
    requested_model: str  # the full model id asked for first
    model: str  # the model that answered (differs after a fallback)
    fell_back: bool
    call_id: int | None  # the `llm_calls` row of the successful call
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0


class LlmError(PromptWorkerError):
    """The call failed after retries and fallback; a retry of the job may succeed."""


class LlmNotConfigured(PermanentJobError):
    """No ANTHROPIC_API_KEY (and not the offline provider): retrying cannot help."""


class LlmClient(Protocol):
    provider: str

    async def complete(self, request: LlmRequest) -> LlmReply:
        """Run one request. Raises LlmNotConfigured, LlmError, or JobDeferred (from
        optimizer.errors) when the hourly call limit or the daily budget is used up."""
        ...
