"""Caps of heavy-tailed metrics (cost, latency): one extreme conversation must not decide.

Each experiment fixes, once per metric, the value above which a conversation counts as the
cap: a cap configured on the guardrail, or else the 99th percentile of the control's first
CAP_SAMPLE values (by time), fixed as soon as the control has MIN_CAP_SAMPLE of them. The
same cap applies to every arm and every later check, so the comparison stays fair and a
check can be recomputed from what it stored. The percentile is taken by the database
(ORDER BY ... OFFSET on the early sample); values never travel into Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from sqlalchemy import Float, cast, func, select
from sqlalchemy.orm import Session

from models.conversations import Conversation as C
from models.experiments import Experiment
from optimizer.experiments.rollup import OWN, SLICE
from optimizer.stats import ArmData, Guardrail, metric
from optimizer.stats.metrics import CAPPED

CAP_QUANTILE = 0.99
CAP_SAMPLE = 1000
MIN_CAP_SAMPLE = 200


def _fixed(experiment: Experiment) -> dict[str, float]:
    """Caps fixed earlier. A stored value that is not a positive finite number (a row
    edited by hand) is ignored and fixed again."""
    try:
        raw = json.loads(experiment.metric_caps or "{}")
    except ValueError:
        raw = {}
    items = raw.items() if isinstance(raw, dict) else ()
    return {
        m: float(v)
        for m, v in items
        if m in CAPPED
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and v > 0
    }


def caps_in_force(experiment: Experiment, guardrails: Sequence[Guardrail]) -> dict[str, float]:
    """Configured caps win over fixed ones."""
    return {**_fixed(experiment), **{g.metric: g.cap for g in guardrails if g.cap is not None}}


def fix_missing_caps(
    session: Session, experiment: Experiment, control: ArmData | None, caps: Mapping[str, float]
) -> dict[str, float]:
    """Caps newly fixed at this check (stored on the experiment), for metrics whose control
    now has enough values."""
    if control is None:
        return {}
    new: dict[str, float] = {}
    for name in CAPPED:
        if name in caps or control.metrics[name].observations < MIN_CAP_SAMPLE:
            continue
        value = _early_quantile(session, experiment.id, control.arm_id, name)
        if value is not None and math.isfinite(value) and value > 0:
            new[name] = value
    if new:
        experiment.metric_caps = json.dumps({**_fixed(experiment), **new})
    return new


def _early_quantile(
    session: Session, experiment_id: int, control_arm_id: int, name: str
) -> float | None:
    low, high = metric(name).bounds
    value = cast(getattr(C, metric(name).column), Float)
    early = (
        select(value.label("v"))
        .where(
            C.experiment_id == experiment_id,
            SLICE == control_arm_id,  # noqa: SIM300 (SLICE is a column expression)
            OWN,
            value >= low,
            value <= high,
        )
        .order_by(C.occurred_at, C.id)
        .limit(CAP_SAMPLE)
        .subquery()
    )
    n = session.scalar(select(func.count()).select_from(early)) or 0
    if n < MIN_CAP_SAMPLE:
        return None
    offset = max(0, math.ceil(CAP_QUANTILE * n) - 1)
    return session.scalar(select(early.c.v).order_by(early.c.v).offset(offset).limit(1))
