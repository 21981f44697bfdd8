"""The offline generator's variants: each piece of guidance once, however many insights
say the same thing; protected sections kept where they are; and, like a real model, a
harmful shortcut now and then for a segment it was not asked about."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from optimizer.llm.offline import HARM_SHARE, variants_reply, without_shortcuts
from optimizer.llm.offline_review import (
    SEGMENT_STEPS,
    SHORTCUTS,
    harmed_segments,
    has_guidance,
)
from optimizer.prompt_text import CLOSE_MARKER, OPEN_MARKER, content_hash, protected_sections
from optimizer.variants.parse import parse_variants
from optimizer.variants.validate import validate_variants

PROMPT = "You are the support assistant."
DEMO_SEGMENTS = list(SEGMENT_STEPS)


def _insight(value: str, title: str) -> dict[str, object]:
    return {"title": title, "evidence": {"dimension": "segment", "value": value}}


def _contents(reply: str) -> list[str]:
    return re.findall(r"<improved_prompt>\n(.*?)\n</improved_prompt>", reply, re.S)


def _notes(reply: str) -> list[str]:
    return re.findall(r"<change_notes>(.*?)</change_notes>", reply, re.S)


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


# --- protected sections --------------------------------------------------------------------

# Prompt text as people write it: Unicode, markup-looking text, placeholders, long lines.
WORDS = st.sampled_from(
    [
        "Legal:",
        "Terms §4.2",
        "日本語",
        "<script>alert(1)</script>",
        "{{name}}",
        "Ada",
        "🙂",
        "x" * 300,
    ]
)
TEXT = st.lists(WORDS, min_size=1, max_size=5).map(" ".join)


@st.composite
def prompts_ending_protected(draw: st.DrawFn) -> str:
    """A prompt whose end is one or more protected sections (inline or on lines of their
    own, with or without text between them), maybe with one at its start too."""
    head = draw(st.sampled_from(["", f"{OPEN_MARKER}\nYou are Ada.\n{CLOSE_MARKER}\n"]))
    body = draw(TEXT)
    trailing = draw(st.lists(TEXT, min_size=1, max_size=3))
    joints = draw(st.lists(st.sampled_from(["\n", "", "\nThen:\n"]), min_size=len(trailing)))
    own_line = draw(st.booleans())
    parts = []
    for text, joint in zip(trailing, joints, strict=False):
        section = (
            f"{OPEN_MARKER}\n{text}\n{CLOSE_MARKER}"
            if own_line
            else (f"{OPEN_MARKER}{text}{CLOSE_MARKER}")
        )
        parts.append(joint + section)
    return f"{head}{body}\n" + "".join(parts) + draw(st.sampled_from(["", "\n", "  \n"]))


@given(prompts_ending_protected(), st.sampled_from(DEMO_SEGMENTS), st.integers(1, 6))
def test_guidance_goes_before_protected_sections_that_end_the_prompt(
    prompt: str, segment: str, n: int
) -> None:
    reply = variants_reply(prompt, [_insight(segment, f"{segment} fails")], n)
    valid, dropped = validate_variants(parse_variants(reply), prompt, {content_hash(prompt): 1})
    assert dropped == [] and len(valid) == n
    for variant in valid:
        assert protected_sections(variant.content) == protected_sections(prompt)
        assert variant.content.rstrip().endswith(CLOSE_MARKER)
        assert has_guidance(variant.content, segment)


def test_a_prompt_that_is_all_protected_cannot_be_extended_and_its_variants_are_dropped() -> None:
    """Nothing may be added before a section that begins the prompt or after one that ends
    it: the generator appends, and validation drops the variant saying why."""
    prompt = f"{OPEN_MARKER}\nYou are Ada. Never give legal advice.\n{CLOSE_MARKER}"
    reply = variants_reply(prompt, [_insight("billing", "billing fails")], 2)
    valid, dropped = validate_variants(parse_variants(reply), prompt, {content_hash(prompt): 1})
    assert valid == [] and len(dropped) == 2
    assert all("was moved" in d.reason for d in dropped)


def test_a_prompt_with_malformed_markers_gets_the_guidance_at_its_end() -> None:
    prompt = f"Help the user.\n{OPEN_MARKER}\nnever closed"
    [content] = _contents(variants_reply(prompt, [_insight("billing", "billing fails")], 1))
    assert content.startswith(prompt) and has_guidance(content, "billing")


# --- harmful shortcuts ---------------------------------------------------------------------

ASKED = st.lists(st.sampled_from([*DEMO_SEGMENTS, "refund", "vip"]), max_size=3, unique=True)


@given(ASKED, st.integers(1, 10), st.sampled_from([PROMPT, PROMPT + "\n" + SHORTCUTS["returns"]]))
def test_a_shortcut_is_only_ever_for_a_segment_not_asked_about_and_the_notes_say_so(
    asked: list[str], n: int, prompt: str
) -> None:
    insights = [_insight(value, f"{value} fails") for value in asked]
    reply = variants_reply(prompt, insights, n)
    assert reply == variants_reply(prompt, insights, n)  # deterministic
    before = set(harmed_segments(without_shortcuts(prompt, asked)))
    for content, notes in zip(_contents(reply), _notes(reply), strict=True):
        added = set(harmed_segments(content)) - before
        assert len(added) <= 1 and not added & set(asked)
        if added:
            assert f"made {added.pop()} answers more concise" in notes
        else:
            assert "more concise" not in notes
        for value in asked:
            assert has_guidance(content, value)


def test_about_harm_share_of_variants_carry_a_shortcut() -> None:
    """The hash picks variants evenly: over many generations about HARM_SHARE of them."""
    harmed = total = 0
    for segment in DEMO_SEGMENTS:
        for title in range(30):
            insights = [_insight(segment, f"{segment} finding {title}")]
            for content in _contents(variants_reply(PROMPT, insights, 3)):
                total += 1
                harmed += bool(harmed_segments(content))
    assert abs(harmed / total - HARM_SHARE) < 0.1


@given(st.sampled_from(DEMO_SEGMENTS), st.integers(1, 6))
def test_a_variant_asked_about_a_segment_drops_the_shortcut_that_hurts_it(
    segment: str, n: int
) -> None:
    prompt = f"{PROMPT}\n{SHORTCUTS[segment]}\nBe polite."
    for content in _contents(variants_reply(prompt, [_insight(segment, "fails")], n)):
        assert segment not in harmed_segments(content)
        assert "Be polite." in content and has_guidance(content, segment)


def test_a_shortcut_inside_a_protected_section_stays() -> None:
    prompt = f"{PROMPT}\n{OPEN_MARKER}\n{SHORTCUTS['billing']}\n{CLOSE_MARKER}\nBe polite."
    reply = variants_reply(prompt, [_insight("billing", "billing fails")], 3)
    valid, dropped = validate_variants(parse_variants(reply), prompt, {content_hash(prompt): 1})
    assert dropped == [] and len(valid) == 3
    assert all(SHORTCUTS["billing"] in v.content for v in valid)
