"""What a stored insight says: title, detail and evidence, built from a group of findings
(grouping) or from the failure themes. Pure.

The evidence is the record a person (or variant generation) reads later: every number the
decision used, the window, the group, and `sample_conversation_ids` (failed conversations
in the group; variant generation reads exactly that key to pick transcripts). A number that
could not be computed is null, never NaN or infinite; the reasons say why.

A group's evidence is its main facet's, as a single finding's was (top-level "dimension"
and "value" name its segment or tag: generation and replay read them), plus "facets", each
folded finding's own figures in a few keys (strongest first, the main facet first),
"overlaps" (why the other subjects joined) and "overlap_min"; its sample ids are those of
its subjects, the main one's first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from optimizer.clock import iso
from optimizer.patterns import fingerprints
from optimizer.patterns.grouping import OVERLAP_TO_GROUP, Group, Subject
from optimizer.patterns.sampling import TRANSCRIPT_CHARS
from optimizer.patterns.segments import REGRESSION_WINDOW, Finding, Rules
from optimizer.patterns.significance import CI_LEVEL
from optimizer.patterns.themes import Z_THRESHOLD, ThemeResult
from optimizer.stats import finite_only, metric

MAX_TITLE_CHARS = 500
WINDOW_TEXT = {
    "24h": "last 24 h",
    "7d": "last 7 days",
    REGRESSION_WINDOW: "last 24 h vs the 6 days before",
}
MAX_TITLE_SUBJECTS = 3  # other subjects a title names; the rest are counted
MAX_DETAIL_FACETS = 12  # facets the detail lists, one a line; the evidence holds them all


@dataclass(frozen=True)
class InsightDraft:
    """One row to insert or update in ai_pattern_insights."""

    kind: str
    fingerprint: str
    title: str
    detail: str
    evidence: dict[str, Any]
    is_actionable: bool
    effect_size: float | None
    # A group's subjects, the main one first (empty for themes): the store matches them
    # with its stored groups to keep a problem's row (fingerprints.name_groups).
    subjects: tuple[Subject, ...] = ()


def _r(value: float | None, digits: int = 6) -> float | None:
    clean = finite_only(value)
    return None if clean is None else round(clean, digits)


def _is_rate(name: str) -> bool:
    """A proportion reads as a rate (percent, points); any other metric as a mean."""
    return metric(name).kind == "proportion"


def _shown(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if _is_rate(name) else f"{value:.2f}"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 3] + "..."


def _title(finding: Finding) -> str:
    test, result = finding.test, finding.test.result
    what = f"{test.metric} rate" if _is_rate(test.metric) else f"mean {test.metric}"
    inside, outside = _shown(test.metric, result.inside), _shown(test.metric, result.outside)
    if test.kind == "regression":
        return f"Regression: {what} {inside} in the last 24 h vs {outside} in the 6 days before"
    return _cut(
        f"{test.dimension} {test.value!r}: {what} {inside} vs {outside} in other "
        f"conversations ({WINDOW_TEXT[test.window]})"
    )


def _detail(finding: Finding, rules: Rules) -> str:
    result = finding.test.result
    name = finding.test.metric
    text = (
        f"{result.n_inside} vs {result.n_outside} observations from "
        f"{result.units_inside} vs {result.units_outside} users; difference "
        f"{_pp(result) if _is_rate(name) else _shown(name, result.difference)} "
        f"({100 * CI_LEVEL:g}% CI {_ci(finding)}), p = {_p(result.p_value)}, "
        f"BH q = {_p(finding.q_value)} (FDR {rules.fdr:g}). "
    )
    if finding.actionable:
        return text + "Actionable: significant, worse, large enough and well sampled."
    return text + "Not actionable: " + "; ".join(finding.reasons) + "."


def _pp(result: Any) -> str:
    return "n/a" if result.difference is None else f"{100 * result.difference:+.1f} points"


def _ci(finding: Finding) -> str:
    r = finding.test.result
    if r.ci_low is None or r.ci_high is None:
        return "n/a"
    scale = 100.0 if _is_rate(finding.test.metric) else 1.0
    return f"{scale * r.ci_low:+.3g} to {scale * r.ci_high:+.3g}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _side(name: str, value: float | None, n: int, units: int) -> dict[str, Any]:
    key = "rate" if _is_rate(name) else "mean"
    return {"n": n, "units": units, key: _r(value)}


def _effect_scale(name: str) -> str:
    """What the effect is (see segments.normalised_effect), in words."""
    if _is_rate(name):
        return f"{name}-rate difference"
    low, high = metric(name).bounds
    return f"{name} difference / {high - low:g} (range of the {low:g}-{high:g} scale)"


def finding_evidence(
    finding: Finding,
    *,
    rules: Rules,
    family_size: int,
    version_id: int,
    window_start: datetime,
    window_end: datetime,
) -> dict[str, Any]:
    """Every figure of one finding: a group's top level holds its main facet's."""
    test, result = finding.test, finding.test.result
    return {
        "kind": test.kind,
        "dimension": test.dimension,
        "value": test.value,
        "metric": test.metric,
        "window": test.window,
        "window_start": iso(window_start),
        "window_end": iso(window_end),
        "version_id": version_id,
        "test": result.test,
        "conversations": test.conversations,
        "units_inside": result.units_inside,
        "units_outside": result.units_outside,
        "group" if test.kind == "segment" else "recent": _side(
            test.metric, result.inside, result.n_inside, result.units_inside
        ),
        "rest" if test.kind == "segment" else "before": _side(
            test.metric, result.outside, result.n_outside, result.units_outside
        ),
        "difference": _r(result.difference),
        "effect": _r(finding.effect),
        "effect_scale": _effect_scale(test.metric),
        "ci_level": CI_LEVEL,
        "ci_low": _r(result.ci_low),
        "ci_high": _r(result.ci_high),
        "statistic": _r(result.statistic),
        "df": _r(result.df, 2),
        "within_unit_correlation": _r(result.icc, 4),
        "p_value": finite_only(result.p_value),
        "q_value": finite_only(finding.q_value),
        "fdr": rules.fdr,
        "tests_in_family": family_size,
        "min_effect": rules.min_effect,
        "min_conversations": rules.min_conversations,
        "not_actionable_because": list(finding.reasons),
    }


def _sig(value: float | None) -> float | None:
    """Three significant digits: a facet's p- or q-value."""
    clean = finite_only(value)
    return None if clean is None else float(f"{clean:.3g}")


def facet(finding: Finding) -> dict[str, Any]:
    """One folded finding's own figures, in few keys (a group holds up to dozens).
    inside/outside: the group and the rest (a regression: the last 24 h and the days
    before), a rate or a mean as the metric is; n and units: the group's observations of
    the metric and the users behind them."""
    test, result = finding.test, finding.test.result
    out: dict[str, Any] = {
        "dimension": test.dimension,
        "value": test.value,
        "metric": test.metric,
        "window": test.window,
        "inside": _r(result.inside, 4),
        "outside": _r(result.outside, 4),
        "n": result.n_inside,
        "units": result.units_inside,
        "effect": _r(finding.effect, 4),
        "ci_low": _r(result.ci_low, 4),
        "ci_high": _r(result.ci_high, 4),
        "q_value": _sig(finding.q_value),
        "actionable": finding.actionable,
    }
    if finding.reasons:
        out["not_actionable_because"] = list(finding.reasons)
    return out


def facets_of(evidence: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The facets of stored evidence: the objects of its "facets" list (rows written before
    grouping, or edited by hand, may have none or odd ones)."""
    found = evidence.get("facets")
    if not isinstance(found, list):
        return []
    return [f for f in found if isinstance(f, Mapping)]


def _facet_line(finding: Finding) -> str:
    test, result = finding.test, finding.test.result
    what = f"{test.metric} rate" if _is_rate(test.metric) else f"mean {test.metric}"
    subject = Subject.of(test)
    where = "" if subject.dimension is None else f"{subject.label()}, "
    gap = _pp(result) if _is_rate(test.metric) else _shown(test.metric, result.difference)
    verdict = "actionable" if finding.actionable else "not actionable"
    return (
        f"- {where}{what}, {WINDOW_TEXT.get(test.window, test.window)}: "
        f"{_shown(test.metric, result.inside)} vs {_shown(test.metric, result.outside)} "
        f"({gap}; n {result.n_inside}, {result.units_inside} users; q {_p(finding.q_value)}), "
        f"{verdict}"
    )


def _group_title(group: Group) -> str:
    main = group.main
    others = [s.label() for s in group.subjects[1:]]
    if len(others) > MAX_TITLE_SUBJECTS:
        others = [*others[:MAX_TITLE_SUBJECTS], f"{len(others) - MAX_TITLE_SUBJECTS} more"]
    others += [m for m in group.metrics() if m != main.test.metric]
    title = _title(main)
    return _cut(f"{title} (also {'; '.join(others)})" if others else title)


def _group_detail(group: Group, rules: Rules) -> str:
    text = _detail(group.main, rules)
    if len(group.facets) == 1:
        return text
    lines = [
        text,
        f"One insight for {len(group.facets)} findings about the same conversations, "
        "strongest first:",
        *(_facet_line(f) for f in group.facets[:MAX_DETAIL_FACETS]),
    ]
    if len(group.facets) > MAX_DETAIL_FACETS:
        lines.append(f"- and {len(group.facets) - MAX_DETAIL_FACETS} more (see the evidence)")
    if group.overlaps:
        shares = ", ".join(f"{s.label()} {100 * share:.0f}%" for s, share in group.overlaps)
        lines.append(
            f"Grouped with {group.subject.label()} because they share conversations "
            f"(last 7 days, share of the smaller): {shares}."
        )
    return "\n".join(lines)


def group_draft(
    group: Group,
    *,
    rules: Rules,
    family_size: int,
    version_id: int,
    window_starts: Mapping[str, datetime],
    window_end: datetime,
    sample_ids: list[int],
) -> InsightDraft:
    """One insight for a group of findings (see the module); named after its main subject
    until the store matches it with a stored group."""
    main = group.main
    evidence = finding_evidence(
        main,
        rules=rules,
        family_size=family_size,
        version_id=version_id,
        window_start=window_starts[main.test.window],
        window_end=window_end,
    )
    evidence["facets"] = [facet(f) for f in group.facets]
    evidence["overlaps"] = [
        {"dimension": s.dimension, "value": s.value, "overlap": _r(share, 4)}
        for s, share in group.overlaps
    ]
    evidence["overlap_min"] = OVERLAP_TO_GROUP
    evidence["sample_conversation_ids"] = sample_ids
    return InsightDraft(
        kind=main.test.kind,
        fingerprint=fingerprints.group(group.subject),
        title=_group_title(group),
        detail=_group_detail(group, rules),
        evidence=evidence,
        is_actionable=group.actionable,
        effect_size=_r(main.effect),
        subjects=group.subjects,
    )


def theme_draft(
    themes: ThemeResult,
    *,
    version_id: int,
    window_start: datetime,
    window_end: datetime,
    sample_ids: list[int],
) -> InsightDraft:
    """The statistical failure themes as one insight. Not actionable on its own: the terms
    describe failed conversations but no group that does worse, and there is no error rate
    control across the vocabulary; variant generation still sees them with the segments."""
    terms = [t.to_dict(themes.n_failed, themes.n_succeeded) for t in themes.terms]
    listed = ", ".join(
        f"{t.term!r} (z {t.z:.1f}, {t.failed}/{themes.n_failed} failed vs "
        f"{t.succeeded}/{themes.n_succeeded} successful)"
        for t in themes.terms[:3]
    )
    return InsightDraft(
        kind="theme",
        fingerprint=fingerprints.THEME_STATISTICAL,
        title=_cut(
            "Terms that mark failed conversations: " + ", ".join(repr(t.term) for t in themes.terms)
        ),
        detail=(
            f"Log-odds with an informative Dirichlet prior over {themes.n_failed} failed "
            f"and {themes.n_succeeded} successful transcripts (last 7 days, each cut to "
            f"its first {TRANSCRIPT_CHARS} characters); terms with z > {Z_THRESHOLD}. "
            f"Strongest: {listed}."
        ),
        evidence={
            "kind": "theme",
            "method": "log-odds, informative Dirichlet prior",
            "window_start": iso(window_start),
            "window_end": iso(window_end),
            "version_id": version_id,
            "failed_transcripts": themes.n_failed,
            "successful_transcripts": themes.n_succeeded,
            "terms": terms,
            "sample_conversation_ids": sample_ids,
        },
        is_actionable=False,
        effect_size=None,
    )
