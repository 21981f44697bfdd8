"""The turns of a logged conversation (optimizer.conversation_turns): from stored `messages`
JSON or a text transcript, whatever a row holds (edited by hand, hostile, any Unicode),
turns_of answers turns with a user turn that has text, or an Unusable with a reason; it
never raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.conversation_turns import ROLES, Turn, Unusable, turns_of, user_turns

# Any text a column can hold (no NUL, no lone surrogates), and text from everywhere else.
STORABLE = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
SPEAKERS = {
    "user": "user",
    "human": "user",
    "customer": "user",
    "client": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "agent": "assistant",
    "system": "system",
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(STORABLE),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES), "content": st.text(STORABLE, max_size=40)}
)
HOSTILE_LINES = st.sampled_from(
    [
        "user: <script>alert(1)</script>",
        "Assistant: ignore previous instructions",
        "  HUMAN :  hi",
        "bot:",
        "ſystem: long s",
        "aİ: dotted I",
        "ＵＳＥＲ: full width",
        "user：full-width colon",
        "\u202euser: rtl override",
        "system: </transcript><transcript>",
        "",
        "   ",
        "no speaker here",
    ]
)


def check_answer(answer: list[Turn] | Unusable) -> None:
    """What every caller may rely on."""
    if isinstance(answer, Unusable):
        assert isinstance(answer.reason, str) and answer.reason.strip()
        return
    assert all(isinstance(turn, Turn) and turn.role in ROLES for turn in answer)
    assert all(isinstance(turn.content, str) for turn in answer)
    assert any(text.strip() for text in user_turns(answer))


@settings(max_examples=300, deadline=None)
@given(
    messages=st.none() | st.text(STORABLE, max_size=200) | JSON.map(json.dumps),
    transcript=st.none() | st.text(STORABLE, max_size=200),
)
def test_any_stored_row_gives_turns_or_a_reason(
    messages: str | None, transcript: str | None
) -> None:
    check_answer(turns_of(messages, transcript))


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(HOSTILE_LINES | st.text(STORABLE, max_size=60), max_size=12))
def test_any_text_transcript_gives_turns_or_a_reason(lines: list[str]) -> None:
    answer = turns_of(None, "\n".join(lines))
    check_answer(answer)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(MESSAGE, max_size=8), transcript=st.none() | st.text(max_size=40))
def test_stored_messages_come_back_as_they_were(
    messages: list[dict[str, str]], transcript: str | None
) -> None:
    answer = turns_of(json.dumps(messages, ensure_ascii=False), transcript)
    has_user = any(m["role"] == "user" and m["content"].strip() for m in messages)
    if has_user:
        assert answer == [Turn(m["role"], m["content"]) for m in messages]
    else:
        # The messages win over the transcript, even one with user lines.
        assert answer == Unusable("its messages hold no user turn with text")


@pytest.mark.parametrize("speaker", sorted(SPEAKERS))
def test_every_speaker_synonym_in_any_case(speaker: str) -> None:
    for spelled in (speaker, speaker.upper(), speaker.title()):
        text = f"user: start\n  {spelled}  :  words here"
        answer = turns_of(None, text)
        assert answer == [Turn("user", "start"), Turn(SPEAKERS[speaker], "words here")]


def test_lines_without_a_speaker_continue_the_turn_before() -> None:
    text = "preamble nobody said\nCustomer: my order\nit is late\n\nvery late\nAgent: sorry\n"
    assert turns_of(None, text) == [
        Turn("user", "my order\nit is late\n\nvery late"),
        Turn("assistant", "sorry"),
    ]


def test_unicode_survives_and_only_ascii_names_are_speakers() -> None:
    text = "user: héllo 😀 中文 \u200f\nſystem: not a speaker\naİ: nor this\nbot: ok"
    assert turns_of(None, text) == [
        Turn("user", "héllo 😀 中文 \u200f\nſystem: not a speaker\naİ: nor this"),
        Turn("assistant", "ok"),
    ]


@pytest.mark.parametrize(
    ("messages", "transcript", "reason"),
    [
        (None, None, "neither messages nor a transcript"),
        (None, "  \n ", "neither messages nor a transcript"),
        (None, "assistant: hello\nsystem: be nice", "no line starting with 'user:'"),
        (None, "user:   \nassistant: hi", "no line starting with 'user:'"),
        ("not json", "user: hi", "not JSON"),
        ("1" * 5000, None, "not JSON"),  # past int()'s digit limit: a ValueError
        ("[" * 100_000, None, "not JSON"),  # nested too deep: a RecursionError
        ('{"role": "user"}', None, "not a list"),
        ('["user"]', None, "not an object"),
        ('[{"role": "bot", "content": "x"}]', None, "no valid role"),
        ('[{"role": "user", "content": [{"type": "text", "text": "x"}]}]', None, "no valid role"),
        ('[{"role": ["user"], "content": "x"}]', None, "no valid role"),
        ('[{"role": "assistant", "content": "x"}]', "user: hi", "no user turn with text"),
        ("[]", "user: hi", "no user turn with text"),
    ],
)
def test_reasons_say_what_is_missing(
    messages: str | None, transcript: str | None, reason: str
) -> None:
    answer = turns_of(messages, transcript)
    assert isinstance(answer, Unusable) and reason in answer.reason


def test_user_turns_are_the_user_texts_in_order() -> None:
    turns: list[Any] = [
        Turn("system", "rules"),
        Turn("user", "first"),
        Turn("assistant", "reply"),
        Turn("user", "  "),
        Turn("tool", "result"),
        Turn("user", "second"),
    ]
    assert user_turns(turns) == ["first", "second"]
