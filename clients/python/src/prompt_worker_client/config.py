"""The configuration document of GET /v1/config, parsed once into rules that answer
get_prompt in microseconds: every answer a unit can get is built at parse time, so serving
one is a hash, a binary search and a tuple lookup.

The rules are resolve's (docs/assignment.md, "Step 3"): a running experiment places the unit
with the hashing scheme over all its arms, stopped ones included, and serves the control to
the units of a stopped arm's slice; a paused experiment serves everyone the control, with no
experiment; without an experiment the prompt's active version is served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prompt_worker_client.assignment import (
    SCHEME_NAME,
    SCHEME_VERSION,
    cumulative_weights,
    point_of,
    slice_index,
)
from prompt_worker_client.errors import ConfigError

Role = Literal["control", "variant"]


@dataclass(frozen=True, slots=True)
class Arm:
    """The experiment arm that served a unit: its id and whether it is the control."""

    id: int
    role: Role


@dataclass(frozen=True, slots=True)
class ServedPrompt:
    """What get_prompt answers: the fields of resolve's JSON (`prompt` is the prompt's name,
    `content` its text), and `fallback`, true when the text is the fallback given to the
    client (then `version` and `version_id` are None: there is no version to credit)."""

    prompt: str
    content: str
    version: int | None
    version_id: int | None
    experiment_id: int | None = None
    arm: Arm | None = None
    fallback: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The answer in the shape of GET /v1/prompts/{name}/resolve."""
        return {
            "prompt": self.prompt,
            "version": self.version,
            "version_id": self.version_id,
            "content": self.content,
            "experiment_id": self.experiment_id,
            "arm": None if self.arm is None else {"id": self.arm.id, "role": self.arm.role},
        }

    def log_fields(self) -> dict[str, Any]:
        """The fields a conversation served with this answer is logged with: the prompt, the
        version and, while an experiment runs, its id. Add `unit_id` and the outcome."""
        fields: dict[str, Any] = {"prompt": self.prompt, "version": self.version}
        if self.experiment_id is not None:
            fields["experiment_id"] = self.experiment_id
        return fields


@dataclass(frozen=True, slots=True)
class ExperimentRule:
    """A running experiment: its "<id>:" bytes, the cumulative weights of its arms ordered by
    id, and the answer for each slice (the control's for a stopped arm's slice)."""

    id: int
    prefix: bytes
    cumulative: tuple[float, ...]
    answers: tuple[ServedPrompt, ...]

    def serve(self, unit_id: str) -> ServedPrompt:
        return self.answers[slice_index(point_of(self.prefix, unit_id), self.cumulative)]


@dataclass(frozen=True, slots=True)
class PromptRule:
    """One prompt: the running experiment that places units, or else the one answer every
    unit gets (the active version, or a paused experiment's control); None for neither."""

    name: str
    experiment: ExperimentRule | None
    answer: ServedPrompt | None

    def serve(self, unit_id: str) -> ServedPrompt | None:
        if self.experiment is not None:
            return self.experiment.serve(unit_id)
        return self.answer


@dataclass(frozen=True, slots=True)
class Config:
    """A parsed configuration and the ETag it came with."""

    prompts: Mapping[str, PromptRule]
    etag: str | None
    generated_at: str | None


def parse_config(document: Any, etag: str | None = None) -> Config:
    """The rules of a GET /v1/config document. Raises ConfigError, naming the field, for a
    hashing scheme or version this SDK does not implement (evaluating it with another
    scheme would place units in other arms than the service does) or a malformed document."""
    top = _object(document, "the document")
    hashing = _object(top.get("hashing"), "hashing")
    scheme, version = hashing.get("scheme"), hashing.get("version")
    if scheme != SCHEME_NAME or version != SCHEME_VERSION or isinstance(version, bool):
        raise ConfigError(
            f"hashing scheme {scheme!r} version {version!r} is not implemented by this SDK "
            f"({SCHEME_NAME} version {SCHEME_VERSION} is); upgrade prompt-worker-client"
        )
    prompts = top.get("prompts")
    if not isinstance(prompts, list):
        raise ConfigError("prompts must be a list")
    rules: dict[str, PromptRule] = {}
    for index, item in enumerate(prompts):
        rule = _prompt_rule(_object(item, f"prompts[{index}]"), f"prompts[{index}]")
        if rule.name in rules:
            raise ConfigError(f"prompts[{index}].name {rule.name!r} is listed twice")
        rules[rule.name] = rule
    generated_at = top.get("generated_at")
    return Config(rules, etag, generated_at if isinstance(generated_at, str) else None)


def _prompt_rule(item: dict[str, Any], where: str) -> PromptRule:
    name = _text(item, "name", where)
    active = item.get("active_version")
    answer = None
    if active is not None:
        version = _object(active, f"{where}.active_version")
        answer = ServedPrompt(
            prompt=name,
            content=_text(version, "content", f"{where}.active_version"),
            version=_whole(version, "number", f"{where}.active_version"),
            version_id=_whole(version, "id", f"{where}.active_version"),
        )
    experiment = item.get("experiment")
    if experiment is None:
        return PromptRule(name, None, answer)
    return _with_experiment(name, _object(experiment, f"{where}.experiment"), answer, where)


@dataclass(frozen=True, slots=True)
class _ArmSpec:
    id: int
    version: int
    version_id: int
    content: str
    role: Role
    active: bool
    weight: float


def _with_experiment(
    name: str, experiment: dict[str, Any], active: ServedPrompt | None, where: str
) -> PromptRule:
    where = f"{where}.experiment"
    experiment_id = _whole(experiment, "id", where)
    status = _choice(experiment, "status", where, ("running", "paused"))
    raw_arms = experiment.get("arms")
    if not isinstance(raw_arms, list) or not raw_arms:
        raise ConfigError(f"{where}.arms must be a non-empty list")
    arms = sorted(
        (
            _arm(_object(arm, f"{where}.arms[{i}]"), f"{where}.arms[{i}]")
            for i, arm in enumerate(raw_arms)
        ),
        key=lambda arm: arm.id,
    )
    if len({arm.id for arm in arms}) != len(arms):
        raise ConfigError(f"{where}.arms holds an arm id twice")
    controls = [arm for arm in arms if arm.role == "control"]
    if len(controls) > 1:
        raise ConfigError(f"{where}.arms has {len(controls)} control arms; one is expected")
    if not controls or not controls[0].active:
        # resolve ignores an experiment without an active control (the service does not even
        # list one): the prompt's active version is served.
        return PromptRule(name, None, active)
    control = controls[0]
    if status == "paused":
        return PromptRule(
            name, None, ServedPrompt(name, control.content, control.version, control.version_id)
        )
    # Every arm keeps its slice; the units of a stopped arm's slice are served the control.
    served = [arm if arm.active else control for arm in arms]
    answers = tuple(
        ServedPrompt(
            name, arm.content, arm.version, arm.version_id, experiment_id, Arm(arm.id, arm.role)
        )
        for arm in served
    )
    cumulative = cumulative_weights([arm.weight for arm in arms])
    return PromptRule(
        name, ExperimentRule(experiment_id, f"{experiment_id}:".encode(), cumulative, answers), None
    )


def _arm(arm: dict[str, Any], where: str) -> _ArmSpec:
    raw = arm.get("weight")
    try:
        # float() first: a JSON integer past the float range raises OverflowError here.
        weight = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else -1.0
    except OverflowError:
        weight = math.inf
    if not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"{where}.weight must be a finite number > 0; got {raw!r:.60}")
    role: Role = (
        "control" if _choice(arm, "role", where, ("control", "variant")) == "control" else "variant"
    )
    return _ArmSpec(
        id=_whole(arm, "id", where),
        version=_whole(arm, "version", where),
        version_id=_whole(arm, "version_id", where),
        content=_text(arm, "content", where),
        role=role,
        active=_choice(arm, "status", where, ("active", "stopped")) == "active",
        weight=weight,
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object; got {type(value).__name__}")
    return value


def _whole(item: dict[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}.{key} must be a whole number; got {value!r}")
    return value


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string; got {type(value).__name__}")
    return value


def _choice(item: dict[str, Any], key: str, where: str, allowed: tuple[str, ...]) -> str:
    value = item.get(key)
    if value not in allowed:
        raise ConfigError(f"{where}.{key} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)
