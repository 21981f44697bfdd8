"""The project's exception hierarchy: one root, messages that say what to do."""

from datetime import datetime


class PromptWorkerError(Exception):
    """Root of every error prompt-worker raises on purpose."""


class ConfigError(PromptWorkerError):
    """An environment variable is missing or malformed."""


class InvalidInput(PromptWorkerError):
    """Input from a user (HTTP, CLI, a row written by hand) is not acceptable."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(PromptWorkerError):
    """The thing asked for does not exist."""


class Conflict(PromptWorkerError):
    """The request is valid but clashes with the current state."""


class PermanentJobError(PromptWorkerError):
    """A job failed in a way that retrying cannot fix; it goes straight to `failed`."""


class DatabaseUnavailable(PromptWorkerError):
    """The database could not be reached."""


class JobDeferred(PromptWorkerError):
    """The job cannot run yet (an LLM call limit or the budget is used up): it goes back to
    `pending` until `until`, and the attempt does not count."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until


def describe(exc: BaseException, limit: int = 500) -> str:
    """A failure as one bounded line (for a job's error, a log field, the CLI): our own errors
    by their message, anything else with its type name in front."""
    text = " ".join(str(exc).split())[:limit]
    if isinstance(exc, PromptWorkerError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
