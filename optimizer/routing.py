"""What resolve answers, evaluated in memory from the client configuration document.

Pure: `Routing.from_config` reads the document GET /v1/config serves
(optimizer.client_config), the same one an SDK evaluates, so the server and every SDK
decide from one description. Each possible answer is encoded to JSON once, when the
routing is built; a resolve is then a dictionary lookup, one sha256 (optimizer.assignment)
and a ready body:

    {"prompt": "support-bot", "version": 3, "version_id": 17, "content": "...",
     "experiment_id": 5 | null,
     "arm": {"id": 12, "role": "control" | "variant"} | null}

The rules (the document lists an experiment only while it is live with an active control
arm, as "running" or "paused": one awaiting approval keeps its split and is listed as
"running"; resolve ignores any other):
- a running experiment: the unit's arm by `pick_arm` over every arm, stopped ones too, so
  no slice moves; a unit in a stopped arm's slice gets control;
- a paused experiment: everyone gets control, with no experiment and no arm;
- otherwise the active version; none is a Conflict (409), an unknown prompt NotFound (404).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optimizer.assignment import pick_arm
from optimizer.errors import Conflict, NotFound


@dataclass(frozen=True)
class Route:
    """One prompt. `fixed` is everyone's answer (None with no active version) unless an
    experiment runs; then `slices` are its (arm id, weight) pairs and `by_arm` the answer
    for a unit in each arm's slice."""

    name: str
    fixed: bytes | None = None
    experiment_id: int | None = None
    slices: tuple[tuple[int, float], ...] = ()
    by_arm: Mapping[int, bytes] = field(default_factory=dict)

    def body(self, unit_id: str) -> bytes:
        if self.experiment_id is not None:
            return self.by_arm[pick_arm(self.experiment_id, unit_id, self.slices)]
        if self.fixed is None:
            raise Conflict(
                f"prompt {self.name!r} has no active version; activate one with "
                f"POST /prompts/{self.name}/rollback"
            )
        return self.fixed


@dataclass(frozen=True)
class Routing:
    routes: Mapping[str, Route]

    @classmethod
    def from_config(cls, document: Mapping[str, Any]) -> Routing:
        return cls({prompt["name"]: _route(prompt) for prompt in document["prompts"]})

    def body(self, prompt_name: str, unit_id: str) -> bytes:
        """The JSON answer for this unit, as bytes."""
        route = self.routes.get(prompt_name)
        if route is None:
            raise NotFound(f"no prompt named {prompt_name!r}; create it with POST /prompts")
        return route.body(unit_id)

    def answer(self, prompt_name: str, unit_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.body(prompt_name, unit_id))
        return answer


def encode(
    prompt_name: str,
    number: int,
    version_id: int,
    content: str,
    experiment_id: int | None = None,
    arm: Mapping[str, Any] | None = None,
) -> bytes:
    """What aiohttp's json_response would send for the answer (json.dumps' defaults)."""
    return json.dumps(
        {
            "prompt": prompt_name,
            "version": number,
            "version_id": version_id,
            "content": content,
            "experiment_id": experiment_id,
            "arm": None if arm is None else {"id": arm["id"], "role": arm["role"]},
        }
    ).encode()


def _route(prompt: Mapping[str, Any]) -> Route:
    name: str = prompt["name"]
    experiment = prompt["experiment"]
    if experiment is not None:
        return _experiment_route(name, experiment["id"], experiment["status"], experiment["arms"])
    active = prompt["active_version"]
    if active is None:
        return Route(name)
    return Route(name, fixed=encode(name, active["number"], active["id"], active["content"]))


def _experiment_route(
    name: str, experiment_id: int, status: str, arms: Sequence[Mapping[str, Any]]
) -> Route:
    control = next(a for a in arms if a["role"] == "control" and a["status"] == "active")
    if status != "running":
        return Route(name, fixed=_arm_answer(name, control, None))
    by_arm = {
        arm["id"]: _arm_answer(name, arm if arm["status"] == "active" else control, experiment_id)
        for arm in arms
    }
    slices = tuple((arm["id"], float(arm["weight"])) for arm in arms)
    return Route(name, experiment_id=experiment_id, slices=slices, by_arm=by_arm)


def _arm_answer(name: str, arm: Mapping[str, Any], experiment_id: int | None) -> bytes:
    return encode(
        name,
        arm["version"],
        arm["version_id"],
        arm["content"],
        experiment_id,
        None if experiment_id is None else arm,
    )
