"""Sufficient statistics per arm, computed by the database in one GROUP BY.

Conversation rows never travel into Python: per arm the query returns the row count and,
for each metric, the count of non-null values, their sum and their sum of squares. That is
all the statistics need, and it costs the same memory for a hundred rows or ten million.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Float, Select, bindparam, case, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.conversations import Conversation
from models.experiments import ExperimentArm
from optimizer.stats import ArmData, MetricSums

METRICS = ("success", "rating", "latency_ms", "cost_usd")


def _value(metric: str) -> ColumnElement[Any]:
    """The metric as a float, NULL where the conversation did not report it."""
    if metric == "success":
        # A boolean as 1.0/0.0; squares equal the values, but the sum of squares is still
        # computed the same way as for every other metric to keep one code path.
        return case((Conversation.success.is_(None), None),
                    (Conversation.success, 1.0), else_=0.0)
    return cast(getattr(Conversation, metric), Float)


def _columns() -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = [func.count().label("conversations")]
    for metric in METRICS:
        value = _value(metric)
        columns += [func.count(value).label(f"{metric}_n"),
                    func.sum(value).label(f"{metric}_sum"),
                    func.sum(value * value).label(f"{metric}_sq")]
    return columns


# Built once: constructing this many expressions costs more than running the statement on
# a small experiment.
AGGREGATE: Select[Any] = (
    select(Conversation.arm_id, *_columns())
    .where(Conversation.experiment_id == bindparam("experiment_id"),
           Conversation.arm_id.is_not(None))
    .group_by(Conversation.arm_id))


def arm_sums(session: Session, experiment_id: int) -> dict[int, tuple[int, dict[str, MetricSums]]]:
    """arm_id -> (conversations, metric -> MetricSums) for arms that have conversations."""
    out: dict[int, tuple[int, dict[str, MetricSums]]] = {}
    for row in session.execute(AGGREGATE, {"experiment_id": experiment_id}).mappings():
        out[int(row["arm_id"])] = (int(row["conversations"]), _metrics(row))
    return out


def _metrics(row: Mapping[str, Any]) -> dict[str, MetricSums]:
    return {m: MetricSums(n=int(row[f"{m}_n"] or 0), total=float(row[f"{m}_sum"] or 0.0),
                          total_sq=float(row[f"{m}_sq"] or 0.0)) for m in METRICS}


EMPTY = {m: MetricSums(n=0, total=0.0, total_sq=0.0) for m in METRICS}


def arm_data(session: Session, experiment_id: int,
             arms: Sequence[ExperimentArm]) -> list[ArmData]:
    """One ArmData per arm of the experiment (arms without conversations get zeros),
    ordered by arm id."""
    sums = arm_sums(session, experiment_id)
    out = []
    for arm in sorted(arms, key=lambda a: a.id):
        conversations, metrics = sums.get(arm.id, (0, EMPTY))
        out.append(ArmData(arm_id=arm.id, is_control=arm.is_control, weight=float(arm.weight),
                           active=arm.status == "active", conversations=conversations,
                           metrics=dict(metrics)))
    return out

