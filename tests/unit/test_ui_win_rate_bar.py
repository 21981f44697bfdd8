"""The SVG drawing of a replay win rate: the interval and the dot where the figures put them,
coloured by what the interval says against one half, presentation attributes only, the
label escaped, nothing drawn for an empty rate."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from optimizer.stats.win_rate import win_rate_from_counts
from optimizer.ui.win_rate_bar import BETTER, LEFT, RIGHT, UNSURE, WIDTH, WORSE, interval_bar

_NUMBER = r"(-?[0-9.]+)"


def _x(share: float) -> float:
    return LEFT + share * (WIDTH - LEFT - RIGHT)


@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60))
def test_the_bar_spans_the_interval_and_the_dot_sits_on_the_rate(
    wins: int, ties: int, losses: int
) -> None:
    rate = win_rate_from_counts(wins, ties, losses)
    svg = str(interval_bar(rate, "label"))
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "style" not in svg
    if rate.rate is None or rate.low is None or rate.high is None:
        assert "not judged" in svg and "<rect" not in svg and "<circle" not in svg
        return
    rect = re.search(rf'<rect x="{_NUMBER}" y="{_NUMBER}" width="{_NUMBER}"', svg)
    dot = re.search(rf'<circle cx="{_NUMBER}"', svg)
    assert rect and dot
    assert abs(float(rect.group(1)) - _x(rate.low)) <= 0.06
    assert (
        abs(float(rect.group(1)) + float(rect.group(3)) - max(_x(rate.high), _x(rate.low) + 1))
        <= 0.2
    )
    assert abs(float(dot.group(1)) - _x(rate.rate)) <= 0.06
    colour = BETTER if rate.low > 0.5 else WORSE if rate.high < 0.5 else UNSURE
    assert f'fill="{colour}"' in svg


def test_the_label_is_escaped() -> None:
    svg = str(interval_bar(win_rate_from_counts(3, 0, 0), '<script>"x"</script> & co'))
    assert "<script>" not in svg
    assert "&lt;script&gt;&#34;x&#34;&lt;/script&gt; &amp; co" in svg
