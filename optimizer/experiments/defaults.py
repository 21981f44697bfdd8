"""A new experiment's settings as an admin gives them (POST /experiments, an
experiment_creation job, `prompt-worker experiments start`), completed with the service's
defaults. One place, so every way of starting an experiment gets the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optimizer.config import Settings
from optimizer.experiments.validation import (
    SETTING_FIELDS,
    ExperimentSettings,
    ExperimentSettingsInput,
)
from optimizer.input_models import validate

__all__ = ["SETTING_FIELDS", "settings_with_defaults"]


def settings_with_defaults(
    given: Mapping[str, Any] | ExperimentSettingsInput, service: Settings
) -> ExperimentSettings:
    """The settings in `given` (a validated model, or a mapping whose keys other than
    SETTING_FIELDS are ignored here), validated. Confidence and the minimum per arm default to
    PROMOTION_CONFIDENCE and MIN_CONVERSATIONS_PER_ARM; the rest to the model's defaults."""
    if not isinstance(given, ExperimentSettingsInput):
        given = validate(
            ExperimentSettingsInput, {key: given[key] for key in SETTING_FIELDS if key in given}
        )
    return given.settings(
        confidence=service.promotion_confidence,
        min_conversations_per_arm=service.min_conversations_per_arm,
    )
