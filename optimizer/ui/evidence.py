"""An insight's stored evidence as a few readable lines (segment, metric, window, effect,
counts, significance, and for a group of findings what it groups), and a group's facets
as rows of a table, for the insights page. Pure.

The evidence is the JSON object pattern analysis wrote (`patterns.describe`), but older rows,
other kinds and rows edited by hand carry other keys or odd values: every line here is built
only from what is present and readable, and the page shows the raw JSON beside it anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Lists longer than this are cut in a line ("…"); the raw JSON holds them whole.
MAX_ITEMS = 5
# Facets shown as rows; the raw JSON holds them all.
MAX_FACET_ROWS = 30
WINDOWS = {"24h": "last 24 h", "7d": "last 7 days", "24h_vs_prior_6d": "last 24 h vs 6 days before"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a whole number too big for a float (JSON allows any size)
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any) -> str | None:
    """A scalar as a short text: numbers to 3 significant digits; None for what is not a
    scalar (a dict, a list, null)."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = _number(value)
    if number is None:
        return None
    return f"{int(number):,}" if number.is_integer() and abs(number) < 1e15 else f"{number:.3g}"


def _items(value: Any) -> str | None:
    """A list of scalars (or of objects with a `term` or `name`) as "a, b, c"."""
    if not isinstance(value, list):
        return None
    shown = []
    for item in value:
        if isinstance(item, Mapping):
            item = item.get("term", item.get("name"))
        text = _fmt(item)
        if text is not None:
            shown.append(text)
    if not shown:
        return None
    more = "…" if len(shown) > MAX_ITEMS else ""
    return ", ".join(shown[:MAX_ITEMS]) + more


def _side(label: str, value: Any) -> str | None:
    """One side of a comparison: {"n", "units", "rate"|"mean"} or a bare number."""
    if not isinstance(value, Mapping):
        text = _fmt(value)
        return None if text is None else f"{label} {text}"
    parts = []
    for key in ("rate", "mean"):
        if (text := _fmt(value.get(key))) is not None:
            parts.append(f"{key} {text}")
    if (n := _fmt(value.get("n"))) is not None:
        parts.append(f"n {n}")
    if (units := _fmt(value.get("units"))) is not None:
        parts.append(f"{units} units")
    return f"{label}: {', '.join(parts)}" if parts else None


def _segment(e: Mapping[str, Any]) -> str | None:
    dimension, value = _fmt(e.get("dimension")), _fmt(e.get("value"))
    if dimension is not None and value is not None:
        return f"{dimension} = {value}"
    return _fmt(e.get("segment"))


def _window(e: Mapping[str, Any]) -> str | None:
    start, end = _fmt(e.get("window_start")), _fmt(e.get("window_end"))
    span = f"{start} to {end}" if start and end else None
    name = _fmt(e.get("window"))
    if name and span:
        return f"{name} ({span})"
    return name or span


def _effect(e: Mapping[str, Any]) -> str | None:
    parts = []
    if (effect := _fmt(e.get("effect"))) is not None:
        scale = _fmt(e.get("effect_scale"))
        parts.append(f"{effect} ({scale})" if scale else effect)
    if (difference := _fmt(e.get("difference"))) is not None:
        parts.append(f"difference {difference}")
    low, high = _fmt(e.get("ci_low")), _fmt(e.get("ci_high"))
    if low is not None and high is not None:
        level = _number(e.get("ci_level"))
        name = f"{level * 100:g}% interval" if level is not None and 0 < level < 1 else "interval"
        parts.append(f"{name} {low} to {high}")
    before, after = _fmt(e.get("before")), _fmt(e.get("after"))
    if before is not None and after is not None:
        parts.append(f"{before} → {after}")
    return "; ".join(parts) or None


def _counts(e: Mapping[str, Any]) -> str | None:
    parts = []
    for key, label in (
        ("conversations", "conversations"),
        ("n", "conversations"),
        ("transcripts_sent", "transcripts sent"),
        ("failed_transcripts", "failed transcripts"),
        ("successful_transcripts", "successful transcripts"),
    ):
        if (text := _fmt(e.get(key))) is not None:
            parts.append(f"{text} {label}")
    for key in ("rate", "group", "recent", "rest"):
        if (text := _side(key, e.get(key))) is not None:
            parts.append(text)
    # "before" is a side only as an object; a bare number is the effect's starting value.
    if isinstance(e.get("before"), Mapping) and (text := _side("before", e["before"])):
        parts.append(text)
    return "; ".join(parts) or None


def _significance(e: Mapping[str, Any]) -> str | None:
    parts = [
        f"{label} {text}"
        for key, label in (("p_value", "p"), ("q_value", "q"), ("fdr", "FDR"))
        if (text := _fmt(e.get(key))) is not None
    ]
    return ", ".join(parts) or None


def _facets(value: Any) -> list[Mapping[str, Any]]:
    return [f for f in value if isinstance(f, Mapping)] if isinstance(value, list) else []


def _subject(e: Mapping[str, Any]) -> str:
    """A facet's segment or tag ("segment = billing"); a regression's "last 24 h"."""
    if e.get("dimension") is None and e.get("value") is None:
        return "last 24 h (regression)"
    return _segment(e) or "?"


def _grouped(e: Mapping[str, Any]) -> str | None:
    """What a group holds: how many findings, about which subjects and metrics."""
    facets = _facets(e.get("facets"))
    if len(facets) < 2:
        return None
    subjects = list(dict.fromkeys(_subject(f) for f in facets))
    metrics = list(dict.fromkeys(m for f in facets if (m := _fmt(f.get("metric")))))
    more = "…" if len(subjects) > MAX_ITEMS else ""
    text = f"{len(facets)} findings about {', '.join(subjects[:MAX_ITEMS])}{more}"
    return text + (f" ({', '.join(metrics[:MAX_ITEMS])})" if metrics else "")


def _overlaps(e: Mapping[str, Any]) -> str | None:
    parts = []
    for item in _facets(e.get("overlaps")):
        share = _number(item.get("overlap"))
        if share is not None:
            parts.append(f"{_subject(item)} {100 * share:.0f}%")
    if not parts:
        return None
    more = "…" if len(parts) > MAX_ITEMS else ""
    return ", ".join(parts[:MAX_ITEMS]) + more + " of the smaller group's conversations"


@dataclass(frozen=True)
class FacetRow:
    """One folded finding as the page's table shows it; "" where the evidence has nothing
    readable."""

    subject: str
    metric: str
    window: str
    inside: str
    outside: str
    effect: str
    interval: str
    q_value: str
    observations: str
    actionable: str
    reasons: str


def _or_blank(value: Any) -> str:
    return _fmt(value) or ""


def _facet_row(f: Mapping[str, Any]) -> FacetRow:
    low, high = _fmt(f.get("ci_low")), _fmt(f.get("ci_high"))
    n, units = _fmt(f.get("n")), _fmt(f.get("units"))
    actionable = f.get("actionable")
    window = _fmt(f.get("window")) or ""
    return FacetRow(
        subject=_subject(f),
        metric=_or_blank(f.get("metric")),
        window=WINDOWS.get(window, window),
        inside=_or_blank(f.get("inside")),
        outside=_or_blank(f.get("outside")),
        effect=_or_blank(f.get("effect")),
        interval=f"{low} to {high}" if low is not None and high is not None else "",
        q_value=_or_blank(f.get("q_value")),
        observations=(f"{n} ({units} users)" if units else n) if n else "",
        actionable=_fmt(actionable) or "" if isinstance(actionable, bool) else "",
        reasons=_items(f.get("not_actionable_because")) or "",
    )


def facet_rows(evidence: Mapping[str, Any]) -> list[FacetRow]:
    """The facets of a group, strongest first as stored; none for a single finding."""
    facets = _facets(evidence.get("facets"))
    if len(facets) < 2:
        return []
    return [_facet_row(f) for f in facets[:MAX_FACET_ROWS]]


def evidence_facts(evidence: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) lines for what the evidence holds, in a fixed order."""
    lines = (
        ("groups", _grouped(evidence)),
        ("grouped by shared conversations", _overlaps(evidence)),
        ("segment", _segment(evidence)),
        ("metric", _fmt(evidence.get("metric"))),
        ("window", _window(evidence)),
        ("effect", _effect(evidence)),
        ("counts", _counts(evidence)),
        ("significance", _significance(evidence)),
        ("not actionable because", _items(evidence.get("not_actionable_because"))),
        ("terms", _items(evidence.get("terms"))),
        ("themes", _items(evidence.get("themes"))),
        ("examples", _items(evidence.get("examples"))),
        ("unreadable", _fmt(evidence.get("unreadable"))),
    )
    return [(label, text) for label, text in lines if text]
