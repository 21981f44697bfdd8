"""LLM access: `build_llm_client` picks the implementation from the settings.

The implementations are imported on demand: the `anthropic` SDK is slow to import and only
the service's handlers need it, not the CLI's other commands.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from optimizer.config import Settings
from optimizer.errors import ConfigError
from optimizer.llm.client import LlmClient, LlmNotConfigured, LlmReply, LlmRequest

__all__ = ["LlmClient", "LlmReply", "LlmRequest", "NotConfiguredClient", "build_llm_client"]


class NotConfiguredClient:
    """Stands in for the Anthropic client when no key is set: the service still starts
    (analysis, experiments and the API work), and only jobs that need Claude fail, with
    a message that says what to set."""

    provider = "anthropic"

    async def complete(self, request: LlmRequest) -> LlmReply:
        raise LlmNotConfigured(
            f"cannot call Claude for {request.purpose!r}: ANTHROPIC_API_KEY is not set. Set "
            "ANTHROPIC_API_KEY, or LLM_PROVIDER=offline for the demo and tests (offline "
            "variants are not written by a model)."
        )


def build_llm_client(
    settings: Settings, sessions: sessionmaker[Session], clock: Callable[[], datetime]
) -> LlmClient:
    """The client for `settings.llm_provider`. Makes no network call."""
    if settings.llm_provider == "offline":
        from optimizer.llm.offline import OfflineClient

        return OfflineClient(sessions, clock)
    if settings.llm_provider != "anthropic":
        raise ConfigError(
            f"LLM_PROVIDER must be anthropic or offline, got {settings.llm_provider!r}"
        )
    if not settings.anthropic_api_key:
        return NotConfiguredClient()
    from optimizer.llm.anthropic_client import AnthropicClient

    return AnthropicClient(settings, sessions, clock)
