"""Chart series, SRM status and the decision timeline, read from stored experiment checks.

A check's `statistics` is what `experiments.monitor.check_experiment` stored
(`ExperimentAnalysis.to_dict(caps=, sums=)`, NaN as null), but rows may be older than the
current layout or edited by hand, so every reader here accepts any JSON value (or text) and
never raises: a missing or malformed field reads as None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

CONTINUE = "continue"


class CheckRow(Protocol):
    """One stored check (`experiments.store.AnalysisView` has this shape)."""

    @property
    def id(self) -> int: ...
    @property
    def decision(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def checked_at(self) -> datetime: ...
    @property
    def statistics(self) -> Any: ...


@dataclass(frozen=True)
class DecisionMark:
    """A check whose decision was not `continue`: drawn as a vertical marker."""

    analysis_id: int
    checked_at: datetime
    decision: str
    reason: str


@dataclass(frozen=True)
class LiftPoint:
    """One arm at one check: `relative` = arm/control - 1 with its always-valid bounds
    (fractions, not %). All None when that check could not estimate it (`error` says why)."""

    analysis_id: int
    checked_at: datetime
    relative: float | None
    low: float | None
    high: float | None
    n_control: int | None
    n_arm: int | None
    error: str | None
    prob_beat_control: float | None = None


@dataclass(frozen=True)
class ArmSeries:
    arm_id: int
    label: str
    points: tuple[LiftPoint, ...]


@dataclass(frozen=True)
class LiftSeries:
    metric: str
    higher_is_better: bool
    arms: tuple[ArmSeries, ...]
    decisions: tuple[DecisionMark, ...]
    check_times: tuple[datetime, ...]


@dataclass(frozen=True)
class GuardrailPoint:
    """`low`/`high` are approximate bounds on `relative`, translated from the margin
    contrast's bounds at the control mean (see `guardrail_band`)."""

    analysis_id: int
    checked_at: datetime
    relative: float | None
    low: float | None
    high: float | None
    status: str | None
    error: str | None


@dataclass(frozen=True)
class GuardrailArm:
    arm_id: int
    label: str
    points: tuple[GuardrailPoint, ...]


@dataclass(frozen=True)
class GuardrailSeries:
    """One guardrail metric. `limit` is the relative change the tolerance allows, signed:
    -tolerance when higher is better, +tolerance otherwise (None when unknown)."""

    metric: str
    higher_is_better: bool
    tolerance: float | None
    limit: float | None
    arms: tuple[GuardrailArm, ...]
    decisions: tuple[DecisionMark, ...]
    check_times: tuple[datetime, ...]


@dataclass(frozen=True)
class SrmArm:
    arm_id: int | None
    label: str
    units: int | None
    expected_share: float | None
    observed_share: float | None


@dataclass(frozen=True)
class SrmView:
    """`detected` is None when the check holds no readable SRM result."""

    detected: bool | None
    bayes_factor: float | None
    threshold: float | None
    error: str | None
    arms: tuple[SrmArm, ...]


@dataclass(frozen=True)
class TimelineItem:
    """One decision, or a run of consecutive `continue` checks collapsed into one item."""

    decision: str
    count: int
    first_id: int
    last_id: int
    first_at: datetime
    last_at: datetime
    reason: str


# --- tolerant readers -----------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    # bool is an int subclass; a hand-written `true` is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None and number.is_integer() else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def statistics_of(row: CheckRow) -> dict[str, Any]:
    """The check's statistics as a dict; text that is JSON is decoded, anything else is {}."""
    return _decoded(row.statistics)


def _decoded(stats: Any) -> dict[str, Any]:
    if isinstance(stats, str | bytes):
        try:
            stats = json.loads(stats)
        except (ValueError, RecursionError):
            return {}
    return _dict(stats)


def arm_labels(rows: Sequence[CheckRow]) -> dict[int, str]:
    """ "v<version>" per arm id, from the checks' `sums` (the latest check wins)."""
    labels: dict[int, str] = {}
    for row in rows:
        for entry in _list(statistics_of(row).get("sums")):
            arm_id, version = _int(_dict(entry).get("arm_id")), _int(_dict(entry).get("version"))
            if arm_id is not None and version is not None:
                labels[arm_id] = f"v{version}"
    return labels


def _label(labels: dict[int, str], arm_id: int) -> str:
    return labels.get(arm_id, f"arm {arm_id}")


def decision_marks(rows: Sequence[CheckRow]) -> tuple[DecisionMark, ...]:
    return tuple(
        DecisionMark(row.id, row.checked_at, str(row.decision), _text(row.reason) or "")
        for row in rows
        if row.decision != CONTINUE
    )


# --- lift -----------------------------------------------------------------------------------


def _lift_point(row: CheckRow, entry: dict[str, Any]) -> LiftPoint:
    return LiftPoint(
        analysis_id=row.id,
        checked_at=row.checked_at,
        relative=_num(entry.get("relative")),
        low=_num(entry.get("relative_low")),
        high=_num(entry.get("relative_high")),
        n_control=_int(entry.get("n_control")),
        n_arm=_int(entry.get("n_arm")),
        error=_text(entry.get("error")),
        prob_beat_control=_num(entry.get("prob_beat_control")),
    )


def lift_series(rows: Sequence[CheckRow], metric: str) -> LiftSeries:
    """The primary metric's lift per variant arm, one point per check that compared the arm.
    Comparisons of another metric are skipped; one without a `metric` key counts."""
    points: dict[int, list[LiftPoint]] = {}
    higher_is_better = True
    for row in rows:
        seen: set[int] = set()  # a hand-edited row may repeat an arm: its first entry counts
        for entry in map(_dict, _list(statistics_of(row).get("comparisons"))):
            arm_id = _int(entry.get("arm_id"))
            if arm_id is None or arm_id in seen or entry.get("metric", metric) != metric:
                continue
            seen.add(arm_id)
            points.setdefault(arm_id, []).append(_lift_point(row, entry))
            higher_is_better = _flag(entry.get("higher_is_better"), higher_is_better)
    labels = arm_labels(rows)
    return LiftSeries(
        metric=metric,
        higher_is_better=higher_is_better,
        arms=tuple(ArmSeries(a, _label(labels, a), tuple(p)) for a, p in points.items()),
        decisions=decision_marks(rows),
        check_times=tuple(row.checked_at for row in rows),
    )


# --- guardrails -----------------------------------------------------------------------------


def guardrail_band(
    gain_low: float | None,
    gain_high: float | None,
    mean_control: float | None,
    tolerance: float | None,
    higher_is_better: bool,
) -> tuple[float | None, float | None]:
    """Approximate bounds on arm/control - 1 from the margin contrast's bounds.

    The stored contrast is gain = s * (arm - (1 - s * tol) * control) with s = +1 when
    higher is better, so gain / control = s * relative + tol, i.e.
    relative = s * (gain / control - tol). Holding the control mean at its estimate ignores
    its uncertainty, hence "approx." on the chart. (None, None) without a control mean.
    """
    if mean_control is None or mean_control == 0 or tolerance is None:
        return None, None
    sign = 1.0 if higher_is_better else -1.0

    def translate(gain: float | None) -> float | None:
        return None if gain is None else sign * (gain / mean_control - tolerance)

    low, high = translate(gain_low), translate(gain_high)
    # A negative sign or control mean reverses the order of the bounds.
    if sign * mean_control < 0:
        low, high = high, low
    return low, high


def _guardrail_point(row: CheckRow, entry: dict[str, Any]) -> GuardrailPoint:
    low, high = guardrail_band(
        _num(entry.get("gain_low")),
        _num(entry.get("gain_high")),
        _num(entry.get("mean_control")),
        _num(entry.get("tolerance")),
        _flag(entry.get("higher_is_better"), True),
    )
    return GuardrailPoint(
        analysis_id=row.id,
        checked_at=row.checked_at,
        relative=_num(entry.get("relative")),
        low=low,
        high=high,
        status=_text(entry.get("status")),
        error=_text(entry.get("error")),
    )


@dataclass
class _MetricAcc:
    higher_is_better: bool = True
    tolerance: float | None = None
    points: dict[int, list[GuardrailPoint]] = field(default_factory=dict)


def guardrail_series(rows: Sequence[CheckRow]) -> list[GuardrailSeries]:
    """One series per guardrail metric (in order of first appearance), each arm's points
    with the tolerance of the latest check that states one."""
    metrics: dict[str, _MetricAcc] = {}
    for row in rows:
        seen: set[tuple[str, int]] = set()  # first entry per metric and arm in a row
        for entry in map(_dict, _list(statistics_of(row).get("guardrails"))):
            metric, arm_id = _text(entry.get("metric")), _int(entry.get("arm_id"))
            if metric is None or arm_id is None or (metric, arm_id) in seen:
                continue
            seen.add((metric, arm_id))
            acc = metrics.setdefault(metric, _MetricAcc())
            acc.higher_is_better = _flag(entry.get("higher_is_better"), acc.higher_is_better)
            tolerance = _num(entry.get("tolerance"))
            acc.tolerance = acc.tolerance if tolerance is None else tolerance
            acc.points.setdefault(arm_id, []).append(_guardrail_point(row, entry))
    labels, decisions = arm_labels(rows), decision_marks(rows)
    times = tuple(row.checked_at for row in rows)
    return [
        GuardrailSeries(
            metric=metric,
            higher_is_better=acc.higher_is_better,
            tolerance=acc.tolerance,
            limit=_limit(acc.tolerance, acc.higher_is_better),
            arms=tuple(GuardrailArm(a, _label(labels, a), tuple(p)) for a, p in acc.points.items()),
            decisions=decisions,
            check_times=times,
        )
        for metric, acc in metrics.items()
    ]


def _limit(tolerance: float | None, higher_is_better: bool) -> float | None:
    if tolerance is None:
        return None
    return -tolerance if higher_is_better else tolerance


# --- SRM and timeline -----------------------------------------------------------------------


def srm_status(stats: Any, labels: dict[int, str] | None = None) -> SrmView:
    """The sample-ratio check of one check's statistics (a dict, JSON text or anything)."""
    srm = _dict(_decoded(stats).get("srm"))
    ids, counts = _list(srm.get("arm_ids")), _list(srm.get("counts"))
    shares = _list(srm.get("expected_shares"))
    total = sum(c for c in (_int(c) for c in counts) if c is not None and c > 0)
    arms = []
    for i, raw_id in enumerate(ids):
        arm_id = _int(raw_id)
        units = _int(counts[i]) if i < len(counts) else None
        arms.append(
            SrmArm(
                arm_id=arm_id,
                label=_label(labels or {}, arm_id) if arm_id is not None else "?",
                units=units,
                expected_share=_num(shares[i]) if i < len(shares) else None,
                observed_share=units / total if units is not None and total > 0 else None,
            )
        )
    detected = srm.get("detected")
    return SrmView(
        detected=detected if isinstance(detected, bool) else None,
        bayes_factor=_num(srm.get("bayes_factor")),
        threshold=_num(srm.get("threshold")),
        error=_text(srm.get("error")),
        arms=tuple(arms),
    )


def timeline(rows: Sequence[CheckRow]) -> list[TimelineItem]:
    """The checks in order, each run of consecutive `continue` checks as one item (its
    reason is the run's last), every other decision as its own item."""
    items: list[TimelineItem] = []
    for row in rows:
        decision, reason = str(row.decision), _text(row.reason) or ""
        last = items[-1] if items else None
        if decision == CONTINUE and last is not None and last.decision == CONTINUE:
            items[-1] = TimelineItem(
                CONTINUE,
                last.count + 1,
                last.first_id,
                row.id,
                last.first_at,
                row.checked_at,
                reason,
            )
        else:
            items.append(
                TimelineItem(decision, 1, row.id, row.id, row.checked_at, row.checked_at, reason)
            )
    return items
