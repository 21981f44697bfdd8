"""Line diffs of two prompt texts, as hunks (the inline view) and as row pairs (the
side-by-side view), with the changed words of a replaced line marked.

Built on `difflib.SequenceMatcher` rather than `difflib.HtmlDiff`, whose markup carries
inline attributes: here we return plain data and the template escapes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import zip_longest
from typing import Literal

# Over this many lines on either side, only lines are compared: word matching of every
# replaced pair would be too slow for a page view.
MAX_LINES_FOR_SPANS = 5000
# Word matching is roughly quadratic in the line length, so long lines, and a long total,
# are shown as whole-line changes.
MAX_LINE_CHARS_FOR_SPANS = 2000
MAX_TOTAL_CHARS_FOR_SPANS = 200_000
# Words, runs of spaces and single other characters: the units a changed span is made of.
TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
# Below this similarity a replaced pair is two unrelated lines: marking spans would be noise.
MIN_SIMILARITY = 0.5

Kind = Literal["equal", "delete", "insert"]


@dataclass(frozen=True)
class Span:
    text: str
    changed: bool


@dataclass(frozen=True)
class DiffLine:
    """One line: `text` without its line ending, `newline` the ending ("" for a last line
    without one). Line numbers count from 1; a deleted line has no `new_no`, an inserted
    line no `old_no`. `spans` split `text` into unchanged and changed parts."""

    kind: Kind
    old_no: int | None
    new_no: int | None
    text: str
    newline: str
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Hunk:
    """Lines old_start..old_start+old_count (0-based) of the old text become the `new_*`
    range of the new text."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    lines: tuple[DiffLine, ...]

    @property
    def header(self) -> str:
        """The unified-diff header, e.g. "@@ -3,7 +3,8 @@"."""
        old = f"-{self.old_start + 1},{self.old_count}"
        return f"@@ {old} +{self.new_start + 1},{self.new_count} @@"


@dataclass(frozen=True)
class RowPair:
    """One side-by-side row: the old line on the left, the new on the right (None: blank).
    `hunk` numbers the hunk the row belongs to, so the template can separate them."""

    hunk: int
    left: DiffLine | None
    right: DiffLine | None


def _split(text: str) -> list[tuple[str, str]]:
    """(text, line ending) per line, so joining them gives the text back exactly."""
    lines = []
    for raw in text.splitlines(keepends=True):
        body = raw.splitlines()[0]  # raw is never empty: it holds at least its ending or text
        lines.append((body, raw[len(body) :]))
    return lines


def _whole(text: str, changed: bool) -> tuple[Span, ...]:
    return (Span(text, changed),) if text else ()


def _tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def _word_spans(old: str, new: str) -> tuple[tuple[Span, ...], tuple[Span, ...]] | None:
    """Spans of the changed words on each side, or None when the lines are too unlike.
    Words, not characters: "brown" -> "red" reads as one change, not as a kept "r"."""
    a, b = _tokens(old), _tokens(new)
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < MIN_SIMILARITY or matcher.quick_ratio() < MIN_SIMILARITY:
        return None
    if matcher.ratio() < MIN_SIMILARITY:
        return None
    left: list[Span] = []
    right: list[Span] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if i2 > i1:
            left.append(Span("".join(a[i1:i2]), tag != "equal"))
        if j2 > j1:
            right.append(Span("".join(b[j1:j2]), tag != "equal"))
    return tuple(left), tuple(right)


class _Budget:
    """Characters left for word matching in one diff."""

    def __init__(self, chars: int) -> None:
        self.chars = chars

    def take(self, old: str, new: str) -> bool:
        size = len(old) + len(new)
        if size > MAX_LINE_CHARS_FOR_SPANS or size > self.chars:
            return False
        self.chars -= size
        return True


def _replaced(
    old: list[tuple[str, str]],
    new: list[tuple[str, str]],
    i1: int,
    j1: int,
    budget: _Budget | None,
) -> list[DiffLine]:
    """A replaced block: its old lines as deletions, then its new lines as insertions,
    with word spans on the pairs (in order) that are alike."""
    deleted: list[DiffLine] = []
    inserted: list[DiffLine] = []
    for k in range(max(len(old), len(new))):
        a = old[k] if k < len(old) else None
        b = new[k] if k < len(new) else None
        spans = None
        if a is not None and b is not None and budget is not None and budget.take(a[0], b[0]):
            spans = _word_spans(a[0], b[0])
        if a is not None:
            left = spans[0] if spans else _whole(a[0], True)
            deleted.append(DiffLine("delete", i1 + k + 1, None, a[0], a[1], left))
        if b is not None:
            right = spans[1] if spans else _whole(b[0], True)
            inserted.append(DiffLine("insert", None, j1 + k + 1, b[0], b[1], right))
    return deleted + inserted


def _hunk_lines(
    group: list[tuple[str, int, int, int, int]],
    old: list[tuple[str, str]],
    new: list[tuple[str, str]],
    budget: _Budget | None,
) -> list[DiffLine]:
    lines: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in group:
        if tag == "equal":
            lines.extend(
                DiffLine("equal", i1 + k + 1, j1 + k + 1, t, nl, _whole(t, False))
                for k, (t, nl) in enumerate(old[i1:i2])
            )
        elif tag == "delete":
            lines.extend(
                DiffLine("delete", i1 + k + 1, None, t, nl, _whole(t, True))
                for k, (t, nl) in enumerate(old[i1:i2])
            )
        elif tag == "insert":
            lines.extend(
                DiffLine("insert", None, j1 + k + 1, t, nl, _whole(t, True))
                for k, (t, nl) in enumerate(new[j1:j2])
            )
        else:
            lines.extend(_replaced(old[i1:i2], new[j1:j2], i1, j1, budget))
    return lines


def diff_lines(old: str, new: str, context: int = 3) -> list[Hunk]:
    """The changes from `old` to `new` as hunks with `context` unchanged lines around each
    change; [] when the texts are equal. Over MAX_LINES_FOR_SPANS lines on either side,
    replaced lines are marked whole (no word spans)."""
    old_lines, new_lines = _split(old), _split(new)
    # Lines are compared with their endings, so a changed ending is a change.
    matcher = SequenceMatcher(
        None, [t + nl for t, nl in old_lines], [t + nl for t, nl in new_lines]
    )
    large = max(len(old_lines), len(new_lines)) > MAX_LINES_FOR_SPANS
    budget = None if large else _Budget(MAX_TOTAL_CHARS_FOR_SPANS)
    hunks = []
    for group in matcher.get_grouped_opcodes(max(context, 0)):
        first, last = group[0], group[-1]
        hunks.append(
            Hunk(
                old_start=first[1],
                old_count=last[2] - first[1],
                new_start=first[3],
                new_count=last[4] - first[3],
                lines=tuple(_hunk_lines(group, old_lines, new_lines, budget)),
            )
        )
    return hunks


def _hunk_rows(number: int, hunk: Hunk) -> list[RowPair]:
    rows: list[RowPair] = []
    deleted: list[DiffLine] = []
    inserted: list[DiffLine] = []

    def pair_up() -> None:
        rows.extend(RowPair(number, a, b) for a, b in zip_longest(deleted, inserted))
        deleted.clear()
        inserted.clear()

    for line in hunk.lines:
        if line.kind == "equal":
            pair_up()
            rows.append(RowPair(number, line, line))
        elif line.kind == "delete":
            if inserted:
                pair_up()
            deleted.append(line)
        else:
            inserted.append(line)
    pair_up()
    return rows


def side_by_side(hunks: list[Hunk]) -> list[RowPair]:
    """The hunks as rows: unchanged lines on both sides, and each run of deletions beside
    the run of insertions that follows it."""
    return [row for number, hunk in enumerate(hunks) for row in _hunk_rows(number, hunk)]
