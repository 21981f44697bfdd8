"""The experiment rollup: the sums a check needs, brought up to date by each check.

A check used to group every conversation of its experiment; at 100 conversations a second
that is 120M rows by day 14, rescanned every 15 minutes. Instead, each check first adds the
conversations stored since the previous one, in two INSERT ... SELECT ... ON CONFLICT DO
UPDATE statements the database groups: to `experiment_stratum_sums` (per slice and unit
segment, the sums over units the statistics read) the change each touched unit makes,
then to `experiment_unit_sums` (per slice and unit, the unit's own sums). The check then
reads a few rows per arm: a pass costs the new rows and the units they touch, not the
experiment's history.

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

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Float,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from models.conversations import Conversation as C
from models.experiments import Experiment, ExperimentArm
from models.rollups import ExperimentStratumSums
from models.rollups import ExperimentUnitSums as S
from optimizer.db import prepare_rollup_transaction, upsert_insert
from optimizer.stats.metrics import NAMES, REGISTRY, Metric
from optimizer.watermark import mark_now, not_read_yet, stored_between

TINY = 1e-150
# A unit's slice: the arm the deterministic assignment gives it (`assigned_arm_id`, or
# `arm_id` on rows stored before it existed).
SLICE = func.coalesce(C.assigned_arm_id, C.arm_id)
# Served the slice's own version (always so for every arm but a stopped one's routed units).
OWN = or_(C.assigned_arm_id.is_(None), C.assigned_arm_id == C.arm_id)
# The models' tables, typed as such (a declarative model's __table__ is a FromClause).
_UNITS: Table = S.__table__  # type: ignore[assignment]
_STRATA: Table = ExperimentStratumSums.__table__  # type: ignore[assignment]
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


def _new_unit_sums(dialect: str, first: bool) -> Select[Any]:
    """Per (slice, unit), the sums of the rows stored between the marks. Binds:
    experiment_id, the caps (bind_caps), since (unless `first`) and until."""
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
    return (
        select(*(expr.label(name) for name, expr in sums.items()))
        .where(
            SLICE.is_not(None),
            stored_between(
                dialect,
                None if first else bindparam("since"),
                bindparam("until"),
                within=(C.experiment_id, bindparam("experiment_id")),
            ),
        )
        .group_by(C.experiment_id, SLICE, C.unit_id)
    )


def _smaller_segment(a: Any, b: Any) -> Any:
    """The smaller of two segments; NULL only when both are (SQLite's min() and
    PostgreSQL's least() disagree on NULL, so it is spelled out)."""
    return case((a.is_(None), b), (b.is_(None), a), (b < a, b), else_=a)


def _unit_pass(dialect: str, first: bool) -> Any:
    """Adds the new rows' sums to their units' rows."""
    source = _new_unit_sums(dialect, first)
    names = [c.name for c in source.selected_columns]
    insert = upsert_insert(dialect, _UNITS).from_select(names, source)
    new = insert.excluded
    merged: dict[str, Any] = {
        name: _UNITS.c[name] + new[name] for name in names if name not in (*_KEY, "stratum")
    }
    merged["stratum"] = _smaller_segment(_UNITS.c.stratum, new.stratum)
    return insert.on_conflict_do_update(index_elements=list(_KEY), set_=merged)


def _changes(dialect: str, first: bool) -> Any:
    """Per unit touched by the pass, its figures before (o_*) and after (n_*)."""
    d = _new_unit_sums(dialect, first).subquery("d")
    old = _UNITS.alias("old")
    columns: list[Any] = [
        d.c.slice_arm_id.label("slice"),
        old.c.stratum.label("o_stratum"),
        _smaller_segment(old.c.stratum, d.c.stratum).label("n_stratum"),
        func.coalesce(old.c.own_conversations, 0).label("o_own"),
        (func.coalesce(old.c.own_conversations, 0) + d.c.own_conversations).label("n_own"),
    ]
    for name in NAMES:
        for part in ("y", "m"):
            before = func.coalesce(old.c[f"{name}_{part}"], 0.0)
            columns += [
                before.label(f"o_{name}_{part}"),
                d.c[f"{name}_{part}"].label(f"d_{name}_{part}"),
                (before + d.c[f"{name}_{part}"]).label(f"n_{name}_{part}"),
            ]
    joined = d.outerjoin(
        old,
        and_(
            old.c.experiment_id == d.c.experiment_id,
            old.c.slice_arm_id == d.c.slice_arm_id,
            old.c.unit_id == d.c.unit_id,
        ),
    )
    # A CTE, evaluated once for the three parts of the union below.
    return select(*columns).select_from(joined).cte("j")


def _positive(x: Any) -> Any:
    return case((x > 0, 1), else_=0)


def _stratum_pass(dialect: str, first: bool) -> Any:
    """Moves the stratum sums by what the pass changes in its units, before _unit_pass.
    A unit that stays in its stratum adds its change, written so that rounding follows the
    change and not the unit's size (y'^2 - y^2 as dy * (2y + dy)); a unit that is new or
    changes stratum (a smaller segment arrived) leaves its old stratum whole and joins the
    new one whole."""
    j = _changes(dialect, first)
    stays = and_(j.c.o_own > 0, j.c.o_stratum.is_not_distinct_from(j.c.n_stratum))

    def part(sign: int, prefix: str, stratum: Any, units: Any, conversations: Any) -> Any:
        columns: list[Any] = [
            j.c.slice.label("slice"),
            stratum.label("stratum"),
            units.label("units"),
            conversations.label("conversations"),
        ]
        for name in NAMES:
            y, m = j.c[f"{prefix}_{name}_y"], j.c[f"{prefix}_{name}_m"]
            columns += [
                (sign * _positive(m)).label(f"{name}_units"),
                (sign * y).label(f"{name}_sy"),
                (sign * m).label(f"{name}_sm"),
                (sign * y * y).label(f"{name}_syy"),
                (sign * m * m).label(f"{name}_smm"),
                (sign * y * m).label(f"{name}_sym"),
            ]
        return select(*columns)

    same: list[Any] = [
        j.c.slice.label("slice"),
        j.c.n_stratum.label("stratum"),
        literal(0).label("units"),
        (j.c.n_own - j.c.o_own).label("conversations"),
    ]
    for name in NAMES:
        oy, om = j.c[f"o_{name}_y"], j.c[f"o_{name}_m"]
        dy, dm = j.c[f"d_{name}_y"], j.c[f"d_{name}_m"]
        same += [
            (_positive(om + dm) - _positive(om)).label(f"{name}_units"),
            dy.label(f"{name}_sy"),
            dm.label(f"{name}_sm"),
            (dy * (2 * oy + dy)).label(f"{name}_syy"),
            (dm * (2 * om + dm)).label(f"{name}_smm"),
            (oy * dm + dy * om + dy * dm).label(f"{name}_sym"),
        ]
    parts = union_all(
        select(*same).where(stays),
        part(-1, "o", j.c.o_stratum, literal(-1), -j.c.o_own).where(j.c.o_own > 0, ~stays),
        part(1, "n", j.c.n_stratum, literal(1), j.c.n_own).where(j.c.n_own > 0, ~stays),
    ).subquery("parts")
    sums = [c.name for c in _STRATA.c if c.name not in ("experiment_id", "slice_arm_id")]
    sums = [n for n in sums if n not in ("stratum_key", "stratum")]
    source = select(
        bindparam("experiment_id").label("experiment_id"),
        parts.c.slice.label("slice_arm_id"),
        case((parts.c.stratum.is_(None), "-"), else_="=" + parts.c.stratum).label("stratum_key"),
        parts.c.stratum.label("stratum"),
        *(func.sum(parts.c[n]).label(n) for n in sums),
    ).group_by(parts.c.slice, parts.c.stratum)
    insert = upsert_insert(dialect, _STRATA).from_select(
        ["experiment_id", "slice_arm_id", "stratum_key", "stratum", *sums], source
    )
    return insert.on_conflict_do_update(
        index_elements=["experiment_id", "slice_arm_id", "stratum_key"],
        set_={n: _STRATA.c[n] + insert.excluded[n] for n in sums},
    )


@functools.cache
def _pass_statements(dialect: str, first: bool) -> tuple[Any, Any]:
    """Built once per kind: building them costs more than running them on a few rows."""
    return _stratum_pass(dialect, first), _unit_pass(dialect, first)


def _caps_text(caps: Mapping[str, float]) -> str:
    return json.dumps(dict(sorted(caps.items())))


def roll_up(session: Session, experiment_id: int, caps: Mapping[str, float]) -> None:
    """Bring the experiment's rollup up to date, capped at `caps`. Run under the
    experiment's lock (experiments.transitions.lock_experiment): one pass at a time."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return
    dialect = session.get_bind().dialect.name
    prepare_rollup_transaction(session)  # the pass groups the new rows by unit
    wanted = _caps_text(caps)
    if experiment.rolled_up_to is not None and experiment.rollup_caps != wanted:
        # Sums capped otherwise cannot be re-capped: start again from the raw rows.
        session.execute(delete(S).where(S.experiment_id == experiment_id))
        session.execute(delete(_STRATA).where(_STRATA.c.experiment_id == experiment_id))
        experiment.rolled_up_to = None
    until = mark_now(session)
    since = experiment.rolled_up_to
    if since is None or until > since:
        params = {**bind_caps(experiment_id, caps), "since": since, "until": until}
        stratum_pass, unit_pass = _pass_statements(dialect, since is None)
        session.execute(stratum_pass, params)
        session.execute(unit_pass, params)
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
    if not ids:
        return {}, {}

    def unread(experiment_id: int) -> Any:
        mark = select(Experiment.rolled_up_to).where(Experiment.id == experiment_id)
        return select(C.arm_id, SLICE.label("slice"), C.unit_id).where(
            not_read_yet(dialect, (C.experiment_id, experiment_id), mark.scalar_subquery())
        )

    new_rows = union_all(*(unread(x) for x in ids)).subquery("new_rows")
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
