"""Protected sections in a prompt's stored content: the markers, what is served without
them, and the messages for malformed markup."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from optimizer.errors import InvalidInput
from optimizer.prompt_text import (
    CLOSE_MARKER,
    OPEN_MARKER,
    check_markup,
    markup_problem,
    protected_sections,
    sections,
    served_text,
)

# Ordinary prompt text, Unicode and hostile bits included, with brackets and the letters of
# the markers so near-misses and joins are tried too.
TEXT = st.lists(
    st.sampled_from(
        list("abc protected/[]\n\t {}<>&\"'") + ["é", "日本", "<script>", "\u200b", "🙂", "\r\n"]
    ),
    max_size=40,
).map("".join)
SECTION = TEXT.filter(lambda t: t.strip() != "")


def build(outside: list[str], inside: list[str]) -> str:
    """outside[0] OPEN inside[0] CLOSE outside[1] ... : len(outside) == len(inside) + 1."""
    parts = [outside[0]]
    for text, after in zip(inside, outside[1:], strict=True):
        parts += [OPEN_MARKER, text, CLOSE_MARKER, after]
    return "".join(parts)


@st.composite
def valid_markup(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    inside = draw(st.lists(SECTION, max_size=4))
    outside = draw(st.lists(TEXT, min_size=len(inside) + 1, max_size=len(inside) + 1))
    content = build(outside, inside)
    assume(markup_problem(content) is None)
    return content, inside, outside


@given(valid_markup())
def test_served_text_never_holds_a_marker_and_keeps_every_protected_text(
    case: tuple[str, list[str], list[str]],
) -> None:
    content, inside, _ = case
    served = served_text(content)
    assert OPEN_MARKER not in served and CLOSE_MARKER not in served
    # Nothing but markers and white space on their lines is ever removed.
    for text in inside:
        assert text.strip() in served


@given(valid_markup())
def test_protected_sections_round_trip(case: tuple[str, list[str], list[str]]) -> None:
    content, inside, outside = case
    assert protected_sections(content) == inside
    assert build(outside, protected_sections(content)) == content
    found = sections(content)
    assert [content[s.start : s.end] for s in found] == [
        OPEN_MARKER + text + CLOSE_MARKER for text in inside
    ]
    assert [s.line for s in found] == [content.count("\n", 0, s.start) + 1 for s in found]


@given(st.text(max_size=200))
def test_served_text_of_any_text_holds_no_marker(content: str) -> None:
    # Also for malformed text stored before markers were checked: nothing raises.
    served = served_text(content + OPEN_MARKER + "[[pro[[protected]]tected]]" + CLOSE_MARKER)
    assert OPEN_MARKER not in served and CLOSE_MARKER not in served


@given(TEXT)
def test_text_without_markers_is_served_as_written(content: str) -> None:
    assume("[[" not in content)
    assert served_text(content) == content
    assert protected_sections(content) == [] and markup_problem(content) is None


def test_a_marker_alone_on_its_line_takes_the_line_with_it() -> None:
    content = (
        "Intro.\n"
        "[[protected]]\n"
        "You are Acme's assistant.\n"
        "  [[/protected]]  \n"
        "Be brief. [[protected]]Ref 12-B[[/protected]] applies.\n"
        "[[protected]]\n"
        "Never give legal advice.\n"
        "[[/protected]]"
    )
    assert served_text(content) == (
        "Intro.\nYou are Acme's assistant.\nBe brief. Ref 12-B applies.\nNever give legal advice."
    )
    assert protected_sections(content) == [
        "\nYou are Acme's assistant.\n  ",
        "Ref 12-B",
        "\nNever give legal advice.\n",
    ]


def test_crlf_lines_and_a_trailing_line_break_are_kept_natural() -> None:
    content = "A\r\n[[protected]]\r\nB\r\n[[/protected]]\r\nC\r\n"
    assert served_text(content) == "A\r\nB\r\nC\r\n"
    assert protected_sections(content) == ["\r\nB\r\n"]


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("Hi.\n[[protected]]\nAcme", ["line 2", "[[protected]] is never closed"]),
        ("Hi.\nok [[/protected]]", ["line 2", "[[/protected]] closes no section"]),
        (
            "[[protected]]\nA\n[[protected]]B[[/protected]]\n[[/protected]]",
            ["line 3", "opened on line 1", "cannot be nested"],
        ),
        ("x\n[[protected]] \n\t[[/protected]]", ["line 2", "is empty"]),
        ("x\n\n[[Protected]]A[[/protected]]", ["line 3", "'[[Protected]]'", "lower case"]),
        ("[[ protected ]]A[[/protected]]", ["line 1", "'[[ protected ]]'"]),
        ("[[protected]]A[[/PROTECTED]]", ["line 1", "'[[/PROTECTED]]'"]),
        ("a\n[[pro[[protected]]tected]] x [[/protected]]", ["line 2", "join"]),
    ],
)
def test_malformed_markup_is_named_with_its_line(content: str, needles: list[str]) -> None:
    problem = markup_problem(content)
    assert problem is not None
    for needle in needles:
        assert needle in problem
    with pytest.raises(InvalidInput) as raised:
        check_markup(content)
    assert raised.value.field == "content"
    assert str(raised.value).startswith("content has malformed protected-section markers: ")
    with pytest.raises(InvalidInput):
        protected_sections(content)


def test_markers_are_case_sensitive_only_as_near_misses() -> None:
    # Text that merely mentions the word is not a marker and not a problem.
    assert markup_problem("Keep [protected] data and [[other]] things") is None
    assert markup_problem("[[protected]]日本語 <script>[[/protected]]") is None


@given(valid_markup(), st.sampled_from([OPEN_MARKER, CLOSE_MARKER]), st.data())
def test_one_marker_too_many_is_always_refused(
    case: tuple[str, list[str], list[str]], marker: str, data: st.DataObject
) -> None:
    content, _, _ = case
    where = data.draw(st.integers(0, len(content)))
    broken = content[:where] + marker + content[where:]
    assert markup_problem(broken) is not None
