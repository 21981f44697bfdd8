"""Prompt diffs: hunks that turn the old text into the new one, side-by-side rows, and
word spans on replaced lines."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.ui.diff import Hunk, diff_lines, side_by_side


def apply(old: str, hunks: list[Hunk]) -> str:
    """Patch `old` with the hunks, checking that every context and deleted line matches."""
    old_lines = old.splitlines(keepends=True)
    out: list[str] = []
    cursor = 0
    for hunk in hunks:
        assert hunk.old_start >= cursor
        out.extend(old_lines[cursor : hunk.old_start])
        cursor = hunk.old_start
        for line in hunk.lines:
            whole = line.text + line.newline
            if line.kind in ("equal", "delete"):
                assert old_lines[cursor] == whole
                cursor += 1
            if line.kind in ("equal", "insert"):
                out.append(whole)
        assert cursor == hunk.old_start + hunk.old_count
    out.extend(old_lines[cursor:])
    return "".join(out)


def kinds(hunks: list[Hunk]) -> list[tuple[str, str]]:
    return [(line.kind, line.text) for hunk in hunks for line in hunk.lines]


lines = st.lists(
    st.sampled_from(["alpha", "beta", "gamma delta", "", "Be concise.", "x y z"])
    | st.text(alphabet="ab \t", max_size=6),
    max_size=12,
)
endings = st.sampled_from(["\n", "\r\n", ""])


@st.composite
def texts(draw: st.DrawFn) -> str:
    body = draw(lines)
    return "\n".join(body) + (draw(endings) if body else "")


@settings(max_examples=300, deadline=None)
@given(texts(), texts(), st.integers(0, 4))
def test_applying_the_hunks_to_the_old_text_gives_the_new_text(old, new, context):
    hunks = diff_lines(old, new, context)
    assert apply(old, hunks) == new
    for hunk in hunks:
        for line in hunk.lines:
            assert "".join(span.text for span in line.spans) == line.text
            if line.kind == "equal":
                assert not any(span.changed for span in line.spans)


@settings(max_examples=100, deadline=None)
@given(texts(), texts())
def test_side_by_side_keeps_every_line_in_order(old, new):
    hunks = diff_lines(old, new)
    rows = side_by_side(hunks)
    left = [r.left for r in rows if r.left is not None]
    right = [r.right for r in rows if r.right is not None]
    assert left == [line for h in hunks for line in h.lines if line.kind != "insert"]
    assert right == [line for h in hunks for line in h.lines if line.kind != "delete"]
    for r in rows:
        assert r.left is None or r.left.kind != "insert"
        assert r.right is None or r.right.kind != "delete"


def test_equal_texts_have_no_hunks():
    assert diff_lines("same\ntext\n", "same\ntext\n") == []
    assert diff_lines("", "") == []
    assert side_by_side([]) == []


def test_insert_delete_and_replace():
    old = "one\ntwo\nthree\nfour\n"
    (hunk,) = diff_lines(old, "one\ntwo\n2.5\nthree\nfour\n")
    assert ("insert", "2.5") in kinds([hunk])
    assert hunk.header == "@@ -1,4 +1,5 @@"
    (inserted,) = [line for line in hunk.lines if line.kind == "insert"]
    assert (inserted.old_no, inserted.new_no) == (None, 3)

    (hunk,) = diff_lines(old, "one\nthree\nfour\n")
    (deleted,) = [line for line in hunk.lines if line.kind == "delete"]
    assert (deleted.text, deleted.old_no, deleted.new_no) == ("two", 2, None)

    hunks = diff_lines(old, "one\nTWO!\nthree\nfour\n", context=0)
    assert kinds(hunks) == [("delete", "two"), ("insert", "TWO!")]
    assert hunks[0].header == "@@ -2,1 +2,1 @@"


def test_a_missing_final_newline_is_a_change():
    hunks = diff_lines("a\nb\n", "a\nb")
    assert kinds(hunks) == [("equal", "a"), ("delete", "b"), ("insert", "b")]
    assert [line.newline for line in hunks[0].lines] == ["\n", "\n", ""]


def test_replaced_lines_mark_the_changed_words():
    hunks = diff_lines("The quick brown fox.\nend\n", "The quick red fox.\nend\n")
    rows = side_by_side(hunks)
    (changed,) = [r for r in rows if r.left is not None and r.left.kind == "delete"]
    assert changed.right is not None and changed.right.kind == "insert"
    assert [s.text for s in changed.left.spans if s.changed] == ["brown"]
    assert [s.text for s in changed.right.spans if s.changed] == ["red"]
    assert changed.left.spans[0].text == "The quick " and not changed.left.spans[0].changed


def test_unlike_lines_are_changed_whole():
    hunks = diff_lines("You are a helpful assistant.\n", "Answer in JSON only, please!\n")
    for line in hunks[0].lines:
        assert [(s.text, s.changed) for s in line.spans] == [(line.text, True)]


def test_large_inputs_fall_back_to_whole_lines():
    rnd = random.Random(14)
    old_lines = [f"line {i}: " + "word " * rnd.randint(0, 6) for i in range(6000)]
    new_lines = [f"{line} changed" if i % 10 == 0 else line for i, line in enumerate(old_lines)]
    old, new = "\n".join(old_lines), "\n".join(new_lines)
    assert len(old) > 100_000
    hunks = diff_lines(old, new)
    assert apply(old, hunks) == new
    changed = [line for h in hunks for line in h.lines if line.kind != "equal"]
    assert len(changed) == 1200
    # Over 5,000 lines: no word matching, each changed line is one changed span.
    assert all(len(line.spans) == 1 and line.spans[0].changed for line in changed)


def test_one_very_long_line_is_changed_whole():
    old = "x" * 100_000
    new = "x" * 50_000 + "y" + "x" * 49_999
    (hunk,) = diff_lines(old, new)
    assert apply(old, [hunk]) == new
    assert [len(line.spans) for line in hunk.lines] == [1, 1]
