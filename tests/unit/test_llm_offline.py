"""The offline generator's variants: each piece of guidance once, however many insights
say the same thing."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from optimizer.llm.offline import variants_reply

PROMPT = "You are the support assistant."


def _insight(value: str, title: str) -> dict[str, object]:
    return {"title": title, "evidence": {"dimension": "segment", "value": value}}


def _contents(reply: str) -> list[str]:
    return re.findall(r"<improved_prompt>\n(.*?)\n</improved_prompt>", reply, re.S)


def test_duplicate_insights_give_one_sentence() -> None:
    # Four findings about one segment (success and rating, 24 h and 7 days), as the demo's.
    insights = [_insight("refund", f"segment 'refund': finding {i}") for i in range(4)]
    [content] = _contents(variants_reply(PROMPT, insights, 1))
    assert content.count("When the conversation is about refund:") == 1
    lines = [line for line in content.splitlines() if line]
    assert len(lines) == len(set(lines))


@given(
    st.lists(st.sampled_from(["billing", "refund", "shipping", "Billing"]), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=13),
)
def test_no_variant_repeats_a_line(values: list[str], n: int) -> None:
    insights = [_insight(v, f"finding {i} about {v}") for i, v in enumerate(values)]
    contents = _contents(variants_reply(PROMPT, insights, n))
    assert len(contents) == n
    for content in contents:
        guidance = [line for line in content.splitlines()[1:] if line]
        assert len(guidance) == len(set(guidance))
        # Every distinct segment among the first five insights is still addressed.
        for value in dict.fromkeys(values[:5]):
            assert re.search(rf"\b{value}\b", content)


@given(st.text(min_size=1, max_size=30))
def test_segment_names_from_conversations_reach_variants_only_as_visible_text(value: str) -> None:
    """A segment is whatever the application logged: control and bidi characters in it must
    not end up in a prompt."""
    [content] = _contents(variants_reply(PROMPT, [_insight(value, "finding")], 1))
    assert all(char.isprintable() or char == "\n" for char in content), repr(content)
