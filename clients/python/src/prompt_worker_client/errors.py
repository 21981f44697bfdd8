"""The exceptions the SDK raises into the application. An outage of the service is never one
of them: it is logged and counted in `stats` instead."""

from __future__ import annotations

from typing import Literal

NotFoundReason = Literal["unknown_prompt", "no_active_version", "no_config"]


class PromptWorkerClientError(Exception):
    """The root of every exception this SDK raises."""


class PromptNotFound(PromptWorkerClientError, LookupError):
    """get_prompt has no text to give: no fallback for this name, and either the loaded
    configuration does not know the prompt (`unknown_prompt`: a misspelt name, or a prompt
    not created yet), it has no active version (`no_active_version`), or no configuration
    has been loaded yet (`no_config`: a cold start with the service unreachable).
    A fallback for the name turns each of these into an answer."""

    def __init__(self, name: str, reason: NotFoundReason, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.reason: NotFoundReason = reason


class InvalidUnitId(PromptWorkerClientError, ValueError):
    """A unit id the service would refuse (resolve and ingest answer 400 for it): empty,
    blank, longer than 200 characters, or holding a NUL or a lone surrogate."""


class ConfigError(PromptWorkerClientError, ValueError):
    """A configuration document this SDK cannot evaluate (an unknown hashing scheme or
    version, or a malformed document). Never raised into the application: the client logs
    it and keeps serving the last configuration it could evaluate."""
