"""The server-side SVG charts: parsed as XML, so broken markup or escaping fails here."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from optimizer.ui.charts import guardrail_chart, lift_chart, nice_ticks, spread, time_ticks
from optimizer.ui.series import (
    ArmSeries,
    DecisionMark,
    GuardrailArm,
    GuardrailPoint,
    GuardrailSeries,
    LiftPoint,
    LiftSeries,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script>&'


def point(i: int, relative: float | None = 0.02) -> LiftPoint:
    low, high = (None, None) if relative is None else (relative - 0.05, relative + 0.05)
    return LiftPoint(i, T0 + timedelta(hours=i), relative, low, high, 100, 99, None)


def lift(points: list[LiftPoint], decisions=(), label: str = "v2", metric="success") -> LiftSeries:
    return LiftSeries(
        metric=metric,
        higher_is_better=True,
        arms=(ArmSeries(2, label, tuple(points)),) if points else (),
        decisions=tuple(decisions),
        check_times=tuple(p.checked_at for p in points),
    )


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{SVG}text")]


def with_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in (e.get("class") or "").split()]


def assert_csp_safe(svg: str) -> None:
    # The dashboard's CSP forbids inline style and script; nothing may carry either.
    root = parse(svg)
    assert not [e for e in root.iter() if e.tag in (f"{SVG}script", f"{SVG}style")]
    attributes = {name.lower() for e in root.iter() for name in e.attrib}
    assert "style" not in attributes
    assert not [name for name in attributes if name.startswith("on")]


def test_one_point_per_check_with_its_interval_zero_line_and_decisions():
    points = [point(i, 0.01 * i) for i in range(10)]
    points[3] = point(3, None)  # a check without an estimate still gets its point
    decisions = [DecisionMark(9, points[9].checked_at, "promote", "v2 wins")]
    svg = lift_chart(lift(points, decisions))
    root = parse(svg)
    circles = with_class(root, "point")
    assert sorted(int(c.get("data-analysis-id", "")) for c in circles) == list(range(10))
    assert len(with_class(root, "point-missing")) == 1
    assert len(with_class(root, "interval")) == 9
    assert len(with_class(root, "zero")) == 1
    (marker,) = with_class(root, "decision")
    assert "decision-promote" in marker.get("class", "")
    assert "v2 wins" in "".join(marker.itertext())
    assert_csp_safe(svg)


def test_titles_and_axis_labels_name_the_units():
    root = parse(lift_chart(lift([point(1), point(2)])))
    labels = texts(root)
    assert "Lift in success against control (higher is better)" in labels
    assert "lift in success (%)" in labels
    assert "check time (UTC)" in labels
    assert any(label.endswith("%") for label in labels if label[:1] in "-0123456789")


def test_the_zero_line_sits_at_zero_on_the_axis():
    root = parse(lift_chart(lift([point(1, 0.2), point(2, -0.1)])))
    (zero,) = with_class(root, "zero")
    ticks = {"".join(t.itertext()): float(t.get("y", "nan")) for t in with_class(root, "tick")}
    # Tick labels are drawn 4 px below their line.
    assert math.isclose(float(zero.get("y1", "nan")) + 4, ticks["0%"], abs_tol=0.11)


def test_every_text_is_escaped():
    svg = lift_chart(lift([point(1)], label=EVIL, metric=EVIL), title=EVIL)
    assert "<script>" not in svg
    root = parse(svg)
    assert EVIL in texts(root)
    assert root.get("aria-label") == EVIL
    decisions = [DecisionMark(1, T0, EVIL, EVIL)]
    guard = GuardrailSeries(EVIL, True, 0.05, -0.05, (), tuple(decisions), (T0,))
    assert "<script>" not in guardrail_chart(guard)
    parse(guardrail_chart(guard))


def test_empty_series_says_no_checks_yet():
    for svg in (
        lift_chart(lift([])),
        guardrail_chart(GuardrailSeries("cost", False, None, None, (), (), ())),
    ):
        root = parse(svg)
        assert "no checks yet" in texts(root)
        assert not with_class(root, "point")
        assert_csp_safe(svg)


def test_one_point_is_drawn_inside_the_plot():
    root = parse(lift_chart(lift([point(1)]), width=600, height=240))
    (circle,) = with_class(root, "point")
    assert 0 < float(circle.get("cx", "nan")) < 600
    assert 0 < float(circle.get("cy", "nan")) < 240


def test_checks_without_any_estimate_say_so():
    root = parse(lift_chart(lift([point(1, None), point(2, None)])))
    assert "no estimate yet" in texts(root)
    assert len(with_class(root, "point-missing")) == 2


def test_guardrail_chart_draws_the_tolerance_line_and_status_classes():
    points = (
        GuardrailPoint(1, T0, -0.01, -0.04, 0.02, "undecided", None),
        GuardrailPoint(2, T0 + timedelta(hours=1), 0.01, -0.02, 0.03, "non_inferior", None),
        GuardrailPoint(3, T0 + timedelta(hours=2), None, None, None, "no_data", None),
    )
    series = GuardrailSeries(
        "success", True, 0.05, -0.05, (GuardrailArm(2, "v2", points),), (), (T0,)
    )
    svg = guardrail_chart(series)
    root = parse(svg)
    (tolerance,) = with_class(root, "tolerance")
    (zero,) = with_class(root, "zero")
    # Below zero on the page means a larger y.
    assert float(tolerance.get("y1", "nan")) > float(zero.get("y1", "nan"))
    assert "tolerance -5%" in texts(root)
    assert len(with_class(root, "status-non_inferior")) == 1
    assert len(with_class(root, "point")) == 3
    assert "approx." in texts(root)[0]
    assert_csp_safe(svg)


@given(st.floats(-1e9, 1e9), st.floats(-1e9, 1e9), st.integers(1, 10))
def test_nice_ticks_cover_the_range_evenly(lo, hi, n):
    ticks = nice_ticks(lo, hi, n)
    assert ticks[0] <= min(lo, hi) and ticks[-1] >= max(lo, hi)
    assert 2 <= len(ticks) <= 2 * n + 3
    steps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(s > 0 for s in steps)
    assert all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps)


def test_nice_ticks_are_round():
    assert nice_ticks(-3.2, 17.0, 5) == [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0]
    assert nice_ticks(0.0, 0.3, 3) == [0.0, 0.1, 0.2, 0.3]
    assert nice_ticks(2.0, 2.0) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert nice_ticks(math.nan, 1.0) == []


@given(
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)),
    st.timedeltas(timedelta(0), timedelta(days=3000)),
)
def test_time_ticks_fall_inside_the_range(start, span):
    t0 = start.replace(tzinfo=UTC)
    ticks = time_ticks(t0, t0 + span)
    moments = [m for m, _ in ticks]
    assert 1 <= len(ticks) <= 7
    assert moments == sorted(moments)
    assert all(t0 <= m <= t0 + span for m in moments) or span < timedelta(seconds=1)
    assert all(label for _, label in ticks)


def test_time_ticks_label_by_the_span():
    assert [label for _, label in time_ticks(T0, T0 + timedelta(hours=5))] == [
        "12:00",
        "13:00",
        "14:00",
        "15:00",
        "16:00",
        "17:00",
    ]
    # Day steps start at midnight UTC; weeks are counted from the epoch (a Thursday).
    assert [label for _, label in time_ticks(T0, T0 + timedelta(days=20))] == [
        "2024-05-02",
        "2024-05-09",
        "2024-05-16",
    ]
    # Naive datetimes (SQLite) are read as UTC.
    assert time_ticks(T0.replace(tzinfo=None), T0.replace(tzinfo=None)) == [
        (T0, "2024-05-01 12:00")
    ]


def plot_x_range(root: ET.Element) -> tuple[float, float]:
    """The plot's left and right edge: the ends of the horizontal axis line."""
    (x_axis,) = [a for a in with_class(root, "axis") if a.get("y1") == a.get("y2")]
    return float(x_axis.get("x1", "nan")), float(x_axis.get("x2", "nan"))


def plot_top(root: ET.Element) -> float:
    (y_axis,) = [a for a in with_class(root, "axis") if a.get("x1") == a.get("x2")]
    return min(float(y_axis.get("y1", "nan")), float(y_axis.get("y2", "nan")))


def test_the_first_and_last_checks_are_drawn_whole_inside_the_plot():
    for width in (320, 600, 960):
        root = parse(lift_chart(lift([point(i, 0.01 * i) for i in range(6)]), width=width))
        left, right = plot_x_range(root)
        marks = with_class(root, "point")
        assert len(marks) == 6
        for mark in marks:
            x, r = float(mark.get("cx", "nan")), float(mark.get("r", "nan"))
            assert left < x - r and x + r < right
        for bar in with_class(root, "interval"):
            x, half = float(bar.get("x1", "nan")), float(bar.get("stroke-width", "nan")) / 2
            assert left < x - half and x + half < right


def test_the_arms_of_one_check_sit_apart_and_inside_the_plot():
    points = [point(i, 0.01 * i) for i in range(3)]
    arms = tuple(ArmSeries(k, f"v{k}", tuple(points)) for k in range(2, 12))
    series = LiftSeries("success", True, arms, (), tuple(p.checked_at for p in points))
    root = parse(lift_chart(series, width=600))
    left, right = plot_x_range(root)
    for check in range(3):
        xs = [
            float(c.get("cx", "nan"))
            for c in with_class(root, "point")
            if c.get("data-analysis-id") == str(check)
        ]
        assert len(xs) == 10 and len(set(xs)) == 10
        assert all(left < x - 3.5 and x + 3.5 < right for x in xs)


def test_line_labels_sit_right_of_the_plot_and_apart():
    # A tolerance of -0.1% on a -40%..+5% axis: its line is a pixel or two from the zero line.
    points = (GuardrailPoint(1, T0, -0.35, -0.4, 0.05, "undecided", None),)
    series = GuardrailSeries(
        "cost", False, -0.001, 0.001, (GuardrailArm(2, "v2", points),), (), (T0,)
    )
    root = parse(guardrail_chart(series, width=600))
    _, right = plot_x_range(root)
    (zero,) = with_class(root, "zero-label")
    (tolerance,) = with_class(root, "tolerance-label")
    assert "".join(zero.itertext()) == "0 (no change)"
    for label in (zero, tolerance):
        x = float(label.get("x", "nan"))
        # Past the plot, so never over a point, and its text fits in the picture.
        assert x > right
        assert x + 11 * 0.62 * len("".join(label.itertext())) <= 600
    assert abs(float(zero.get("y", "nan")) - float(tolerance.get("y", "nan"))) >= 13


def test_decision_labels_sit_above_the_plot_and_never_overlap():
    points = [point(i) for i in range(6)]
    close = points[2].checked_at + timedelta(minutes=1)
    decisions = [
        DecisionMark(2, points[2].checked_at, "pause_srm", "ratio"),
        DecisionMark(7, close, "stop_arms", "v2 worse"),
        DecisionMark(5, points[5].checked_at, "promote", "v2 wins"),
    ]
    root = parse(lift_chart(lift(points, decisions), width=600))
    top = plot_top(root)
    marks = with_class(root, "decision")
    # Every decision keeps its line and tooltip.
    assert sorted(int(m.get("data-analysis-id", "")) for m in marks) == [2, 5, 7]
    spans = []
    for mark in marks:
        for label in mark.iter(f"{SVG}text"):
            assert float(label.get("y", "nan")) < top
            half = 10 * 0.62 * len("".join(label.itertext())) / 2
            x = float(label.get("x", "nan"))
            assert x - half >= 0 and x + half <= 600
            spans.append((x - half, x + half))
    # A minute apart: the second name would cover the first, so only one is written.
    assert len(spans) == 2
    spans.sort()
    assert spans[0][1] < spans[1][0]


@given(st.lists(st.floats(-500, 500), max_size=6))
def test_spread_keeps_order_and_distance_when_there_is_room(wanted):
    placed = spread(wanted, 13, 0, 400)
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    ys = [placed[i] for i in order]
    assert all(b - a >= 13 - 1e-9 for a, b in zip(ys, ys[1:], strict=False))
    assert all(0 <= y <= 400 for y in ys)


def test_spread_moves_only_what_collides():
    assert spread([100.0, 300.0], 13, 0, 400) == [100.0, 300.0]
    assert spread([100.0, 95.0], 13, 0, 400) == [108.0, 95.0]
    assert spread([399.0, 400.0], 13, 0, 400) == [387.0, 400.0]


def test_early_wide_intervals_are_cut_at_the_edge_instead_of_flattening_the_chart():
    # The first checks of an experiment: intervals of hundreds of %; later ones a few %.
    wide = [
        LiftPoint(
            i,
            T0 + timedelta(hours=i),
            0.03,
            0.03 - 2.6 / (i + 1),
            0.03 + 2.6 / (i + 1),
            100,
            99,
            None,
        )
        for i in range(3)
    ]
    points = wide + [point(i, 0.03) for i in range(3, 40)]
    root = parse(lift_chart(lift(points)))
    y_ticks = [
        float(t.rstrip("%")) for t in texts(root) if t.endswith("%") and t[0] in "-+0123456789"
    ]
    # The axis shows the estimates and the latest interval with room to spare, not +-260 %.
    assert max(y_ticks) - min(y_ticks) <= 40, y_ticks
    # The cut bars stay inside the plot, each cut end marked; the late bars are whole.
    cuts = with_class(root, "interval-cut")
    assert len(cuts) == 2 * 3
    bars = with_class(root, "interval")
    ys = [float(b.get(k, "nan")) for b in bars for k in ("y1", "y2")]
    circles_y = [float(c.get("cy", "nan")) for c in with_class(root, "point")]
    assert min(ys) >= 0 and max(ys) <= float(root.get("height", "0"))
    assert len(circles_y) == 40
