"""The one check for text from outside: what it refuses and how it names the problem."""

from __future__ import annotations

import json
import re

import pytest

from optimizer.errors import InvalidInput
from optimizer.text_input import (
    check_text,
    first_unstorable,
    refuse_unstorable,
    text_problem,
    unstorable,
)


@pytest.mark.parametrize(
    "text", ["", "plain", "\t\r\n\x01\x1b\x7f", "é😀\u202e", json.loads('"\\ud83d\\ude00"')]
)  # a pair, joined
def test_storable_text_passes(text: str) -> None:
    assert unstorable(text) is None
    assert refuse_unstorable(text, "f") == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("\x00", "NUL"),
        ("a\x00b", "NUL"),
        ("\ud800", "lone surrogate"),
        ("x\udfff", "lone surrogate"),
        ("é\ud83d", "lone surrogate"),
    ],
)
def test_nul_and_lone_surrogates_are_refused_by_field(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        refuse_unstorable(text, "reason")
    assert caught.value.field == "reason"
    assert str(caught.value).startswith("reason contains") and words in str(caught.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("  \t", "is blank (only white space)"),
        ("u" * 201, "is 201 characters; at most 200"),
        (7, "must be a string; got a number"),
        (None, "must be a string; got null"),
        (["u"], "must be a string; got an array"),
    ],
)
def test_text_problem_says_what_is_wrong(value: object, problem: str) -> None:
    assert text_problem(value, 200) == problem
    with pytest.raises(InvalidInput, match=f"^unit_id {re.escape(problem)}"):
        check_text(value, "unit_id", 200)


def test_blank_text_may_be_allowed() -> None:
    assert text_problem("", 10, allow_blank=True) is None
    assert text_problem(" ", 10, allow_blank=True) is None
    assert text_problem("\x00", 10, allow_blank=True) is not None


def test_first_unstorable_names_the_path_in_document_order() -> None:
    document = {
        "prompt": "ok",
        "guardrails": [{"metric": "rating"}, {"metric": "a\x00"}],
        "later": "\ud800",
    }
    found = first_unstorable(document, "payload")
    assert found is not None and found[0] == "payload.guardrails[1].metric"
    assert first_unstorable({"a": [1, 2.5, None, True, {"b": "fine"}]}) is None
    assert first_unstorable("\x00") == ("value", unstorable("\x00"))


@pytest.mark.parametrize("key", ["\x00", "k\ud800", "with space"])
def test_a_key_is_named_escaped_so_the_path_itself_is_storable(key: str) -> None:
    found = first_unstorable({"payload": {key: "\x00" if key == "with space" else 1}})
    assert found is not None
    path, _ = found
    assert path.startswith("payload[") and unstorable(path) is None
