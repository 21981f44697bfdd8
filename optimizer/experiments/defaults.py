"""A new experiment's settings as an admin gives them (POST /experiments, an
experiment_creation job, `prompt-worker experiments start`), completed with the service's
defaults. One place, so every way of starting an experiment gets the same ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optimizer.config import Settings
from optimizer.experiments.validation import ExperimentSettings, parse_settings

SETTING_FIELDS = ("primary_metric", "guardrails", "confidence", "min_conversations_per_arm",
                  "min_runtime_hours", "max_runtime_hours")


def settings_with_defaults(given: Mapping[str, Any], service: Settings) -> ExperimentSettings:
    """The settings named in `given` (other keys are ignored here), validated. Confidence and
    the minimum per arm default to PROMOTION_CONFIDENCE and MIN_CONVERSATIONS_PER_ARM; the
    rest to `parse_settings`' own defaults."""
    chosen = {key: given[key] for key in SETTING_FIELDS if key in given}
    chosen.setdefault("confidence", service.promotion_confidence)
    chosen.setdefault("min_conversations_per_arm", service.min_conversations_per_arm)
    return parse_settings(**chosen)
