"""Experiment charts as SVG text, drawn on the server: no JavaScript and no inline style (the
dashboard's CSP forbids both), only SVG presentation attributes and class names. Every piece
of text is escaped; point tooltips are `<title>` elements.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

from optimizer.ui.series import DecisionMark, GuardrailSeries, LiftSeries

PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bc4c00", "#57606a")
INK, GRID, MUTED = "#24292f", "#d0d7de", "#6e7781"
# Margins around the plot. The top one holds the title, the legend and the decision labels,
# the right one (at least RIGHT, else as wide as the longest) the labels of the zero and
# tolerance lines: none of them ever covers data.
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 58, 46
# Room inside the plot before the first and after the last check, so their markers and
# interval bars are drawn whole rather than cut by the frame.
PAD_X = 14
# Horizontal distance between the marks of neighbouring arms at one check, and the most any
# arm is moved off its check's time (px); a marker's radius is 3.5.
DODGE, DODGE_MAX = 5.0, 8.0
# Width of one character per px of font size, a little above DejaVu Sans' average, so a
# label given that much room fits.
CHAR_EM = 0.62
# Smallest vertical distance between two line labels in the right margin (px).
LABEL_GAP = 13
# Distance from the plot's right edge to the start of a line label (px).
LINE_LABEL_X = 6
X_LABEL = "check time (UTC)"
# Steps the time axis may use, in seconds: each divides the next sensible unit.
TIME_STEPS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
DAY = 86400
DAY_STEPS = (1, 2, 7, 14, 30, 91, 365)
# Axis ranges narrower than this (in the axis' unit, %) are drawn as if the ends were equal.
MIN_SPAN = 1e-6


# --- ticks ----------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Evenly spaced round values (steps of 1, 2, 2.5 or 5 times a power of ten) from at or
    below `lo` to at or above `hi`, about `n` intervals. Ends closer than MIN_SPAN are
    widened by one either side."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    lo, hi = min(lo, hi), max(lo, hi)
    if hi - lo < MIN_SPAN:  # equal ends, or closer than a chart can show: widen by one
        mid = lo / 2 + hi / 2
        lo, hi = mid - 1.0, mid + 1.0
    raw = (hi - lo) / max(n, 1)
    if not math.isfinite(raw) or raw <= 0:
        return [lo, hi]
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    start, stop = math.floor(lo / step), math.ceil(hi / step)
    # lo / step can underflow to 0 (a subnormal lo): one more step keeps the ends covered.
    start -= start * step > lo
    stop += stop * step < hi
    # Rounding to the step's decimals drops float noise such as 0.30000000000000004.
    digits = max(0, 1 - math.floor(math.log10(step)))
    return [round(i * step, digits) + 0.0 for i in range(start, stop + 1)]


def _utc(moment: datetime) -> datetime:
    # The database returns naive UTC on SQLite and aware UTC on PostgreSQL.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _time_step(span: float, n: int) -> int:
    for step in TIME_STEPS:
        if span / step <= n:
            return step
    for days in DAY_STEPS:
        if span / (days * DAY) <= n:
            return days * DAY
    return math.ceil(span / n / (365 * DAY)) * 365 * DAY


def time_ticks(t0: datetime, t1: datetime, n: int = 6) -> list[tuple[datetime, str]]:
    """At most about `n` round moments (UTC) within t0..t1, each with its label."""
    start, end = sorted((_utc(t0), _utc(t1)))
    span = (end - start).total_seconds()
    if span <= 0:
        return [(start, start.strftime("%Y-%m-%d %H:%M"))]
    step = _time_step(span, n)
    if step >= DAY:
        pattern = "%Y-%m-%d"
    elif start.date() != end.date():
        pattern = "%m-%d %H:%M"
    else:
        pattern = "%H:%M:%S" if step < 60 else "%H:%M"
    first = math.ceil(start.timestamp() / step) * step
    moments = (datetime.fromtimestamp(t, UTC) for t in range(first, int(end.timestamp()) + 1, step))
    return [(moment, moment.strftime(pattern)) for moment in moments]


# --- drawing --------------------------------------------------------------------------------


# Characters XML 1.0 does not allow (C0 controls other than tab and newlines, surrogates,
# U+FFFE/U+FFFF): a metric name written by hand may hold one, and the SVG must stay
# well-formed, so each becomes U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _e(text: object) -> str:
    return str(escape(_NOT_XML.sub("\ufffd", str(text))))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


@dataclass(frozen=True)
class _Frame:
    """Maps check times and % values onto the plot area."""

    width: int
    height: int
    right: float  # the plot's right edge
    t0: float
    t1: float
    y0: float
    y1: float

    @property
    def bottom(self) -> float:
        return self.height - BOTTOM

    def x(self, moment: datetime) -> float:
        share = (_utc(moment).timestamp() - self.t0) / (self.t1 - self.t0)
        return LEFT + PAD_X + share * (self.right - LEFT - 2 * PAD_X)

    def y(self, percent: float) -> float:
        share = (percent - self.y0) / (self.y1 - self.y0)
        return self.bottom - share * (self.bottom - TOP)


@dataclass(frozen=True)
class _Mark:
    """One point to draw: a value in % (None: no estimate) with optional bounds."""

    analysis_id: int
    checked_at: datetime
    value: float | None
    low: float | None
    high: float | None
    tooltip: str
    css: str


@dataclass(frozen=True)
class _Line:
    label: str
    marks: tuple[_Mark, ...]


def text_width(text: str, font_size: float) -> float:
    """About how wide `text` is drawn at `font_size` px (a little more rather than less)."""
    return CHAR_EM * font_size * len(text)


def _frame(
    size: tuple[int, int], right: float, times: Sequence[datetime], values: list[float]
) -> tuple[_Frame, list[float]]:
    stamps = [_utc(t).timestamp() for t in times]
    t0, t1 = min(stamps), max(stamps)
    if t1 - t0 < 60:
        # One check (or all at once): centre it in an hour-wide window.
        t0, t1 = t0 - 1800, t1 + 1800
    # A hand-edited 1e307 overflows to inf once in %; such a value cannot be placed anyway.
    values = [v for v in values if math.isfinite(v)] or [0.0]
    ticks = nice_ticks(min(values), max(values), 5)
    return _Frame(size[0], size[1], right, t0, t1, ticks[0], ticks[-1]), ticks


def _open(kind: str, width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<text class="chart-title" x="{LEFT}" y="18" font-size="14" font-weight="bold" '
        f'fill="{INK}">{_e(title)}</text>',
    ]


def _empty(kind: str, width: int, height: int, title: str, message: str) -> Markup:
    parts = _open(kind, width, height, title)
    parts.append(
        f'<text class="chart-empty" x="{width / 2:.1f}" y="{height / 2:.1f}" '
        f'text-anchor="middle" font-size="14" fill="{MUTED}">{_e(message)}</text></svg>'
    )
    return Markup("\n".join(parts))


def _axes(frame: _Frame, y_ticks: list[float], y_label: str) -> list[str]:
    right = frame.right
    parts = [
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{frame.bottom}" '
        f'stroke="{INK}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{frame.bottom}" x2="{right}" '
        f'y2="{frame.bottom}" stroke="{INK}"/>',
    ]
    for tick in y_ticks:
        y = frame.y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
            f'stroke="{GRID}"/><text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end" font-size="11" fill="{INK}">{tick:g}%</text>'
        )
    start = datetime.fromtimestamp(frame.t0, UTC)
    end = datetime.fromtimestamp(frame.t1, UTC)
    for moment, label in time_ticks(start, end):
        x = frame.x(moment)
        parts.append(
            f'<line class="tick" x1="{x:.1f}" y1="{frame.bottom}" x2="{x:.1f}" '
            f'y2="{frame.bottom + 4}" stroke="{INK}"/><text class="tick" x="{x:.1f}" '
            f'y="{frame.bottom + 16}" text-anchor="middle" font-size="11" '
            f'fill="{INK}">{_e(label)}</text>'
        )
    middle = (TOP + frame.bottom) / 2
    parts.append(
        f'<text class="axis-label" x="{(LEFT + right) / 2:.1f}" y="{frame.height - 6}" '
        f'text-anchor="middle" font-size="12" fill="{INK}">{_e(X_LABEL)}</text>'
        f'<text class="axis-label" x="14" y="{middle:.1f}" text-anchor="middle" '
        f'font-size="12" fill="{INK}" transform="rotate(-90 14 {middle:.1f})">'
        f"{_e(y_label)}</text>"
    )
    return parts


@dataclass(frozen=True)
class _HLine:
    """A horizontal reference line (zero, tolerance) with its label in the right margin."""

    percent: float
    css: str
    label: str
    dash: str = ""


def spread(wanted: Sequence[float], gap: float, low: float, high: float) -> list[float]:
    """Positions as close to `wanted` as possible, in the same order, at least `gap` apart
    and within low..high when there is room for that: the labels of nearby lines do not
    overlap each other or leave the plot's height."""
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed = [min(max(wanted[i], low), high) for i in order]
    for k in range(1, len(placed)):  # push down past the one above
        placed[k] = max(placed[k], placed[k - 1] + gap)
    for k in range(len(placed) - 1, -1, -1):  # pull back up from the bottom edge
        ceiling = high if k == len(placed) - 1 else placed[k + 1] - gap
        placed[k] = min(placed[k], ceiling)
    result = [0.0] * len(wanted)
    for i, position in zip(order, placed, strict=True):
        result[i] = position
    return result


def _hlines(frame: _Frame, lines: Sequence[_HLine]) -> list[str]:
    ys = [frame.y(line.percent) for line in lines]
    label_ys = spread([y + 4 for y in ys], LABEL_GAP, TOP + 4, frame.bottom + 4)
    parts = []
    for line, y, label_y in zip(lines, ys, label_ys, strict=True):
        dashes = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        parts.append(
            f'<line class="{line.css}" x1="{LEFT}" y1="{y:.1f}" x2="{frame.right}" '
            f'y2="{y:.1f}" stroke="{INK}"{dashes}/><text class="{line.css}-label" '
            f'x="{frame.right + LINE_LABEL_X}" y="{label_y:.1f}" font-size="11" '
            f'fill="{INK}">{_e(line.label)}</text>'
        )
    return parts


def _decision_class(decision: str) -> str:
    known = {"promote", "stop_arms", "pause_srm", "inconclusive"}
    return decision if decision in known else "other"


def _decisions(frame: _Frame, decisions: Sequence[DecisionMark]) -> list[str]:
    """A dashed line per decision, its name centred above the plot. A name that would
    overlap the one before it is left out (the line stays, and its tooltip and the
    decision table name it)."""
    parts, taken_to = [], -math.inf
    for mark in sorted(decisions, key=lambda d: _utc(d.checked_at)):
        x = frame.x(mark.checked_at)
        tip = f"{mark.decision} at {_utc(mark.checked_at):%Y-%m-%d %H:%M} UTC: {mark.reason}"
        half = text_width(mark.decision, 10) / 2
        # Kept within the picture at either end.
        centre = min(max(x, LEFT + half), frame.width - 2 - half)
        label = ""
        if centre - half >= taken_to + 6:
            taken_to = centre + half
            label = (
                f'<text x="{centre:.1f}" y="{TOP - 6}" text-anchor="middle" font-size="10" '
                f'fill="{MUTED}">{_e(mark.decision)}</text>'
            )
        parts.append(
            f'<g class="decision decision-{_decision_class(mark.decision)}" '
            f'data-analysis-id="{mark.analysis_id}"><title>{_e(tip)}</title>'
            f'<line x1="{x:.1f}" y1="{TOP - 3}" x2="{x:.1f}" y2="{frame.bottom}" '
            f'stroke="{MUTED}" stroke-dasharray="4 3"/>{label}</g>'
        )
    return parts


def _legend(lines: Sequence[_Line], width: int) -> list[str]:
    """One swatch and label per arm in a row under the title, as many as fit the width
    (every point's tooltip names its arm too)."""
    parts, x = [], float(LEFT)
    for i, line in enumerate(lines):
        end = x + 14 + text_width(line.label, 11)
        if end > width:
            break
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<g class="legend"><rect x="{x:.1f}" y="28" width="10" height="10" '
            f'fill="{colour}"/><text x="{x + 14:.1f}" y="37" font-size="11" '
            f'fill="{INK}">{_e(line.label)}</text></g>'
        )
        x = end + 16
    return parts


def _mark(frame: _Frame, mark: _Mark, colour: str, dx: float) -> str:
    x = frame.x(mark.checked_at) + dx
    head = f'data-analysis-id="{mark.analysis_id}"><title>{_e(mark.tooltip)}</title>'
    if mark.value is None:
        # No estimate at this check: a hollow marker on the time axis, not on the zero line.
        return (
            f'<circle class="point point-missing {mark.css}" cx="{x:.1f}" '
            f'cy="{frame.bottom:.1f}" r="3.5" fill="none" stroke="{colour}" {head}</circle>'
        )
    bar = ""
    if mark.low is not None and mark.high is not None:
        low, high = max(mark.low, frame.y0), min(mark.high, frame.y1)
        bar = (
            f'<line class="interval" x1="{x:.1f}" y1="{frame.y(low):.1f}" x2="{x:.1f}" '
            f'y2="{frame.y(high):.1f}" stroke="{colour}" stroke-opacity="0.45" '
            f'stroke-width="3"/>'
        )
        # An interval wider than the axis: a chevron at each cut end says it goes on (the
        # tooltip has its bounds).
        for cut, edge, tip in ((mark.low < low, frame.bottom, 4), (mark.high > high, TOP, -4)):
            if cut:
                bar += (
                    f'<polyline class="interval-cut" points="{x - 4:.1f},{edge - tip:.1f} '
                    f'{x:.1f},{edge:.1f} {x + 4:.1f},{edge - tip:.1f}" fill="none" '
                    f'stroke="{colour}" stroke-width="1.5"/>'
                )
    return (
        f'{bar}<circle class="point {mark.css}" cx="{x:.1f}" cy="{frame.y(mark.value):.1f}" '
        f'r="3.5" fill="{colour}" {head}</circle>'
    )


def _series(frame: _Frame, lines: Sequence[_Line]) -> list[str]:
    parts = []
    # The arms' marks at one check sit a few px apart, so their interval bars do not cover
    # each other; the spread stays well inside PAD_X.
    step = min(DODGE, 2 * DODGE_MAX / max(len(lines) - 1, 1))
    for i, line in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        dx = (i - (len(lines) - 1) / 2) * step
        known = [(m.checked_at, m.value) for m in line.marks if m.value is not None]
        if len(known) > 1:
            path = " ".join(f"{frame.x(t) + dx:.1f},{frame.y(v):.1f}" for t, v in known)
            parts.append(
                f'<polyline class="trend" points="{path}" fill="none" stroke="{colour}" '
                f'stroke-width="1.5"/>'
            )
        parts.append(f'<g class="arm" data-arm="{_e(line.label)}">')
        parts.extend(_mark(frame, mark, colour, dx) for mark in line.marks)
        parts.append("</g>")
    return parts


def _percentages(lines: Sequence[_Line], *extra: float) -> list[float]:
    """The values the y axis must show: zero, `extra`, every estimate and each line's latest
    interval; older intervals only up to one such span beyond them. The first checks of an
    experiment have intervals of hundreds of %, which would otherwise flatten everything
    after them; their bars are cut at the plot's edge (_mark draws the cut)."""
    core = [0.0, *extra]
    bounds: list[float] = []
    for line in lines:
        latest = next((m for m in reversed(line.marks) if m.value is not None), None)
        for mark in line.marks:
            if mark.value is not None:
                core.append(mark.value)
            pair = [v for v in (mark.low, mark.high) if v is not None]
            (core if mark is latest else bounds).extend(pair)
    finite = [v for v in core if math.isfinite(v)]
    low, high = min(finite), max(finite)
    span = max(high - low, 1.0)
    return finite + [min(max(b, low - span), high + span) for b in bounds if math.isfinite(b)]


def _chart(
    kind: str,
    title: str,
    y_label: str,
    times: Sequence[datetime],
    lines: Sequence[_Line],
    decisions: Sequence[DecisionMark],
    size: tuple[int, int],
    limit: float | None = None,
) -> Markup:
    width, height = max(size[0], 320), max(size[1], 160)
    if not times:
        return _empty(kind, width, height, title, "no checks yet")
    extra = () if limit is None else (limit,)
    hlines = [_HLine(0.0, "zero", "0 (no change)")]
    if limit is not None:
        hlines.append(_HLine(limit, "tolerance", f"tolerance {limit:+g}%", "6 4"))
    margin = max(RIGHT, LINE_LABEL_X + 4 + max(text_width(h.label, 11) for h in hlines))
    frame, y_ticks = _frame((width, height), width - margin, times, _percentages(lines, *extra))
    parts = _open(kind, width, height, title)
    parts += _legend(lines, width)
    parts += _axes(frame, y_ticks, y_label)
    parts += _hlines(frame, hlines)
    parts += _decisions(frame, decisions)
    parts += _series(frame, lines)
    if not any(m.value is not None for line in lines for m in line.marks):
        parts.append(
            f'<text class="chart-empty" x="{(LEFT + frame.right) / 2:.1f}" y="{TOP + 24}" '
            f'text-anchor="middle" font-size="12" fill="{MUTED}">no estimate yet</text>'
        )
    parts.append("</svg>")
    return Markup("\n".join(parts))


# --- public charts --------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M} UTC"


def lift_chart(
    series: LiftSeries, *, title: str | None = None, width: int = 960, height: int = 300
) -> Markup:
    """Relative lift of each variant arm over control, in %, one point per stored check with
    its always-valid interval as an error bar, a zero line and a marker per decision."""
    better = "higher" if series.higher_is_better else "lower"
    title = title or f"Lift in {series.metric} against control ({better} is better)"
    lines = []
    for arm in series.arms:
        marks = []
        for p in arm.points:
            interval = f"{_pct(p.low)} to {_pct(p.high)}"
            detail = f"no estimate ({p.error or 'not computed'})"
            if p.relative is not None:
                detail = f"{_pct(p.relative)} (always-valid interval {interval})"
            sizes = f"units: control {_or_na(p.n_control)}, arm {_or_na(p.n_arm)}"
            tip = f"{arm.label} at {_stamp(p.checked_at)}: {detail}; {sizes}"
            marks.append(
                _Mark(p.analysis_id, p.checked_at, *_scaled(p.relative, p.low, p.high), tip, "")
            )
        lines.append(_Line(arm.label, tuple(marks)))
    return _chart(
        "lift",
        title,
        f"lift in {series.metric} (%)",
        series.check_times,
        lines,
        series.decisions,
        (width, height),
    )


def guardrail_chart(
    series: GuardrailSeries, *, title: str | None = None, width: int = 960, height: int = 260
) -> Markup:
    """A guardrail metric's change against control, in %, per arm and check, with the
    tolerance line and approximate bounds (translated at the control mean)."""
    title = title or f"Guardrail {series.metric}: change against control (approx. bounds)"
    lines = []
    for arm in series.arms:
        marks = []
        for p in arm.points:
            status = p.status or "unknown"
            bounds = f"approx. {_pct(p.low)} to {_pct(p.high)}"
            detail = f"{_pct(p.relative)} ({bounds})" if p.relative is not None else "no estimate"
            error = f", {p.error}" if p.error else ""
            tip = f"{arm.label} at {_stamp(p.checked_at)}: {detail}; {status}{error}"
            css = f"status-{status}" if status.replace("_", "").isalpha() else "status-other"
            marks.append(
                _Mark(p.analysis_id, p.checked_at, *_scaled(p.relative, p.low, p.high), tip, css)
            )
        lines.append(_Line(arm.label, tuple(marks)))
    limit = None if series.limit is None else series.limit * 100
    return _chart(
        "guardrail",
        title,
        f"change in {series.metric} (%)",
        series.check_times,
        lines,
        series.decisions,
        (width, height),
        limit,
    )


def _scaled(
    value: float | None, low: float | None, high: float | None
) -> tuple[float | None, float | None, float | None]:
    def percent(fraction: float | None) -> float | None:
        scaled = None if fraction is None else fraction * 100
        return scaled if scaled is not None and math.isfinite(scaled) else None

    return percent(value), percent(low), percent(high)


def _or_na(value: int | None) -> str:
    return "n/a" if value is None else str(value)
