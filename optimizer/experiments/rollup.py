"""The experiment rollup: per (experiment, slice, unit), the sums a check needs.

A check used to group every conversation of its experiment; at 100 conversations a second
that is 120M rows by day 14, rescanned every 15 minutes. Instead, each check first adds the
conversations stored since the previous one to `experiment_unit_sums` (one INSERT ... SELECT
... ON CONFLICT DO UPDATE, grouped by the database), then reads the sums: its cost follows
the new rows and the number of units, not the experiment's history.

Why a rollup step with a watermark, and not sums kept by ingest: ingest must stay a plain
append (COPY on PostgreSQL) that many replicas run at once; keeping per-unit sums there
would turn every batch into row-locked upserts on shared rows. And the caps of heavy-tailed
metrics are fixed only after the control's first values arrive: the step runs under the
experiment's lock, with the caps in force, and starts afresh when they change (at most once
per capped metric; raw rows are kept until then, see optimizer.retention).

Each pass reads the rows stored since the previous one, exactly once
(optimizer.watermark); the experiment's mark is `rolled_up_to`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Float,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    union,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.conversations import Conversation as C
from models.experiments import Experiment, ExperimentArm
from models.rollups import ExperimentUnitSums as S
from optimizer.db import upsert_insert
from optimizer.stats.metrics import REGISTRY, Metric
from optimizer.watermark import mark_now, not_read_yet, stored_between

TINY = 1e-150
AGGREGATE_WORK_MEM = "64MB"
# A unit's slice: the arm the deterministic assignment gives it (`assigned_arm_id`, or
# `arm_id` on rows stored before it existed).
SLICE = func.coalesce(C.assigned_arm_id, C.arm_id)
# Served the slice's own version (always so for every arm but a stopped one's routed units).
OWN = or_(C.assigned_arm_id.is_(None), C.assigned_arm_id == C.arm_id)
_TABLE: Table = S.__table__  # type: ignore[assignment]  # a declarative model's table
_OWN_ROW = and_(C.arm_id.is_not(None), OWN)
_KEY = ("experiment_id", "slice_arm_id", "unit_id")


def _cap_param(m: Metric) -> str:
    return f"cap_{m.name}"


def capped_value(m: Metric) -> ColumnElement[Any]:
    """The metric as a number; NULL where not reported or outside its bounds; capped.
    Values outside the ingest bounds (stored before the bounds existed, or by hand) count
    as missing, so no stored value can overflow a sum or dominate a check."""
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


def bind_caps(experiment_id: int, caps: Mapping[str, float]) -> dict[str, Any]:
    params: dict[str, Any] = {"experiment_id": experiment_id}
    for m in REGISTRY:
        if m.capped:
            # A cap from values near zero (or configured so) must not underflow when squared.
            params[_cap_param(m)] = max(float(caps.get(m.name, m.bounds[1])), TINY)
    return params


def _own(expr: Any) -> Any:
    return case((_OWN_ROW, expr), else_=None)


def _pass_statement(dialect: str, since: int | None, until: int) -> Any:
    """Adds the new rows' per-unit sums to the rollup. Binds: experiment_id and the caps
    (aggregate.bind_caps)."""
    sums: dict[str, Any] = {
        "experiment_id": C.experiment_id,
        "slice_arm_id": SLICE,
        "unit_id": C.unit_id,
        "conversations": func.count(),
        "own_conversations": func.count(_own(1)),
        "stratum": func.min(_own(C.segment)),
    }
    for m in REGISTRY:
        value = _own(capped_value(m))
        sums[f"{m.name}_y"] = func.coalesce(func.sum(value), 0.0)
        sums[f"{m.name}_m"] = func.count(value)
    source = (
        select(*(expr.label(name) for name, expr in sums.items()))
        .where(
            C.experiment_id == bindparam("experiment_id"),
            SLICE.is_not(None),
            stored_between(dialect, since, until),
        )
        .group_by(C.experiment_id, SLICE, C.unit_id)
    )
    table = _TABLE
    insert = upsert_insert(dialect, table).from_select(list(sums), source)
    new = insert.excluded
    merged: dict[str, Any] = {
        name: table.c[name] + new[name] for name in sums if name not in (*_KEY, "stratum")
    }
    # The smallest segment of either part; NULL only when both are (SQLite's min() and
    # PostgreSQL's least() disagree on NULL, so it is spelled out).
    old = table.c.stratum
    merged["stratum"] = case(
        (old.is_(None), new.stratum),
        (new.stratum.is_(None), old),
        (new.stratum < old, new.stratum),
        else_=old,
    )
    return insert.on_conflict_do_update(index_elements=list(_KEY), set_=merged)


def _caps_text(caps: Mapping[str, float]) -> str:
    return json.dumps(dict(sorted(caps.items())))


def roll_up(session: Session, experiment_id: int, caps: Mapping[str, float]) -> None:
    """Bring the experiment's rollup up to date, capped at `caps`. Run under the
    experiment's lock (experiments.store.lock_experiment): one pass at a time."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # The pass groups the new rows by unit: more than the default 4 MB holds per-unit
        # groups without spilling to disk. For this transaction only.
        session.execute(text(f"SET LOCAL work_mem = '{AGGREGATE_WORK_MEM}'"))
    wanted = _caps_text(caps)
    if experiment.rolled_up_to is not None and experiment.rollup_caps != wanted:
        # Sums capped otherwise cannot be re-capped: start again from the raw rows.
        session.execute(delete(S).where(S.experiment_id == experiment_id))
        experiment.rolled_up_to = None
    until = mark_now(session)
    since = experiment.rolled_up_to
    if since is None or until > since:
        session.execute(_pass_statement(dialect, since, until), bind_caps(experiment_id, caps))
        experiment.rolled_up_to = until
    experiment.rollup_caps = wanted
    session.flush()


def served_and_units(
    session: Session, experiment_ids: Sequence[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """Per arm, the conversations it served; per slice, its units. The rollup plus the rows
    it has not read yet, in one statement each (one snapshot: a pass running meanwhile is
    seen whole or not at all), so the figures survive conversation retention and cost the
    units and the new rows, not the history. Units a stopped arm's slice routes to control
    were served by control."""
    dialect = session.get_bind().dialect.name
    ids = list(experiment_ids)
    new_rows = (
        select(C.arm_id, SLICE.label("slice"), C.unit_id)
        .join(Experiment, Experiment.id == C.experiment_id)
        .where(C.experiment_id.in_(ids), not_read_yet(dialect, Experiment.rolled_up_to))
        .subquery("new_rows")
    )
    control = ExperimentArm.__table__.alias("control")
    served_parts = union_all(
        select(S.slice_arm_id.label("arm"), S.own_conversations.label("n")).where(
            S.experiment_id.in_(ids)
        ),
        select(control.c.id, S.conversations - S.own_conversations)
        .join(control, and_(control.c.experiment_id == S.experiment_id, control.c.is_control))
        .where(S.experiment_id.in_(ids), S.conversations > S.own_conversations),
        select(new_rows.c.arm_id, literal(1)).where(new_rows.c.arm_id.is_not(None)),
    ).subquery("served")
    served = session.execute(
        select(served_parts.c.arm, func.sum(served_parts.c.n)).group_by(served_parts.c.arm)
    ).all()
    unit_parts = union(
        select(S.slice_arm_id.label("slice"), S.unit_id).where(S.experiment_id.in_(ids)),
        select(new_rows.c.slice, new_rows.c.unit_id).where(new_rows.c.slice.is_not(None)),
    ).subquery("units")
    units = session.execute(
        select(unit_parts.c.slice, func.count()).group_by(unit_parts.c.slice)
    ).all()
    return {int(a): int(n) for a, n in served}, {int(s): int(n) for s, n in units}
