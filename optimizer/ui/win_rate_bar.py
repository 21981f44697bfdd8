"""A replay win rate and its interval as a small SVG drawing: a 0-100% track, a mark at one
half (as good as the control), the interval as a bar and the rate as a dot. Drawn on the
server with SVG presentation attributes only (the dashboard's CSP forbids inline style);
every text in it is escaped. Pure.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from optimizer.stats.win_rate import WinRate

WIDTH, HEIGHT = 240, 30
LEFT, RIGHT = 8, 8  # room for the dot at 0% and 100%
TRACK_Y, BAR_HEIGHT = 13, 8
INK, GRID, MUTED = "#24292f", "#d0d7de", "#59636e"
# The interval wholly above a half: better than the control; wholly below: worse.
BETTER, WORSE, UNSURE = "#1a7f37", "#cf222e", "#0969da"


def _x(share: float) -> float:
    return LEFT + min(max(share, 0.0), 1.0) * (WIDTH - LEFT - RIGHT)


def colour(rate: WinRate) -> str:
    if rate.low is not None and rate.low > 0.5:
        return BETTER
    if rate.high is not None and rate.high < 0.5:
        return WORSE
    return UNSURE


def interval_bar(rate: WinRate, label: str) -> Markup:
    """`rate` drawn on a 0-100% track; `label` (with the figures) is its accessible name."""
    title = escape(label)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="win-rate-bar" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{title}">',
        f"<title>{title}</title>",
        f'<line x1="{_x(0):.1f}" y1="{TRACK_Y}" x2="{_x(1):.1f}" y2="{TRACK_Y}" '
        f'stroke="{GRID}" stroke-width="2"/>',
        f'<line x1="{_x(0.5):.1f}" y1="4" x2="{_x(0.5):.1f}" y2="22" stroke="{MUTED}" '
        f'stroke-width="1" stroke-dasharray="2 2"/>',
    ]
    for share, anchor, text in ((0.0, "start", "0%"), (0.5, "middle", "50%"), (1.0, "end", "100%")):
        parts.append(
            f'<text x="{_x(share):.1f}" y="{HEIGHT - 1}" font-size="8" text-anchor="{anchor}" '
            f'fill="{MUTED}">{text}</text>'
        )
    if rate.rate is not None and rate.low is not None and rate.high is not None:
        fill = colour(rate)
        left, right = _x(rate.low), _x(rate.high)
        top, wide = TRACK_Y - BAR_HEIGHT / 2, max(right - left, 1.0)
        parts += [
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{wide:.1f}" height="{BAR_HEIGHT}" '
            f'rx="2" fill="{fill}" fill-opacity="0.3" stroke="{fill}"/>',
            f'<circle cx="{_x(rate.rate):.1f}" cy="{TRACK_Y}" r="4" fill="{fill}" '
            f'stroke="#ffffff" stroke-width="1"/>',
        ]
    else:
        parts.append(
            f'<text x="{_x(0.5):.1f}" y="{TRACK_Y - 3}" font-size="9" text-anchor="middle" '
            f'fill="{INK}">not judged</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
