"""Reading chart series, SRM status and the timeline out of stored experiment checks."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.stats.types import Comparison, GuardrailCheck, SrmCheck
from optimizer.ui.charts import guardrail_chart, lift_chart
from optimizer.ui.series import (
    guardrail_band,
    guardrail_series,
    lift_series,
    srm_status,
    timeline,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    id: int
    decision: str
    reason: str
    checked_at: datetime
    statistics: Any


def comparison(arm_id: int = 2, relative: float | None = 0.1, **extra: Any) -> dict[str, Any]:
    return {
        "arm_id": arm_id,
        "metric": "success",
        "n_control": 100,
        "n_arm": 98,
        "relative": relative,
        "relative_low": None if relative is None else relative - 0.05,
        "relative_high": None if relative is None else relative + 0.05,
        "higher_is_better": True,
        "error": None,
        **extra,
    }


def stats(*comparisons: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "comparisons": list(comparisons),
        "guardrails": [],
        "srm": {"detected": False},
        "sums": [
            {"arm_id": 1, "version": 3, "is_control": True},
            {"arm_id": 2, "version": 4, "is_control": False},
        ],
        **extra,
    }


# The keys of a stored guardrail check the readers use.
GUARDRAIL_KEYS = (
    "arm_id",
    "metric",
    "status",
    "tolerance",
    "higher_is_better",
    "mean_control",
    "relative",
    "gain_low",
    "gain_high",
)


def row(i: int, statistics: Any, decision: str = "continue", reason: str = "r") -> Row:
    return Row(i, decision, reason, T0 + timedelta(hours=i), statistics)


def test_the_keys_read_are_the_keys_the_analysis_writes():
    # The readers name keys of ExperimentAnalysis.to_dict(); a renamed field must fail here.
    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert {
        "arm_id",
        "metric",
        "n_control",
        "n_arm",
        "relative",
        "relative_low",
        "relative_high",
        "higher_is_better",
        "error",
    } <= names(Comparison)
    assert {*GUARDRAIL_KEYS, "error"} <= names(GuardrailCheck)
    srm_keys = {"detected", "bayes_factor", "threshold", "error", "arm_ids", "counts"}
    assert srm_keys | {"expected_shares"} <= names(SrmCheck)


def test_lift_series_has_one_point_per_check_labelled_by_version():
    rows = [row(i, stats(comparison(relative=0.01 * i))) for i in range(1, 4)]
    rows.append(row(4, stats(comparison(relative=0.2)), decision="promote", reason="v4 wins"))
    series = lift_series(rows, "success")
    (arm,) = series.arms
    assert arm.label == "v4"
    assert [p.analysis_id for p in arm.points] == [1, 2, 3, 4]
    assert arm.points[0].relative == 0.01
    assert arm.points[0].low is not None and math.isclose(arm.points[0].low, -0.04)
    assert [(d.analysis_id, d.decision, d.reason) for d in series.decisions] == [
        (4, "promote", "v4 wins")
    ]
    assert len(series.check_times) == 4


def test_nan_stored_as_null_reads_as_no_estimate():
    rows = [row(1, stats(comparison(relative=None, error="too_few_units")))]
    (point,) = lift_series(rows, "success").arms[0].points
    assert (point.relative, point.low, point.high, point.error) == (
        None,
        None,
        None,
        "too_few_units",
    )


def test_other_metrics_are_skipped_and_a_missing_metric_key_counts():
    old = comparison(relative=0.3)
    del old["metric"]
    rows = [row(1, stats(comparison(metric="latency"), old))]
    (arm,) = lift_series(rows, "success").arms
    assert [p.relative for p in arm.points] == [0.3]


def test_hand_edited_rows_do_not_raise():
    rows = [
        row(1, None),
        row(2, "not json {"),
        row(3, json.dumps(stats(comparison(relative=0.5)))),
        row(4, {"comparisons": "oops", "guardrails": {"a": 1}, "srm": [1], "sums": 7}),
        row(5, {"comparisons": [None, 3, {"arm_id": "2"}, {"arm_id": 2, "relative": "0.1"}]}),
        row(6, {"comparisons": [{"arm_id": True, "relative": 1}]}),
        row(7, [1, 2, 3]),
    ]
    series = lift_series(rows, "success")
    points = [p for arm in series.arms for p in arm.points]
    # The JSON text of row 3 is decoded; the string "0.1" is not a number; `true` no arm id.
    assert [(p.analysis_id, p.relative) for p in points] == [(3, 0.5), (5, None)]
    assert guardrail_series(rows) == []
    assert len(timeline(rows)) == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included, as a hand edit could write them
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)
comparison_like = st.fixed_dictionaries(
    {},
    optional={
        key: field_values
        for key in ("arm_id", "metric", "relative", "relative_low", "relative_high", "n_arm")
    },
)
guardrail_like = st.fixed_dictionaries(
    {},
    optional={key: field_values for key in GUARDRAIL_KEYS},
)
statistics_like = st.fixed_dictionaries(
    {},
    optional={
        "comparisons": st.lists(comparison_like | json_values, max_size=3),
        "guardrails": st.lists(guardrail_like | json_values, max_size=3),
        "srm": json_values,
        "sums": json_values,
    },
)


def _finite_or_none(value: float | None) -> bool:
    return value is None or math.isfinite(value)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(statistics_like | json_values, st.sampled_from(["continue", "promote", "x"])),
        max_size=5,
    )
)
def test_readers_accept_any_statistics(checks):
    rows = [row(i, s, decision) for i, (s, decision) in enumerate(checks)]
    lift = lift_series(rows, "success")
    guardrails = guardrail_series(rows)
    for arm in lift.arms:
        assert len(arm.points) <= len(rows)
        assert all(_finite_or_none(v) for p in arm.points for v in (p.relative, p.low, p.high))
    for series in guardrails:
        for arm in series.arms:
            for p in arm.points:
                assert all(_finite_or_none(v) for v in (p.relative, p.low, p.high))
                if p.low is not None and p.high is not None:
                    assert p.low <= p.high
    for check in rows:
        srm_status(check.statistics)
    # Whatever was read, the charts render well-formed SVG.
    for svg in [lift_chart(lift), *map(guardrail_chart, guardrails)]:
        ET.fromstring(svg)
    assert sum(item.count for item in timeline(rows)) == len(rows)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(
    higher_is_better=st.booleans(),
    tolerance=st.floats(0, 0.5),
    mean_control=finite.filter(lambda v: abs(v) > 1e-3),
    mean_arm=finite,
    half=st.floats(0, 1e3),
)
def test_guardrail_band_translates_the_margin_back_to_relative_change(
    higher_is_better, tolerance, mean_control, mean_arm, half
):
    # As optimizer.stats.analysis.check_guardrail forms the margin contrast.
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * (mean_arm - (1 - sign * tolerance) * mean_control)
    relative = mean_arm / mean_control - 1
    low, high = guardrail_band(gain - half, gain + half, mean_control, tolerance, higher_is_better)
    assert low is not None and high is not None
    assert low <= high
    slack = 1e-9 * (1 + abs(relative) + abs(half / mean_control))
    assert low - slack <= relative <= high + slack
    # The band's width is the gain interval's, scaled by the control mean (up to rounding at
    # the magnitude of the values: a tiny band around a huge change keeps fewer digits).
    assert math.isclose(high - low, 2 * half / abs(mean_control), rel_tol=1e-6, abs_tol=slack)


def test_guardrail_band_without_a_control_mean_is_unknown():
    assert guardrail_band(0.1, 0.2, None, 0.05, True) == (None, None)
    assert guardrail_band(0.1, 0.2, 0.0, 0.05, True) == (None, None)
    assert guardrail_band(None, 0.2, 2.0, 0.05, True) == (None, 0.2 / 2.0 - 0.05)


def test_guardrail_series_per_metric_with_a_signed_tolerance_limit():
    def guard(metric: str, hib: bool, status: str) -> dict[str, Any]:
        return {
            "arm_id": 2,
            "metric": metric,
            "status": status,
            "tolerance": 0.05,
            "higher_is_better": hib,
            "mean_control": 2.0,
            "relative": 0.01,
            "gain_low": 0.02,
            "gain_high": 0.3,
        }

    rows = [
        row(1, stats(guardrails=[guard("success", True, "undecided"), guard("cost", False, "x")])),
        row(2, stats(guardrails=[guard("success", True, "non_inferior")]), decision="promote"),
    ]
    success, cost = guardrail_series(rows)
    assert (success.metric, success.limit, cost.metric, cost.limit) == (
        "success",
        -0.05,
        "cost",
        0.05,
    )
    (arm,) = success.arms
    assert arm.label == "v4"
    assert [p.status for p in arm.points] == ["undecided", "non_inferior"]
    assert arm.points[0].low is not None and math.isclose(arm.points[0].low, 0.02 / 2 - 0.05)
    assert len(success.decisions) == 1


def test_srm_status_reads_counts_and_shares():
    srm = {
        "detected": True,
        "bayes_factor": 250.0,
        "threshold": 100.0,
        "error": None,
        "arm_ids": [1, 2],
        "counts": [300, 100],
        "expected_shares": [0.5, 0.5],
    }
    view = srm_status(json.dumps({"srm": srm}), {1: "v3"})
    assert (view.detected, view.bayes_factor, view.threshold) == (True, 250.0, 100.0)
    assert [(a.label, a.units, a.expected_share, a.observed_share) for a in view.arms] == [
        ("v3", 300, 0.5, 0.75),
        ("arm 2", 100, 0.5, 0.25),
    ]


def test_srm_status_of_garbage_is_unknown():
    view = srm_status({"srm": {"detected": "yes", "arm_ids": [1, 2], "counts": [5]}})
    assert view.detected is None
    assert [(a.arm_id, a.units) for a in view.arms] == [(1, 5), (2, None)]
    assert srm_status(None).arms == ()


def test_timeline_collapses_runs_of_continue():
    decisions = ["continue", "continue", "stop_arms", "continue", "continue", "continue"]
    rows = [row(i, {}, d, reason=f"r{i}") for i, d in enumerate(decisions)]
    items = timeline(rows)
    assert [(t.decision, t.count, t.first_id, t.last_id, t.reason) for t in items] == [
        ("continue", 2, 0, 1, "r1"),
        ("stop_arms", 1, 2, 2, "r2"),
        ("continue", 3, 3, 5, "r5"),
    ]
    assert items[2].first_at == rows[3].checked_at and items[2].last_at == rows[5].checked_at


def test_the_rendering_modules_use_only_the_standard_library_and_markupsafe():
    # Pure: no database, no aiohttp, no I/O; they may import each other.
    root = Path(__file__).resolve().parents[2] / "optimizer" / "ui"
    for name in ("series", "charts", "diff"):
        tree = ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert (
                    top in sys.stdlib_module_names
                    or top in {"__future__", "markupsafe"}
                    or module.startswith("optimizer.ui.")
                ), f"optimizer.ui.{name} imports {module}"
