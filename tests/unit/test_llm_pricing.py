"""Prices per model, prompt-cache factors, and the worst case used by the budget."""

from __future__ import annotations

import pytest

from optimizer.llm.pricing import (
    MOST_EXPENSIVE,
    PRICES,
    cost_usd,
    is_known,
    price_of,
    worst_case_cost,
)


@pytest.mark.parametrize(
    ("model", "input_usd", "output_usd"),
    [
        ("claude-opus-5-5", 4.0, 20.0),
        ("claude-sonnet-5-5", 2.0, 10.0),
        ("claude-sonnet-5", 2.0, 10.0),
        ("claude-haiku-4-5", 1.0, 5.0),
    ],
)
def test_known_prices_per_million_tokens(model: str, input_usd: float, output_usd: float) -> None:
    assert cost_usd(model, 1_000_000, 0) == pytest.approx(input_usd)
    assert cost_usd(model, 0, 1_000_000) == pytest.approx(output_usd)


def test_a_call_adds_input_output_and_cache_parts() -> None:
    # sonnet: $2 in, $10 out; cache write 1.25x and read 0.1x of the input price.
    cost = cost_usd(
        "claude-sonnet-5-5", 1000, 500, cache_write_tokens=2000, cache_read_tokens=10_000
    )
    expected = (1000 * 2 + 500 * 10 + 2000 * 2.5 + 10_000 * 0.2) / 1_000_000
    assert cost == pytest.approx(expected)
    assert cost == pytest.approx(0.014)


def test_cache_factors_on_opus() -> None:
    assert cost_usd("claude-opus-5-5", 0, 0, cache_write_tokens=1_000_000) == pytest.approx(5.0)
    assert cost_usd("claude-opus-5-5", 0, 0, cache_read_tokens=1_000_000) == pytest.approx(0.4)


def test_dated_snapshot_costs_what_its_family_costs() -> None:
    assert price_of("claude-haiku-4-5-20251001") == PRICES["claude-haiku-4-5"]
    assert is_known("claude-haiku-4-5-20251001")


@pytest.mark.parametrize("model", ["claude-future-9", "gpt-whatever", "", "claude-sonnet-5-5x"])
def test_unknown_model_is_charged_the_most_expensive_price(model: str) -> None:
    assert not is_known(model)
    assert price_of(model) == MOST_EXPENSIVE == PRICES["claude-opus-5-5"]
    assert cost_usd(model, 1_000_000, 1_000_000) == pytest.approx(24.0)


def test_zero_tokens_cost_nothing() -> None:
    assert cost_usd("claude-sonnet-5-5", 0, 0) == 0.0


def test_worst_case_counts_chars_over_three_at_full_price_plus_all_output() -> None:
    # 30_000 chars -> 10_000 input tokens at $2/M, plus 8000 output tokens at $10/M.
    assert worst_case_cost("claude-sonnet-5-5", 30_000, 8000) == pytest.approx(0.02 + 0.08)
    # Partial tokens round up; an unknown model is priced as opus.
    assert worst_case_cost("claude-sonnet-5-5", 4, 0) == pytest.approx(2 * 2 / 1_000_000)
    assert worst_case_cost("mystery", 3, 1) == pytest.approx((4 + 20) / 1_000_000)


def test_worst_case_is_never_below_the_cost_of_a_call_it_allows() -> None:
    chars, max_tokens = 12_000, 4000
    worst = worst_case_cost("claude-opus-5-5", chars, max_tokens)
    # A real call with ~4 chars a token and some output is cheaper.
    assert cost_usd("claude-opus-5-5", chars // 4, max_tokens // 2) < worst
