"""The dashboard's one Jinja2 environment and the filters its templates use.

Templates are loaded from the installed package (optimizer/ui/templates), every value is
escaped unless it is Markup (the SVG charts), and an undefined name is an error rather than
an empty string, so a misspelt variable fails the page's tests instead of showing nothing.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

DASH = "—"
MINUTE, HOUR, DAY = 60, 3600, 86400


def when(moment: datetime | None) -> str:
    """A moment in UTC to the minute: 2026-12-01 13:05 UTC."""
    if moment is None:
        return DASH
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    if seconds < MINUTE:
        return f"{int(seconds)} s"
    if seconds < HOUR:
        return f"{int(seconds // MINUTE)} min"
    if seconds < 2 * DAY:
        return f"{int(seconds // HOUR)} h"
    return f"{int(seconds // DAY)} days"


def ago(moment: datetime | None, now: datetime) -> str:
    """How long before `now`: "5 min ago"; a moment after `now` reads "in 5 min"."""
    if moment is None:
        return DASH
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    seconds = (now - aware).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{_span(seconds)} ago" if seconds > 0 else f"in {_span(-seconds)}"


def pct(ratio: float | None) -> str:
    """A ratio as a signed percentage with one decimal: 0.032 -> "+3.2%"."""
    if ratio is None or not math.isfinite(ratio):
        return DASH
    shown = f"{ratio * 100:+.1f}"
    return "0.0%" if shown in ("+0.0", "-0.0") else f"{shown}%"


def sig(value: float | None, digits: int = 3) -> str:
    """A signed number to `digits` significant digits: 0.021987 -> "+0.022", -0.0155 ->
    "-0.0155"; for differences whose scale is the metric's own (no percent)."""
    # Read from stored JSON, so anything but a finite number shows as a dash.
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return DASH
    shown = f"{value:+.{digits}g}"
    return "0" if float(shown) == 0 else shown


def num(value: float | None) -> str:
    """A number with thousands separators: 12345 -> "12,345", 0.5 -> "0.5"."""
    if value is None or isinstance(value, bool):
        return DASH if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return DASH
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


_BACKTICKED = re.compile(r"`([^`\n]+)`")


def code_spans(message: str) -> Markup:
    """A message written for the API or the CLI, where commands and settings stand in
    backticks, with those shown as code (everything else escaped)."""
    return Markup(_BACKTICKED.sub(r"<code>\1</code>", str(escape(message))))


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("optimizer.ui", "templates"),
        # Not select_autoescape(): that only covers .html/.xml; every template here is HTML.
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, pct=pct, num=num, sig=sig, code_spans=code_spans)
    return env


def render(template: str, context: Mapping[str, object]) -> str:
    """The named template rendered with `context`."""
    return environment().get_template(template).render(context)
