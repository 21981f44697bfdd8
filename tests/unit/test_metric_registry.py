"""The metric registry is the one definition of every metric: the docs table shows exactly
its entries, the model has a column for each, and what reads it (ingest, the experiment
settings, the statistics) follows it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from models.conversations import Conversation
from models.rollups import ExperimentStratumSums, ExperimentUnitSums
from optimizer import ingest
from optimizer.experiments import validation
from optimizer.ingest_record import ConversationRecord
from optimizer.stats import DEFAULT_GUARDRAILS, AnalysisSettings, higher_is_better, metric
from optimizer.stats import metrics as registry
from tests.support.docs import ROOT, prose_lines

STATISTICS = ROOT / "docs" / "statistics.md"
HEADER = [
    "Metric",
    "Kind",
    "Better",
    "Guardrail by default",
    "Tolerance",
    "Bounds",
    "Capped",
    "Primary",
    "Pattern analysis",
    "Meaning",
]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value.is_integer() else f"{value:,}"


def expected_row(m: registry.Metric) -> list[str]:
    low, high = m.bounds
    bounds = f"{_number(low)}..{_number(high)}" + (" (whole)" if m.whole else "")
    tolerance = "–" if m.tolerance is None else f"{100 * m.tolerance:g}%"
    return [
        f"`{m.name}`",
        m.kind,
        m.direction,
        _yes(m.guardrail),
        tolerance,
        bounds,
        _yes(m.capped),
        _yes(m.primary),
        _yes(m.patterns),
        m.description,
    ]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented_rows() -> Iterator[list[str]]:
    """The rows of the table in the Metrics section of docs/statistics.md, header first."""
    inside = False
    for _, line in prose_lines(STATISTICS.read_text(encoding="utf-8")):
        if line.startswith("## "):
            inside = line == "## Metrics"
        elif inside and line.startswith("|") and not set(line) <= set("|-: "):
            yield _cells(line)


def test_the_docs_table_matches_the_registry_row_by_row() -> None:
    header, *rows = documented_rows()
    assert header == HEADER
    assert rows == [expected_row(m) for m in registry.REGISTRY]


def test_every_metric_has_its_column_in_the_conversations_model() -> None:
    columns = Conversation.__table__.c
    for m in registry.REGISTRY:
        assert m.column in columns, m.name
        python_type = columns[m.column].type.python_type
        assert python_type is (bool if m.kind == "proportion" else int if m.whole else float)


def test_the_experiment_rollup_has_every_metric_s_columns() -> None:
    """A metric added without its rollup columns would be missing from every check."""
    unit_sums = {c.name for c in ExperimentUnitSums.__table__.columns}
    stratum_sums = {c.name for c in ExperimentStratumSums.__table__.columns}
    for m in registry.REGISTRY:
        assert {f"{m.name}_y", f"{m.name}_m"} <= unit_sums, m.name
        parts = ("units", "sy", "sm", "syy", "smm", "sym")
        assert {f"{m.name}_{p}" for p in parts} <= stratum_sums, m.name
    named = {n for n in unit_sums if n.endswith(("_y", "_m"))}
    assert named == {f"{m.name}_{p}" for m in registry.REGISTRY for p in ("y", "m")}


def test_lookups_and_the_derived_lists() -> None:
    assert metric("rating").higher_is_better and not metric("latency_ms").higher_is_better
    with pytest.raises(KeyError, match="unknown metric 'nope'; known: success, rating"):
        metric("nope")
    # The statistics report an error code for an unknown metric; they never raise.
    assert higher_is_better("nope")
    assert tuple(m.name for m in registry.REGISTRY) == registry.NAMES
    assert registry.DEFAULT_PRIMARY in registry.PRIMARY
    assert AnalysisSettings().primary_metric == registry.DEFAULT_PRIMARY
    assert all(metric(name).capped for name in registry.CAPPED)


def test_default_guardrails_are_the_registry_s() -> None:
    assert [(g.metric, g.higher_is_better, g.tolerance) for g in DEFAULT_GUARDRAILS] == [
        (m.name, m.higher_is_better, m.tolerance) for m in registry.REGISTRY if m.guardrail
    ]
    assert validation.parse_settings().guardrails == DEFAULT_GUARDRAILS


def test_ingest_accepts_every_metric_within_its_bounds_and_nothing_beyond() -> None:
    assert set(registry.NAMES) <= set(ingest.FIELDS)
    for m in registry.REGISTRY:

        def check(value: object, name: str = m.name) -> object:
            record = {"prompt": "p", "version": 1, "unit_id": "u", name: value}
            return getattr(ConversationRecord.model_validate(record), name)

        if m.kind == "proportion":
            assert check(True) is True and check(False) is False
            continue
        low, high = m.bounds
        assert check(int(low)) == low and check(int(high)) == high
        for outside in (low - 1, high + 1):
            with pytest.raises(ValidationError):
                check(int(outside) if m.whole else outside)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"bounds": (5.0, 1.0)}, "low < high"),
        ({"bounds": (0.0, float("inf"))}, "finite"),
        ({"kind": "proportion"}, "a proportion has bounds (0, 1)"),
        ({"guardrail": False}, "only one has one"),
        ({"tolerance": None}, "needs a tolerance"),
        ({"tolerance": -0.1}, "tolerance must be"),
        ({"whole": True}, "only a metric with real values is capped"),
    ],
)
def test_an_inconsistent_entry_is_refused_when_it_is_defined(
    change: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(metric("cost_usd"), **change)  # type: ignore[arg-type]
