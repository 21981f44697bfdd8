"""Before the demo uses Claude: one small request to learn at once whether the API answers.

Without it, an unreachable API or a rejected key showed up as one failed call per simulated
hour (each with the SDK's retries), minutes of waiting and no variants. One request with
max_tokens=1, no retries and a short timeout tells the cases apart in seconds; the key
never appears in what it returns.
"""

from __future__ import annotations

import anthropic

from optimizer.config import Settings

PROBE_TIMEOUT_SECONDS = 10.0
PROBE_MAX_TOKENS = 1
STATUS_MEANINGS = {
    401: "the Anthropic API rejected ANTHROPIC_API_KEY (HTTP 401); check the key",
    403: "ANTHROPIC_API_KEY may not use the Messages API or model {model} (HTTP 403)",
    404: "the Anthropic API at {where} answered HTTP 404: check that model {model} "
    "(LLM_MODEL_SONNET) exists and that ANTHROPIC_BASE_URL, if set, is the API",
    429: "the Anthropic API is rate limiting this key (HTTP 429); try again later",
    529: "the Anthropic API is overloaded (HTTP 529); try again later",
}


async def probe_anthropic(
    settings: Settings, *, base_url: str | None = None, timeout: float = PROBE_TIMEOUT_SECONDS
) -> str | None:
    """None when the API answers a tiny request; else what is wrong, in one line.
    `base_url` None: the SDK's (ANTHROPIC_BASE_URL or the public API)."""
    model = settings.llm_model_sonnet
    client = anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key, base_url=base_url, max_retries=0, timeout=timeout
    )
    where = str(client.base_url).rstrip("/")
    try:
        await client.messages.create(
            model=model,
            max_tokens=PROBE_MAX_TOKENS,
            messages=[{"role": "user", "content": "Reply with one word."}],
        )
    except anthropic.APITimeoutError:
        return f"the Anthropic API at {where} did not answer within {timeout:g} s"
    except anthropic.APIConnectionError:
        return f"cannot reach the Anthropic API at {where} (connection failed)"
    except anthropic.APIStatusError as exc:
        meaning = STATUS_MEANINGS.get(exc.status_code)
        if meaning is not None:
            return meaning.format(model=model, where=where)
        return f"the Anthropic API at {where} answered HTTP {exc.status_code}"
    finally:
        await client.close()
    return None
