"""The configuration an SDK needs to resolve prompts locally (GET /v1/config).

Evaluating it with the hashing scheme of optimizer.assignment (docs/assignment.md) gives,
for every unit, exactly what optimizer.resolve answers:

    {"hashing": {"scheme": "sha256-unit-point", "version": 1},
     "generated_at": "2026-12-01T05:00:00.123456Z",
     "prompts": [{"name": "support-bot",
                  "active_version": {"number": 3, "id": 17, "content": "..."} | null,
                  "experiment": {"id": 5, "status": "running" | "paused",
                                 "arms": [{"id": 12, "version": 3, "version_id": 17,
                                           "content": "...", "weight": 1.0,
                                           "status": "active" | "stopped",
                                           "role": "control" | "variant"}, ...]} | null}]}

The rules are resolve's: an experiment is listed only while it is live (running, paused or
awaiting approval; one awaiting approval is listed as "running": its traffic keeps its split
until a person decides, and SDKs know only the two routing states), its control arm is
active and every weight is a positive finite number (otherwise resolve ignores it: a
weight of NaN or infinity, which PostgreSQL's `weight > 0` check lets through, cannot split
units); every arm is listed, stopped ones too, so the slices of the others never move.
Prompts are ordered by name and arms by id, so the same state always gives the same
document and the same ETag.

Every `content` is the version's text as served: its protected-section markers removed
(optimizer.prompt_text.served_text), as the admin API never does.

The server builds this document once per change of routing (optimizer.routing_refresh):
resolve evaluates it (optimizer.routing) and GET /v1/config serves it as built.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from models.experiments import LIVE_STATUSES, SPLIT_STATUSES, Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.assignment import SCHEME_NAME, SCHEME_VERSION
from optimizer.prompt_text import served_text


def build(session: Session) -> dict[str, Any]:
    """The document without `generated_at` (what the ETag covers), read in `session`'s
    transaction."""
    prompts = session.execute(
        select(
            Prompt.id,
            Prompt.name,
            PromptVersion.id.label("version_id"),
            PromptVersion.version,
            PromptVersion.content,
        )
        .outerjoin(
            PromptVersion,
            and_(PromptVersion.prompt_id == Prompt.id, PromptVersion.status == "active"),
        )
        .order_by(Prompt.name)
    ).all()
    experiments = _live_experiments(session)
    return {
        "hashing": {"scheme": SCHEME_NAME, "version": SCHEME_VERSION},
        "prompts": [
            {
                "name": prompt.name,
                "active_version": None
                if prompt.version_id is None
                else {
                    "number": prompt.version,
                    "id": prompt.version_id,
                    "content": served_text(prompt.content),
                },
                "experiment": experiments.get(prompt.id),
            }
            for prompt in prompts
        ],
    }


def _live_experiments(session: Session) -> dict[int, dict[str, Any]]:
    """Per prompt id, its live experiment whose control arm is active."""
    rows = session.execute(
        select(
            Experiment.prompt_id,
            Experiment.id.label("experiment_id"),
            Experiment.status.label("experiment_status"),
            ExperimentArm.id,
            ExperimentArm.is_control,
            ExperimentArm.weight,
            ExperimentArm.status,
            PromptVersion.id.label("version_id"),
            PromptVersion.version,
            PromptVersion.content,
        )
        .join(ExperimentArm, ExperimentArm.experiment_id == Experiment.id)
        .join(PromptVersion, PromptVersion.id == ExperimentArm.version_id)
        .where(Experiment.status.in_(LIVE_STATUSES))
        .order_by(Experiment.id, ExperimentArm.id)
    ).all()
    arms: dict[tuple[int, int, str], list[Any]] = defaultdict(list)
    for row in rows:
        arms[(row.prompt_id, row.experiment_id, row.experiment_status)].append(row)
    live: dict[int, dict[str, Any]] = {}
    for (prompt_id, experiment_id, status), experiment_arms in arms.items():
        if not any(arm.is_control and arm.status == "active" for arm in experiment_arms):
            continue
        if not all(math.isfinite(arm.weight) and arm.weight > 0 for arm in experiment_arms):
            continue
        live.setdefault(
            prompt_id,
            {
                "id": experiment_id,
                "status": routing_status(status),
                "arms": [
                    {
                        "id": arm.id,
                        "version": arm.version,
                        "version_id": arm.version_id,
                        "content": served_text(arm.content),
                        "weight": arm.weight,
                        "status": arm.status,
                        "role": "control" if arm.is_control else "variant",
                    }
                    for arm in experiment_arms
                ],
            },
        )
    return live


def routing_status(status: str) -> str:
    """How a live experiment routes: "running" splits the traffic (also while a winner awaits
    approval), "paused" serves everyone the control."""
    return "running" if status in SPLIT_STATUSES else "paused"


def etag(document: dict[str, Any]) -> str:
    """A strong entity tag: the sha256 of the canonical JSON of the document minus the time
    it was generated, so an unchanged configuration keeps its tag."""
    stable = {key: value for key, value in document.items() if key != "generated_at"}
    canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest() + '"'


def tag_matches(if_none_match: str | None, tag: str) -> bool:
    """Whether If-None-Match holds `tag` (RFC 9110 13.1.2: a list, "*", and the weak
    comparison, so W/"x" matches "x")."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False
