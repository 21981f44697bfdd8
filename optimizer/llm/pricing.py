"""What a call to Claude costs, in US dollars. Pure.

Prices are per million tokens. Anthropic bills prompt-cache writes at 1.25x and cache reads
at 0.1x the input price; `input_tokens` in the API's usage excludes both, so the three are
added. A model we have no price for is charged at the most expensive known price, so the
daily budget errs on the side of stopping early rather than overspending.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PER_MILLION = 1_000_000
CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1
# Prose is about 4 characters a token; 3 over-estimates on purpose (a worst case).
CHARS_PER_TOKEN = 3


@dataclass(frozen=True)
class ModelPrice:
    input_usd: float  # per million input tokens
    output_usd: float  # per million output tokens


PRICES: dict[str, ModelPrice] = {
    "claude-opus-5-5": ModelPrice(4.0, 20.0),
    "claude-sonnet-5-5": ModelPrice(2.0, 10.0),
    "claude-sonnet-5": ModelPrice(2.0, 10.0),
    "claude-haiku-4-5": ModelPrice(1.0, 5.0),
}
MOST_EXPENSIVE = ModelPrice(
    max(p.input_usd for p in PRICES.values()), max(p.output_usd for p in PRICES.values())
)

# Pinned snapshots ("claude-haiku-4-5-20251001") cost what their family costs.
_DATE_SUFFIX = re.compile(r"-\d{8}$")


def price_of(model: str) -> ModelPrice:
    known = PRICES.get(model) or PRICES.get(_DATE_SUFFIX.sub("", model))
    return known if known is not None else MOST_EXPENSIVE


def is_known(model: str) -> bool:
    return model in PRICES or _DATE_SUFFIX.sub("", model) in PRICES


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
) -> float:
    price = price_of(model)
    input_part = (
        input_tokens
        + cache_write_tokens * CACHE_WRITE_FACTOR
        + cache_read_tokens * CACHE_READ_FACTOR
    ) * price.input_usd
    return (input_part + output_tokens * price.output_usd) / PER_MILLION


def worst_case_cost(model: str, input_chars_estimate: int, max_tokens: int) -> float:
    """The most a call can cost before it is made: every input token at the full price and
    every allowed output token used."""
    input_tokens = -(-max(input_chars_estimate, 0) // CHARS_PER_TOKEN)  # ceiling
    return cost_usd(model, input_tokens, max(max_tokens, 0))
