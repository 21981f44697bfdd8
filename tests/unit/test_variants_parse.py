"""Extracting the proposed prompts from the model's reply."""

from __future__ import annotations

from optimizer.variants.parse import ParsedVariant, parse_variants


def test_several_blocks_with_notes_and_prose_around() -> None:
    reply = (
        "Here are my proposals.\n\n"
        "<improved_prompt>\nYou are helpful.\nBe brief.\n</improved_prompt>\n"
        "<change_notes>Shorter answers.</change_notes>\n"
        "Some commentary between.\n"
        "<improved_prompt>  You are kind.  </improved_prompt>"
        "<change_notes>\n Kinder tone. \n</change_notes>\nThanks!"
    )
    assert parse_variants(reply) == [
        ParsedVariant("You are helpful.\nBe brief.", "Shorter answers."),
        ParsedVariant("You are kind.", "Kinder tone."),
    ]


def test_inner_whitespace_and_text_are_kept_exactly() -> None:
    body = "Line one.\n\n    indented {{name}}\t tab\nLast line."
    assert parse_variants(f"<improved_prompt>\n\n{body}\n  </improved_prompt>")[0].content == body


def test_missing_change_notes_give_none() -> None:
    reply = (
        "<improved_prompt>A</improved_prompt>\n"
        "<improved_prompt>B</improved_prompt><change_notes>for B</change_notes>"
    )
    assert parse_variants(reply) == [ParsedVariant("A", None), ParsedVariant("B", "for B")]


def test_empty_change_notes_give_none() -> None:
    assert parse_variants("<improved_prompt>A</improved_prompt><change_notes> </change_notes>") == [
        ParsedVariant("A", None)
    ]


def test_no_blocks() -> None:
    assert parse_variants("I cannot help with that.") == []
    assert parse_variants("") == []


def test_unclosed_block_yields_nothing() -> None:
    assert parse_variants("<improved_prompt>never closed") == []
    reply = "<improved_prompt>A</improved_prompt><change_notes>a</change_notes><improved_prompt>B"
    assert parse_variants(reply) == [ParsedVariant("A", "a")]


def test_reopened_block_keeps_the_complete_inner_one() -> None:
    reply = "<improved_prompt>garbled start <improved_prompt>Real</improved_prompt>"
    assert parse_variants(reply) == [ParsedVariant("Real", None)]


def test_stray_closing_tags_are_ignored() -> None:
    reply = "</improved_prompt>noise<improved_prompt>A</improved_prompt></improved_prompt>"
    assert parse_variants(reply) == [ParsedVariant("A", None)]


def test_notes_of_a_later_block_are_not_taken() -> None:
    reply = (
        "<improved_prompt>A</improved_prompt>"
        "<improved_prompt>B</improved_prompt><change_notes>for B</change_notes>"
    )
    assert parse_variants(reply)[0].change_notes is None


def test_unclosed_notes_are_none() -> None:
    reply = "<improved_prompt>A</improved_prompt><change_notes>never closed"
    assert parse_variants(reply) == [ParsedVariant("A", None)]


def test_tags_match_case_insensitively() -> None:
    reply = "<IMPROVED_PROMPT>A</Improved_Prompt><Change_Notes>n</CHANGE_NOTES>"
    assert parse_variants(reply) == [ParsedVariant("A", "n")]


def test_empty_block_is_returned_for_validation_to_drop() -> None:
    assert parse_variants("<improved_prompt>   </improved_prompt>") == [ParsedVariant("", None)]
