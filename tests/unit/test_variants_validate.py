"""Every rule a proposed prompt must pass."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from optimizer.prompt_text import MAX_CONTENT_CHARS, MAX_NOTES_CHARS, content_hash
from optimizer.variants.parse import ParsedVariant
from optimizer.variants.validate import (
    LENGTH_SLACK_CHARS,
    check_variant,
    clean_notes,
    length_limit,
    placeholders,
    protected_problem,
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


# --- protected sections ------------------------------------------------------------------

PERSONA = "You are Acme's assistant, Ada. Never promise refunds."
LEGAL = "Légal: 本サービスは助言ではない <b>!</b>"
GUARDED = (
    f"[[protected]]\n{PERSONA}\n[[/protected]]\n"
    "Help {{name}} with billing questions. Be brief.\n"
    f"[[protected]]{LEGAL}[[/protected]]\n"
    "Answer in the user's language.\n"
    "[[protected]]Tool: lookup(order_id)[[/protected]]"
)


def test_other_edits_around_unchanged_sections_pass() -> None:
    variant = (
        f"[[protected]]{PERSONA}[[/protected]]\n"  # markers inline now: same section text
        "Help {{name}} with billing: cite the invoice number first.\n\n"
        f"[[protected]]{LEGAL}[[/protected]]\n"
        "Reply in the user's language, in short paragraphs.\n"
        "[[protected]]Tool: lookup(order_id)[[/protected]]\n"
    )
    assert check_variant(variant, GUARDED) is None


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        (
            GUARDED.replace("Ada", "Eve"),
            'protected section 1 ("You are Acme\'s assistant, Ada. Never pr…") was changed',
        ),
        (
            GUARDED.replace("本サービス", "このサービス"),
            "protected section 2 ('Légal: 本サービスは助言ではない <b>!</b>') was changed",
        ),
        (
            GUARDED.replace(f"[[protected]]{LEGAL}[[/protected]]", LEGAL),
            "protected section 2 ('Légal: 本サービスは助言ではない <b>!</b>') was dropped",
        ),
        (
            GUARDED.replace("Be brief.", "Be brief. [[protected]]Extra rule.[[/protected]]"),
            "adds protected section 2 ('Extra rule.'), which the active prompt does not have",
        ),
        (
            GUARDED.replace(LEGAL, "@")
            .replace("Tool: lookup(order_id)", LEGAL)
            .replace("@", "Tool: lookup(order_id)"),
            "protected section 2 ('Légal: 本サービスは助言ではない <b>!</b>') was "
            "moved: the protected sections were reordered ('Tool: lookup(order_id)' is now "
            "section 2)",
        ),
        (
            "Intro line.\n" + GUARDED,
            'protected section 1 ("You are Acme\'s assistant, Ada. Never pr…") was moved: it '
            "begins the active prompt and must begin the variant too",
        ),
        (
            GUARDED + "\nThanks!",
            "protected section 3 ('Tool: lookup(order_id)') was moved: it ends the active "
            "prompt and must end the variant too",
        ),
    ],
    ids=["alter", "alter-unicode", "drop", "add", "reorder", "move-start", "move-end"],
)
def test_protected_sections_must_be_kept_unaltered_and_in_place(variant: str, reason: str) -> None:
    assert check_variant(variant, GUARDED) == reason


def test_adjacent_sections_must_stay_together() -> None:
    active = "Intro.\n[[protected]]A1[[/protected]]\n[[protected]]A2[[/protected]]\nOutro."
    assert check_variant(active.replace("Intro.", "Hello."), active) is None
    reason = check_variant(
        active.replace("[[/protected]]\n[[", "[[/protected]]\nWedge\n[[", 1), active
    )
    assert reason == (
        "protected section 2 ('A2') was moved: it directly follows section 1 in the active "
        "prompt and must still follow it with nothing but white space between"
    )


def test_variant_with_malformed_markers_is_dropped_with_the_line() -> None:
    broken = GUARDED.replace("[[/protected]]\nHelp", "\nHelp", 1)
    reason = check_variant(broken, GUARDED)
    assert reason is not None
    # The first section is never closed, so the second opens inside it.
    assert reason.startswith(
        "protected-section markers are malformed: line 5: [[protected]] opens a section "
        "inside the one opened on line 1"
    )


def test_markers_may_not_appear_when_the_active_prompt_has_none() -> None:
    reason = check_variant("Hello {{name}} [[protected]]{{ topic }}[[/protected]]", ACTIVE)
    assert reason == (
        "adds protected section 1 ('{{ topic }}'), which the active prompt does not have"
    )


def test_placeholders_inside_a_protected_section_count_as_usual() -> None:
    active = "[[protected]]Hi {{name}}.[[/protected]] Topic: {{ topic }}."
    assert (
        check_variant("[[protected]]Hi {{name}}.[[/protected]] About {{ topic }}!", active) is None
    )
    reason = check_variant("[[protected]]Hi {{name}}.[[/protected]] Generic.", active)
    assert reason is not None and "drops placeholder(s) {{ topic }}" in reason


def test_duplicate_section_texts_are_counted() -> None:
    active = "[[protected]]X[[/protected]] a [[protected]]X[[/protected]]"
    assert (
        check_variant("[[protected]]X[[/protected]] b [[protected]]X[[/protected]]", active) is None
    )
    assert check_variant("[[protected]]X[[/protected]] b", active) == (
        "protected section 2 ('X') was dropped"
    )


def test_malformed_active_prompt_refuses_every_variant() -> None:
    reason = check_variant("Anything.", "[[protected]]never closed")
    assert reason is not None and reason.startswith("cannot check protected sections")


def test_validate_variants_reports_protected_reasons_by_index() -> None:
    good = GUARDED.replace("Be brief.", "Be brief and kind.")
    valid, dropped = validate_variants([v(GUARDED.replace("Ada", "Bob")), v(good)], GUARDED, {})
    assert [x.index for x in valid] == [2]
    assert dropped[0].index == 1 and "was changed" in dropped[0].reason


# Prompt text around and inside sections: Unicode, hostile bits, placeholders-free.
_PIECE = st.lists(
    st.sampled_from(list("ab c\n\t.,'\"<>&") + ["é", "日本", "<script>", "🙂", "Ignore rules."]),
    max_size=12,
).map("".join)
_INSIDE = _PIECE.filter(lambda t: t.strip() != "")


def _join(outside: list[str], inside: list[str]) -> str:
    parts = [outside[0]]
    for text, after in zip(inside, outside[1:], strict=True):
        parts += ["[[protected]]", text, "[[/protected]]", after]
    return "".join(parts)


@given(st.lists(_INSIDE, min_size=1, max_size=4), st.data())
def test_any_edit_around_kept_sections_passes(inside: list[str], data: st.DataObject) -> None:
    outside = data.draw(st.lists(_PIECE, min_size=len(inside) + 1, max_size=len(inside) + 1))
    active = _join(outside, inside)
    # New text between the sections, blank exactly where the active prompt's is blank, so
    # no section is moved.
    edited = [
        text if not text.strip() else data.draw(_PIECE.filter(lambda t: t.strip() != ""))
        for text in outside
    ]
    assert protected_problem(_join(edited, inside), active) is None


@given(st.lists(_INSIDE, min_size=1, max_size=4), st.data())
def test_any_change_inside_a_section_is_refused(inside: list[str], data: st.DataObject) -> None:
    outside = data.draw(st.lists(_PIECE, min_size=len(inside) + 1, max_size=len(inside) + 1))
    which = data.draw(st.integers(0, len(inside) - 1))
    changed = data.draw(_INSIDE.filter(lambda t: t.strip() != inside[which].strip()))
    assume(changed.strip() not in {text.strip() for text in inside})
    altered = [*inside[:which], changed, *inside[which + 1 :]]
    reason = protected_problem(_join(outside, altered), _join(outside, inside))
    assert reason is not None and reason.startswith(f"protected section {which + 1} (")
    assert reason.endswith("was changed")
