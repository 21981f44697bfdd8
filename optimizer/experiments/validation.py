"""Validation of an experiment's settings as they arrive from outside (HTTP bodies, job
payloads, CLI), and the stored form of its guardrails. Every entry point refuses the same
things with the same messages, each naming the field at fault."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optimizer.config import MAX_MIN_CONVERSATIONS_PER_ARM
from optimizer.errors import InvalidInput, PromptWorkerError
from optimizer.stats import DEFAULT_GUARDRAILS, HEAVY_TAILED, VALUE_BOUNDS, Guardrail
from optimizer.text_input import refuse_unstorable, shown

PRIMARY_METRICS = ("success", "rating")
# Which way is better for each metric; the default direction of a guardrail on it.
METRIC_DIRECTIONS = {"success": True, "rating": True, "latency_ms": False, "cost_usd": False}
MAX_VARIANTS = 9
MAX_WEIGHT = 1_000_000.0
# Below this a weight's share can round away (a subnormal times the unit's point is a multiple
# of 5e-324) and the split stops following the weights.
MIN_WEIGHT = 1e-6
MAX_HOURS = 24.0 * 366 * 5
MAX_TOLERANCE = 100.0
GUARDRAIL_KEYS = ("metric", "higher_is_better", "tolerance", "required", "cap")


@dataclass(frozen=True)
class ExperimentSettings:
    primary_metric: str
    guardrails: tuple[Guardrail, ...]
    confidence: float
    min_conversations_per_arm: int
    min_runtime_hours: float
    max_runtime_hours: float


def _number(value: Any, name: str, *, low: float, high: float, low_open: bool = False) -> float:
    # Only a float can be NaN or infinite. An integer is compared as it is: converting one
    # of hundreds of digits to float (math.isfinite does) raises OverflowError.
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise InvalidInput(f"{name} must be a number; got {shown(value)}", field=name)
    if value < low or value > high or (low_open and value == low):
        low_text = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise InvalidInput(f"{name} must be {low_text} and at most {high:g}; got "
                           f"{shown(value)}", field=name)
    return float(value) + 0.0  # -0.0 becomes 0.0


def _whole(value: Any, name: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number; got {shown(value)}", field=name)
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be from {low} to {high}; got {shown(value)}",
                           field=name)
    return value


def parse_variants(value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise InvalidInput("variants must be a non-empty list of version numbers; got "
                           f"{shown(value)}", field="variants")
    if len(value) > MAX_VARIANTS:
        raise InvalidInput(f"variants may name at most {MAX_VARIANTS} versions; got "
                           f"{len(value)}", field="variants")
    numbers = [_whole(v, "variants", low=1, high=2**31 - 1) for v in value]
    if len(set(numbers)) != len(numbers):
        raise InvalidInput(f"variants must not repeat a version; got {numbers}",
                           field="variants")
    return numbers


def parse_weights(value: Any, arms: int) -> list[float]:
    if value is None:
        return [1.0] * arms
    if not isinstance(value, list) or len(value) != arms:
        raise InvalidInput(
            f"weights must be a list of {arms} positive numbers, control first, then each "
            f"variant in order; got {shown(value)}", field="weights")
    return [_number(w, "weights", low=MIN_WEIGHT, high=MAX_WEIGHT) for w in value]


def parse_guardrails(value: Any) -> tuple[Guardrail, ...]:
    if value is None:
        return tuple(DEFAULT_GUARDRAILS)
    if not isinstance(value, list):
        raise InvalidInput(f"guardrails must be a list of objects like {{\"metric\": "
                           f"\"rating\", \"higher_is_better\": true, \"tolerance\": 0.05}}; "
                           f"got {shown(value)}", field="guardrails")
    parsed = [_guardrail(item, f"guardrails[{i}]") for i, item in enumerate(value)]
    metrics = [g.metric for g in parsed]
    if len(set(metrics)) != len(metrics):
        raise InvalidInput(f"guardrails name a metric twice: {metrics}", field="guardrails")
    return tuple(parsed)


def _guardrail(item: Any, where: str) -> Guardrail:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object with metric, higher_is_better and "
                           f"tolerance; got {shown(item)}", field=where)
    for key in item:
        if key not in GUARDRAIL_KEYS:
            raise InvalidInput(f"{where} has unknown key {key!r}; allowed: "
                               f"{', '.join(GUARDRAIL_KEYS)}", field=f"{where}.{key}")
    metric = item.get("metric")
    # isinstance first: a list or an object is not hashable, so `in` on the dict would raise.
    if not isinstance(metric, str) or metric not in METRIC_DIRECTIONS:
        raise InvalidInput(f"{where}.metric must be one of {', '.join(METRIC_DIRECTIONS)}; "
                           f"got {shown(metric)}", field=f"{where}.metric")
    higher = item.get("higher_is_better", METRIC_DIRECTIONS[metric])
    if not isinstance(higher, bool):
        raise InvalidInput(f"{where}.higher_is_better must be true or false; got "
                           f"{shown(higher)}", field=f"{where}.higher_is_better")
    tolerance = _number(item.get("tolerance", 0.0), f"{where}.tolerance", low=0.0,
                        high=MAX_TOLERANCE)
    required = item.get("required", False)
    if not isinstance(required, bool):
        raise InvalidInput(f"{where}.required must be true or false; got {shown(required)}",
                           field=f"{where}.required")
    return Guardrail(metric, higher, tolerance, required, _cap(item.get("cap"), metric, where))


def _cap(value: Any, metric: str, where: str) -> float | None:
    if value is None:
        return None
    if metric not in HEAVY_TAILED:
        raise InvalidInput(f"{where}.cap applies only to {', '.join(HEAVY_TAILED)}; "
                           f"{metric} is bounded already", field=f"{where}.cap")
    return _number(value, f"{where}.cap", low=0.0, high=VALUE_BOUNDS[metric][1],
                   low_open=True)


def parse_settings(*, primary_metric: Any = "success", guardrails: Any = None,
                   confidence: Any = 0.90, min_conversations_per_arm: Any = 100,
                   min_runtime_hours: Any = 24.0, max_runtime_hours: Any = 336.0
                   ) -> ExperimentSettings:
    if primary_metric not in PRIMARY_METRICS:
        raise InvalidInput(f"primary_metric must be one of {', '.join(PRIMARY_METRICS)}; "
                           f"got {shown(primary_metric)}", field="primary_metric")
    low_hours = _number(min_runtime_hours, "min_runtime_hours", low=0.0, high=MAX_HOURS)
    high_hours = _number(max_runtime_hours, "max_runtime_hours", low=0.0, high=MAX_HOURS,
                         low_open=True)
    if high_hours < low_hours:
        raise InvalidInput(f"max_runtime_hours ({high_hours:g}) must not be less than "
                           f"min_runtime_hours ({low_hours:g})", field="max_runtime_hours")
    return ExperimentSettings(
        primary_metric=primary_metric, guardrails=parse_guardrails(guardrails),
        confidence=_number(confidence, "confidence", low=0.5, high=0.9999),
        min_conversations_per_arm=_whole(min_conversations_per_arm,
                                         "min_conversations_per_arm", low=1,
                                         high=MAX_MIN_CONVERSATIONS_PER_ARM),
        min_runtime_hours=low_hours, max_runtime_hours=high_hours)


def parse_stop_reason(value: Any) -> str | None:
    """Why an experiment is stopped by hand: optional text."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"reason must be text; got {shown(value)}", field="reason")
    return refuse_unstorable(value, "reason")


def guardrails_to_json(guardrails: Sequence[Guardrail]) -> str:
    return json.dumps([{"metric": g.metric, "higher_is_better": g.higher_is_better,
                        "tolerance": g.tolerance, "required": g.required, "cap": g.cap}
                       for g in guardrails])


def guardrails_from_json(text: str) -> tuple[Guardrail, ...]:
    """The stored list; a row edited by hand into nonsense fails its own check only."""
    try:
        return parse_guardrails(json.loads(text))
    except (ValueError, InvalidInput) as exc:
        raise PromptWorkerError(f"stored guardrails are not usable ({exc}); fix the "
                                "guardrails column of this experiment or stop it") from None
