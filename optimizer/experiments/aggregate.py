"""Sufficient statistics per arm and unit segment, read from the experiment's rollup.

Users come back many times, so the unit (`unit_id`), not the conversation, is the
independent observation. Per unit, y is its total of a metric over its conversations
served the slice's own arm and m their count. The rollup (optimizer.experiments.rollup)
keeps, per (slice, the unit's segment), the number of units and per metric the sums over
units of y, m, y^2, m^2 and y*m (optimizer.stats.ratio turns them into per-conversation
means with delta-method variances): a check reads a few rows per arm, whatever the
experiment's size.

Units are counted per slice for the sample-ratio test; metrics count only conversations
served the slice's own arm, so the units of a stopped arm, now served control, stay out of
the control's numbers (a stopped slice's units are counted over all its conversations). A
unit's segment is the smallest segment its conversations carry (segments describe the user
and come before assignment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.experiments import ExperimentArm
from models.rollups import ExperimentStratumSums, ExperimentUnitSums
from optimizer.experiments.rollup import roll_up
from optimizer.stats import EMPTY_RATIO, ArmData, RatioSums
from optimizer.stats.metrics import NAMES


def _statement() -> Select[Any]:
    """The stratum sums of the experiment's slices (units with own conversations)."""
    columns: list[ColumnElement[Any]] = [
        ExperimentStratumSums.slice_arm_id.label("slice"),
        ExperimentStratumSums.stratum.label("stratum"),
        ExperimentStratumSums.units.label("units"),
        ExperimentStratumSums.conversations.label("conversations"),
    ]
    for name in NAMES:
        columns += [
            ExperimentStratumSums.__table__.c[f"{name}_{part}"].label(f"{name}_{part}")
            for part in ("units", "sy", "sm", "syy", "smm", "sym")
        ]
    return select(*columns).where(
        ExperimentStratumSums.experiment_id == bindparam("experiment_id"),
        ExperimentStratumSums.units > 0,
    )


# Units per stopped slice, every conversation counted (their own and the routed ones).
STOPPED_SLICE_UNITS = (
    select(ExperimentUnitSums.slice_arm_id.label("slice"), func.count().label("units"))
    .where(
        ExperimentUnitSums.experiment_id == bindparam("experiment_id"),
        ExperimentUnitSums.slice_arm_id.in_(bindparam("stopped", expanding=True)),
    )
    .group_by(ExperimentUnitSums.slice_arm_id)
)


AGGREGATE: Select[Any] = _statement()


def _ratio(row: RowMapping, m: str) -> RatioSums:
    return RatioSums(
        int(row[f"{m}_units"] or 0),
        *(float(row[f"{m}_{k}"] or 0.0) for k in ("sy", "sm", "syy", "smm", "sym")),
    )


def _no_sums() -> dict[str, RatioSums]:
    return dict.fromkeys(NAMES, EMPTY_RATIO)


def arm_data(
    session: Session,
    experiment_id: int,
    arms: Sequence[ExperimentArm],
    versions: Mapping[int, int],
    primary_metric: str,
    caps: Mapping[str, float],
) -> list[ArmData]:
    """One ArmData per arm (arms without conversations get zeros), ordered by arm id, with
    heavy-tailed metrics capped at `caps`. `versions`: version_id -> version number. Brings
    the rollup up to date first: run under the experiment's lock."""
    roll_up(session, experiment_id, caps)
    units: dict[int, int] = {}
    conversations: dict[int, int] = {}
    metrics: dict[int, dict[str, RatioSums]] = {}
    strata: dict[int, dict[str | None, RatioSums]] = {}
    stopped = [a.id for a in arms if a.status != "active"]
    for row in session.execute(AGGREGATE, {"experiment_id": experiment_id}).mappings():
        arm = int(row["slice"])
        units[arm] = units.get(arm, 0) + int(row["units"])
        conversations[arm] = conversations.get(arm, 0) + int(row["conversations"] or 0)
        sums = metrics.setdefault(arm, _no_sums())
        for m in sums:
            sums[m] = sums[m] + _ratio(row, m)
        strata.setdefault(arm, {})[row["stratum"]] = _ratio(row, primary_metric)
    if stopped:
        units.update(
            {
                int(row.slice): int(row.units)
                for row in session.execute(
                    STOPPED_SLICE_UNITS, {"experiment_id": experiment_id, "stopped": stopped}
                )
            }
        )
    return [
        ArmData(
            arm_id=a.id,
            version=versions.get(a.version_id, 0),
            is_control=a.is_control,
            weight=float(a.weight),
            active=a.status == "active",
            units=units.get(a.id, 0),
            conversations=conversations.get(a.id, 0),
            metrics=metrics.get(a.id) or _no_sums(),
            strata=strata.get(a.id, {}),
        )
        for a in sorted(arms, key=lambda a: a.id)
    ]
