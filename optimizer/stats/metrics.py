"""The metric registry: one definition per metric of a conversation, read by everything.

Ingest (what a record may hold), experiment aggregation (which column, which bounds, which
cap), the statistics (which way is better), the experiment settings (default guardrails,
allowed primary metrics), pattern analysis (which metrics, on which scale) and the docs
(docs/statistics.md, checked against this file by tests/unit/test_metric_registry.py)
read it. Adding a metric: one entry in REGISTRY, plus its column (models/conversations.py
and an alembic migration); docs/architecture.md walks through it.

Pure (standard library only), so the statistics may import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["proportion", "mean"]


@dataclass(frozen=True)
class Metric:
    """One metric of a conversation.

    `kind`: a proportion is true/false per conversation (its mean is a rate); a mean is a
    number per conversation. `bounds`: what ingest accepts (a proportion: 0..1, sent as
    false/true), and stored values outside them count as missing in every check.
    `whole`: ingest accepts whole numbers only. `guardrail`: in every experiment's
    guardrails unless the experiment names its own, with the relative `tolerance` (0.10
    allows 10% worse than control). `capped`: heavy-tailed, so values above a cap fixed
    per experiment count as the cap (optimizer.experiments.caps). `primary`: may be an
    experiment's primary metric. `patterns`: pattern analysis compares groups on it (on the
    scale of its bounds, so it needs a bounded, meaningful range). `bound_note`: shown after
    the upper bound in ingest's messages."""

    name: str
    column: str
    higher_is_better: bool
    kind: Kind
    bounds: tuple[float, float]
    description: str
    whole: bool = False
    guardrail: bool = False
    tolerance: float | None = None
    capped: bool = False
    primary: bool = False
    patterns: bool = False
    bound_note: str = ""

    def __post_init__(self) -> None:
        low, high = self.bounds
        problems = []
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            problems.append("bounds must be finite with low < high")
        if self.kind == "proportion" and (self.bounds != (0.0, 1.0) or self.whole or self.capped):
            problems.append("a proportion has bounds (0, 1) and is neither whole nor capped")
        if self.guardrail != (self.tolerance is not None):
            problems.append("a default guardrail needs a tolerance, and only one has one")
        if self.tolerance is not None and not (
            math.isfinite(self.tolerance) and self.tolerance >= 0
        ):
            problems.append("tolerance must be a finite number >= 0")
        if self.capped and self.whole:
            problems.append("only a metric with real values is capped")
        if problems:
            raise ValueError(f"metric {self.name!r}: " + "; ".join(problems))

    @property
    def direction(self) -> str:
        """Which way is better, as the docs say it: "higher" or "lower"."""
        return "higher" if self.higher_is_better else "lower"

    @property
    def scale(self) -> float:
        """The width of the bounds: what pattern analysis divides a difference by, so that
        effects on different metrics are comparable (a rate as is; a rating per 4 stars)."""
        return self.bounds[1] - self.bounds[0]


# The order is the order of the default guardrails, of ingest's field list and of the docs.
REGISTRY: tuple[Metric, ...] = (
    Metric(
        name="success",
        column="success",
        higher_is_better=True,
        kind="proportion",
        bounds=(0.0, 1.0),
        primary=True,
        patterns=True,
        description="Whether the conversation reached its goal (true or false).",
    ),
    Metric(
        name="rating",
        column="rating",
        higher_is_better=True,
        kind="mean",
        bounds=(1.0, 5.0),
        whole=True,
        guardrail=True,
        tolerance=0.05,
        primary=True,
        patterns=True,
        description="The user's rating, a whole number of stars.",
    ),
    Metric(
        name="cost_usd",
        column="cost_usd",
        higher_is_better=False,
        kind="mean",
        bounds=(0.0, 1_000.0),
        guardrail=True,
        tolerance=0.10,
        capped=True,
        description="What the conversation cost, in US dollars.",
    ),
    Metric(
        name="latency_ms",
        column="latency_ms",
        higher_is_better=False,
        kind="mean",
        bounds=(0.0, 86_400_000.0),
        guardrail=True,
        tolerance=0.10,
        capped=True,
        bound_note="(one day)",
        description="How long the application took to answer, in milliseconds.",
    ),
)

_BY_NAME = {m.name: m for m in REGISTRY}
if len(_BY_NAME) != len(REGISTRY) or len({m.column for m in REGISTRY}) != len(REGISTRY):
    raise ValueError("two metrics share a name or a column")
NAMES: tuple[str, ...] = tuple(_BY_NAME)
PRIMARY: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.primary)
# An experiment's primary metric unless it names one.
DEFAULT_PRIMARY = "success"
CAPPED: tuple[str, ...] = tuple(m.name for m in REGISTRY if m.capped)
PATTERNS: tuple[Metric, ...] = tuple(m for m in REGISTRY if m.patterns)


def metric(name: str) -> Metric:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(NAMES)}") from None


def higher_is_better(name: str) -> bool:
    """The metric's direction. A name outside the registry counts as higher is better, so
    the statistics return an error code for it (no data) instead of raising."""
    found = _BY_NAME.get(name)
    return found.higher_is_better if found is not None else True
