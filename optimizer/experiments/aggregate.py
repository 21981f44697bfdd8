"""Sufficient statistics per arm and unit segment, computed by the database.

Users come back many times, so the unit (`unit_id`), not the conversation, is the
independent observation. One statement groups the experiment's conversations by
(assignment slice, unit) and then by (slice, the unit's segment): per group the number of
units, and per metric the sums over units of the unit's total y, its count m, y^2, m^2 and
y*m (optimizer.stats.ratio turns them into per-conversation means with delta-method
variances). Conversation rows never travel into Python.

A unit's slice is the arm the deterministic assignment gives it (`assigned_arm_id`, or
`arm_id` on rows stored before it existed). Units are counted per slice for the
sample-ratio test; metrics count only conversations served the slice's own arm, so the
units of a stopped arm, now served control, stay out of the control's numbers. A unit's
segment is the smallest segment its conversations carry (segments describe the user and
come before assignment).

Values outside the ingest bounds (stored before the bounds existed, or by hand) count as
missing, and heavy-tailed metrics are capped at the experiment's caps, inside the query:
no stored value can overflow a sum or dominate a check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Float, Select, bindparam, case, cast, func, or_, select, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.conversations import Conversation as C
from models.experiments import ExperimentArm
from optimizer.stats import EMPTY_RATIO, REGISTRY, ArmData, Metric, RatioSums
from optimizer.stats.metrics import NAMES

TINY = 1e-150
AGGREGATE_WORK_MEM = "64MB"
SLICE = func.coalesce(C.assigned_arm_id, C.arm_id)
# Served the slice's own version (always so for every arm but a stopped one's routed units).
OWN = or_(C.assigned_arm_id.is_(None), C.assigned_arm_id == C.arm_id)


def _cap_param(m: Metric) -> str:
    return f"cap_{m.name}"


def _value(m: Metric) -> ColumnElement[Any]:
    """The metric as a number; NULL where not reported or outside its bounds; capped."""
    value = getattr(C, m.column)
    if m.kind == "proportion":
        return case((value, 1), (~value, 0))
    low, high = m.bounds
    # NaN (PostgreSQL sorts it above every number) fails `<= high` and counts as missing.
    whens: list[tuple[Any, Any]] = [(value < low, None), (value > high, None)]
    if not m.whole:
        # Values too small to square in float8 count as 0: PostgreSQL raises on underflow.
        whens.append((value < TINY, 0.0))
    if m.capped:
        # The cap is never below TINY either (bind_caps), so a capped value can be squared.
        cap = bindparam(_cap_param(m), type_=Float())
        whens.append((value > cap, cap))
    return case(*whens, else_=value)


def _count(m: Metric) -> ColumnElement[Any]:
    """How many conversations reported the metric (within its bounds)."""
    if m.kind == "proportion":
        return func.count(getattr(C, m.column))
    return func.count(_value(m))


def _statement() -> Select[Any]:
    """Own conversations only, grouped by arm and unit, then by arm and the unit's segment.
    Units that a stopped arm's slice routes to control are counted by STOPPED_SLICE_UNITS."""
    per_unit: list[ColumnElement[Any]] = [
        C.arm_id.label("slice"),
        func.min(C.segment).label("stratum"),
        func.count().label("conversations"),
    ]
    for m in REGISTRY:
        per_unit += [
            cast(func.coalesce(func.sum(_value(m)), 0), Float).label(f"{m.name}_y"),
            cast(_count(m), Float).label(f"{m.name}_m"),
        ]
    u = (
        select(*per_unit)
        .where(C.experiment_id == bindparam("experiment_id"), C.arm_id.is_not(None), OWN)
        .group_by(C.arm_id, C.unit_id)
        .subquery("u")
    )
    columns: list[ColumnElement[Any]] = [
        u.c.slice,
        u.c.stratum,
        func.count().label("units"),
        func.sum(u.c.conversations).label("conversations"),
    ]
    for name in NAMES:
        y, n = u.c[f"{name}_y"], u.c[f"{name}_m"]
        columns += [
            func.count(case((n > 0, 1))).label(f"{name}_units"),
            func.sum(y).label(f"{name}_sy"),
            func.sum(n).label(f"{name}_sm"),
            func.sum(y * y).label(f"{name}_syy"),
            func.sum(n * n).label(f"{name}_smm"),
            func.sum(y * n).label(f"{name}_sym"),
        ]
    return select(*columns).group_by(u.c.slice, u.c.stratum)


# Units per stopped slice, every conversation counted (their own and the routed ones).
STOPPED_SLICE_UNITS = (
    select(SLICE.label("slice"), func.count(C.unit_id.distinct()).label("units"))
    .where(
        C.experiment_id == bindparam("experiment_id"),
        SLICE.in_(bindparam("stopped", expanding=True)),
    )
    .group_by(SLICE)
)


# Built once: constructing this many expressions costs more than running the statement on
# a small experiment.
AGGREGATE: Select[Any] = _statement()


def _ratio(row: RowMapping, m: str) -> RatioSums:
    return RatioSums(
        int(row[f"{m}_units"] or 0),
        *(float(row[f"{m}_{k}"] or 0.0) for k in ("sy", "sm", "syy", "smm", "sym")),
    )


def _no_sums() -> dict[str, RatioSums]:
    return dict.fromkeys(NAMES, EMPTY_RATIO)


def bind_caps(experiment_id: int, caps: Mapping[str, float]) -> dict[str, Any]:
    params: dict[str, Any] = {"experiment_id": experiment_id}
    for m in REGISTRY:
        if m.capped:
            # A cap from values near zero (or configured so) must not underflow when squared.
            params[_cap_param(m)] = max(float(caps.get(m.name, m.bounds[1])), TINY)
    return params


def arm_data(
    session: Session,
    experiment_id: int,
    arms: Sequence[ExperimentArm],
    versions: Mapping[int, int],
    primary_metric: str,
    caps: Mapping[str, float],
) -> list[ArmData]:
    """One ArmData per arm (arms without conversations get zeros), ordered by arm id.
    `versions`: version_id -> version number."""
    if session.get_bind().dialect.name == "postgresql":
        # The per-unit hash aggregate holds one group per unit; with the default 4 MB it
        # spills to disk past ~100k units and takes twice as long. For this transaction only.
        session.execute(text(f"SET LOCAL work_mem = '{AGGREGATE_WORK_MEM}'"))
    units: dict[int, int] = {}
    conversations: dict[int, int] = {}
    metrics: dict[int, dict[str, RatioSums]] = {}
    strata: dict[int, dict[str | None, RatioSums]] = {}
    stopped = [a.id for a in arms if a.status != "active"]
    for row in session.execute(AGGREGATE, bind_caps(experiment_id, caps)).mappings():
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
