"""Every rule a proposed prompt must pass."""

from __future__ import annotations

import pytest

from optimizer.prompt_text import MAX_CONTENT_CHARS, MAX_NOTES_CHARS, content_hash
from optimizer.variants.parse import ParsedVariant
from optimizer.variants.validate import (
    LENGTH_SLACK_CHARS,
    check_variant,
    clean_notes,
    length_limit,
    placeholders,
    validate_variants,
)

ACTIVE = "Hello {{name}}, you asked about {{ topic }}. Be helpful."


def v(content: str, notes: str | None = None) -> ParsedVariant:
    return ParsedVariant(content, notes)


def test_good_variant_passes() -> None:
    assert check_variant("Hi {{name}}! Topic: {{ topic }}. Be very helpful.", ACTIVE) is None


def test_empty_is_dropped() -> None:
    assert check_variant("", ACTIVE) is not None
    assert "empty" in (check_variant(" \n\t ", ACTIVE) or "")


def test_length_limit_rule() -> None:
    short = "x" * 100
    assert length_limit(short) == 100 + LENGTH_SLACK_CHARS
    long = "x" * 10_000
    assert length_limit(long) == 20_000
    assert length_limit("x" * 90_000) == MAX_CONTENT_CHARS
    assert check_variant("y" * (100 + LENGTH_SLACK_CHARS), short) is None
    reason = check_variant("y" * (101 + LENGTH_SLACK_CHARS), short)
    assert reason is not None and "too long" in reason and str(100 + LENGTH_SLACK_CHARS) in reason


def test_missing_placeholder_is_dropped() -> None:
    reason = check_variant("Hello {{name}}. Be helpful.", ACTIVE)
    assert reason is not None and "drops placeholder" in reason and "{{ topic }}" in reason


def test_placeholder_spacing_must_be_kept() -> None:
    reason = check_variant("Hello {{name}}, {{topic}}.", ACTIVE)
    assert reason is not None and "{{ topic }}" in reason


def test_new_placeholder_is_dropped() -> None:
    reason = check_variant("Hello {{name}} {{ topic }} {{account_id}}", ACTIVE)
    assert reason is not None and "adds placeholder" in reason and "{{account_id}}" in reason


def test_placeholder_may_repeat_or_move() -> None:
    assert check_variant("{{ topic }} first, {{name}}, again {{name}}", ACTIVE) is None


def test_placeholder_regex() -> None:
    assert placeholders("{{a}} {{ b_c }} {{d.e}} {{ f-g }} { {x} } {{1bad}} {{}}") == {
        "{{a}}",
        "{{ b_c }}",
        "{{d.e}}",
        "{{ f-g }}",
    }


def test_unstorable_text_is_dropped() -> None:
    assert "NUL" in (check_variant("a\x00b", "ab") or "")
    assert "surrogate" in (check_variant("a\ud800b", "ab") or "")


@pytest.mark.parametrize("char", ["\x1b", "\x07", "\x7f", "\x85", "\u202e", "\u2066"])
def test_invisible_characters_are_dropped(char: str) -> None:
    reason = check_variant(f"Be kind about z{char}[31mRED.", "Be kind.")
    assert reason is not None and f"U+{ord(char):04X}" in reason


def test_tabs_and_line_breaks_are_fine() -> None:
    assert check_variant("Be kind.\n\tAlways.\r\nReally.", "Be kind.") is None


def test_identical_to_existing_version_is_dropped() -> None:
    valid, dropped = validate_variants(
        [v(ACTIVE), v("Hi {{name}} {{ topic }}")], ACTIVE, {content_hash(ACTIVE): 4}
    )
    assert [x.index for x in valid] == [2]
    assert dropped[0].index == 1 and dropped[0].reason == "identical to version 4"


def test_whitespace_change_is_a_change() -> None:
    valid, dropped = validate_variants([v(ACTIVE + " ")], ACTIVE, {content_hash(ACTIVE): 1})
    # Outer whitespace was already stripped by parsing; what reaches here is compared exactly.
    assert len(valid) == 1 and not dropped


def test_duplicate_within_batch_is_dropped() -> None:
    text = "Hi {{name}} about {{ topic }}."
    valid, dropped = validate_variants(
        [v(text, "a"), v("Other {{name}} {{ topic }}"), v(text, "b")], ACTIVE, {}
    )
    assert [(x.index, x.change_notes) for x in valid] == [(1, "a"), (2, None)]
    assert [(d.index, d.reason) for d in dropped] == [(3, "identical to variant 1 of this reply")]


def test_invalid_variant_does_not_block_a_later_identical_valid_one() -> None:
    valid, dropped = validate_variants([v(""), v("")], "x", {})
    assert not valid and [d.index for d in dropped] == [1, 2]


def test_every_reason_is_reported_with_index() -> None:
    valid, dropped = validate_variants(
        [v("Hello {{name}} {{ topic }} fine"), v("no placeholders"), v("")], ACTIVE, {}
    )
    assert [x.index for x in valid] == [1]
    assert [d.index for d in dropped] == [2, 3]
    assert all(d.to_dict()["reason"] for d in dropped)


def test_notes_are_made_storable() -> None:
    assert clean_notes(None) is None
    assert clean_notes("  ") is None
    assert clean_notes("a\x00b") == "ab"
    assert clean_notes("a\ud800") == "a?"
    long = clean_notes("n" * (MAX_NOTES_CHARS + 50))
    assert long is not None and len(long) == MAX_NOTES_CHARS and long.endswith("…")
