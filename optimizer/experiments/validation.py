"""An experiment's settings as they arrive from outside, as pydantic models: the body of
POST /experiments (NewExperiment), the settings an experiment_creation payload may hold and
the CLI's options (ExperimentSettingsInput), and the stored form of the guardrails. Every
entry point refuses the same things with the same messages, each naming the field at fault,
and the same models give the OpenAPI schema."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from optimizer.config import MAX_MIN_CONVERSATIONS_PER_ARM
from optimizer.errors import InvalidInput, PromptWorkerError
from optimizer.input_models import InputModel, one_of, plus_zero, validate
from optimizer.prompts import MAX_VERSION
from optimizer.stats import DEFAULT_GUARDRAILS, Guardrail
from optimizer.stats import metrics as registry
from optimizer.text_input import refuse_unstorable, shown

PRIMARY_METRICS = registry.PRIMARY
MAX_VARIANTS = 9
MAX_WEIGHT = 1_000_000.0
# Below this a weight's share can round away (a subnormal times the unit's point is a multiple
# of 5e-324) and the split stops following the weights.
MIN_WEIGHT = 1e-6
MAX_HOURS = 24.0 * 366 * 5
MAX_TOLERANCE = 100.0
DEFAULT_CONFIDENCE = 0.90
DEFAULT_MIN_CONVERSATIONS_PER_ARM = 100


@dataclass(frozen=True)
class ExperimentSettings:
    primary_metric: str
    guardrails: tuple[Guardrail, ...]
    confidence: float
    min_conversations_per_arm: int
    min_runtime_hours: float
    max_runtime_hours: float


def _without_default(schema: dict[str, Any]) -> None:
    """For a field whose default is decided elsewhere (the metric's direction, a setting of
    the service): the schema's "default" would be wrong, the description says it."""
    schema.pop("default", None)


def _distinct(numbers: list[int]) -> list[int]:
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"must not repeat a version; got {numbers}")
    return numbers


Version = Annotated[int, Field(ge=1, le=MAX_VERSION)]
Variants = Annotated[
    list[Version], Field(min_length=1, max_length=MAX_VARIANTS), AfterValidator(_distinct)
]
Weights = list[Annotated[float, Field(ge=MIN_WEIGHT, le=MAX_WEIGHT)]]


class GuardrailInput(InputModel):
    """A gate on one metric: the variant may be at most `tolerance` worse than the control
    (relative to the control's mean), and must be shown to be within it to be promoted."""

    metric: Annotated[str, AfterValidator(one_of(registry.NAMES))] = Field(
        description=f"the metric to guard: one of {', '.join(registry.NAMES)}",
        json_schema_extra={"enum": list(registry.NAMES)},
    )
    higher_is_better: bool = Field(
        True,
        json_schema_extra=_without_default,
        description="which way is better; default: the metric's own direction ("
        + ", ".join(f"{m.name} {m.direction}" for m in registry.REGISTRY)
        + ")",
    )
    tolerance: Annotated[float, Field(ge=0.0, le=MAX_TOLERANCE), AfterValidator(plus_zero)] = Field(
        0.0,
        description="how much worse than the control the variant may be, relative to "
        "the control's mean (0.10 = 10% worse); 0 demands proof that it is at least as good",
    )
    required: bool = Field(
        False, description="when true, an experiment where no arm reports the metric cannot promote"
    )
    cap: Annotated[float, Field(gt=0.0)] | None = Field(
        None,
        description=f"only {', '.join(registry.CAPPED)}: values above it count as the "
        "cap; default: fixed from the control's early data",
    )

    @field_validator("cap")
    @classmethod
    def _cap_fits_the_metric(cls, cap: float | None, info: ValidationInfo) -> float | None:
        metric = info.data.get("metric")
        if cap is None or metric is None:  # no metric: its own error is reported
            return cap
        if metric not in registry.CAPPED:
            raise ValueError(
                f"applies only to {', '.join(registry.CAPPED)}; {metric} is bounded already"
            )
        high = registry.metric(metric).bounds[1]
        if cap > high:
            raise ValueError(f"must be more than 0 and at most {high:g}; got {shown(cap)}")
        return cap

    def guardrail(self) -> Guardrail:
        higher = (
            self.higher_is_better
            if "higher_is_better" in self.model_fields_set
            else registry.metric(self.metric).higher_is_better
        )
        return Guardrail(self.metric, higher, self.tolerance, self.required, self.cap)


class ExperimentSettingsInput(InputModel):
    """How an experiment decides. Every field is optional."""

    primary_metric: Annotated[str, AfterValidator(one_of(PRIMARY_METRICS))] = Field(
        registry.DEFAULT_PRIMARY,
        json_schema_extra={"enum": list(PRIMARY_METRICS)},
        description="the metric a variant must improve",
    )
    guardrails: list[GuardrailInput] | None = Field(
        None,
        description="the gates every variant must pass; default: "
        + ", ".join(f"{g.metric} (tolerance {g.tolerance:g})" for g in DEFAULT_GUARDRAILS)
        + "; [] means none",
    )
    confidence: Annotated[float, Field(ge=0.5, le=0.9999)] = Field(
        DEFAULT_CONFIDENCE,
        json_schema_extra=_without_default,
        description="how sure a decision must be; default: PROMOTION_CONFIDENCE",
    )
    min_conversations_per_arm: Annotated[int, Field(ge=1, le=MAX_MIN_CONVERSATIONS_PER_ARM)] = (
        Field(
            DEFAULT_MIN_CONVERSATIONS_PER_ARM,
            json_schema_extra=_without_default,
            description="no decision before every arm has this many; default: "
            "MIN_CONVERSATIONS_PER_ARM",
        )
    )
    min_runtime_hours: Annotated[float, Field(ge=0.0, le=MAX_HOURS), AfterValidator(plus_zero)] = (
        Field(24.0, description="no promotion before this")
    )
    max_runtime_hours: Annotated[float, Field(gt=0.0, le=MAX_HOURS)] = Field(
        336.0,
        validate_default=True,  # the default too must not be below the minimum
        description="past it, an experiment without a winner ends; not less than min_runtime_hours",
    )

    @field_validator("guardrails")
    @classmethod
    def _one_guardrail_per_metric(
        cls, guardrails: list[GuardrailInput] | None
    ) -> list[GuardrailInput] | None:
        metrics = [g.metric for g in guardrails or ()]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"name a metric twice: {metrics}")
        return guardrails

    @field_validator("max_runtime_hours")
    @classmethod
    def _not_below_the_minimum(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("min_runtime_hours")
        if low is not None and high < low:
            raise ValueError(f"({high:g}) must not be less than min_runtime_hours ({low:g})")
        return high

    def settings(
        self,
        *,
        confidence: float = DEFAULT_CONFIDENCE,
        min_conversations_per_arm: int = DEFAULT_MIN_CONVERSATIONS_PER_ARM,
    ) -> ExperimentSettings:
        """The settings, with `confidence` and `min_conversations_per_arm` (the service's
        defaults) where the input does not name them."""
        given = self.model_fields_set
        return ExperimentSettings(
            primary_metric=self.primary_metric,
            guardrails=(
                tuple(g.guardrail() for g in self.guardrails)
                if self.guardrails is not None
                else tuple(DEFAULT_GUARDRAILS)
            ),
            confidence=self.confidence if "confidence" in given else confidence,
            min_conversations_per_arm=(
                self.min_conversations_per_arm
                if "min_conversations_per_arm" in given
                else min_conversations_per_arm
            ),
            min_runtime_hours=self.min_runtime_hours,
            max_runtime_hours=self.max_runtime_hours,
        )


SETTING_FIELDS = tuple(ExperimentSettingsInput.model_fields)


class ArmsInput(InputModel):
    """Which versions an experiment compares, and how traffic is split between them."""

    variants: Variants = Field(
        description=f"1 to {MAX_VARIANTS} distinct version numbers, each a candidate of the prompt"
    )
    weights: Weights | None = Field(
        None,
        description="traffic weights, control first, then each variant in the order "
        f"given: one number from {MIN_WEIGHT:g} to {MAX_WEIGHT:,g} per arm; default: all "
        "equal",
    )

    @field_validator("weights")
    @classmethod
    def _one_per_arm(cls, weights: list[float] | None, info: ValidationInfo) -> list[float] | None:
        variants = info.data.get("variants")
        if weights is not None and variants is not None and len(weights) != len(variants) + 1:
            raise ValueError(
                f"must be a list of {len(variants) + 1} numbers, control "
                f"first, then each variant in order; got {len(weights)}"
            )
        return weights

    def arm_weights(self) -> list[float]:
        return self.weights if self.weights is not None else [1.0] * (len(self.variants) + 1)


class _Prompt(InputModel):
    prompt: str = Field(description="the prompt's name; its active version is the control")


class NewExperiment(ExperimentSettingsInput, ArmsInput, _Prompt):
    """The body of POST /experiments (and the options of `experiments start`)."""


def parse_arms(variants: Any, weights: Any = None) -> tuple[list[int], list[float]]:
    arms = validate(ArmsInput, {"variants": variants, "weights": weights})
    return list(arms.variants), arms.arm_weights()


def parse_guardrails(value: Any) -> tuple[Guardrail, ...]:
    return validate(ExperimentSettingsInput, {"guardrails": value}).settings().guardrails


def parse_settings(**given: Any) -> ExperimentSettings:
    """Settings given as keywords (the names of ExperimentSettingsInput); the built-in
    defaults for the rest."""
    return validate(ExperimentSettingsInput, given).settings()


def parse_stop_reason(value: Any) -> str | None:
    """Why an experiment is stopped by hand: optional text."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"reason must be text; got {shown(value)}", field="reason")
    return refuse_unstorable(value, "reason")


def guardrails_to_json(guardrails: Sequence[Guardrail]) -> str:
    return json.dumps(
        [
            {
                "metric": g.metric,
                "higher_is_better": g.higher_is_better,
                "tolerance": g.tolerance,
                "required": g.required,
                "cap": g.cap,
            }
            for g in guardrails
        ]
    )


def guardrails_from_json(text: str) -> tuple[Guardrail, ...]:
    """The stored list; a row edited by hand into nonsense fails its own check only."""
    try:
        return parse_guardrails(json.loads(text))
    except (ValueError, InvalidInput) as exc:
        raise PromptWorkerError(
            f"stored guardrails are not usable ({exc}); fix the "
            "guardrails column of this experiment or stop it"
        ) from None
