"""Configuration problems: settings that are each valid but leave part of the service off.

The service still starts with them (analysis, experiments and the APIs work), so they are
reported where people look (`/health` "problems", `prompt-worker status`) and the work
they make impossible is not queued. Pure: settings in, problems out; no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optimizer.config import Settings

NO_LLM_KEY = "no_llm_key"
NO_ADMIN_TOKEN = "no_admin_token"
NO_INGEST_TOKEN = "no_ingest_token"


@dataclass(frozen=True)
class Problem:
    code: str  # stable, for dashboards and alerts
    message: str  # what is off and what to set

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def llm_problem(settings: Settings) -> str | None:
    """Why no LLM call can succeed with these settings (so variant generation cannot run),
    or None when the configured provider can answer."""
    if settings.llm_provider == "anthropic" and not settings.anthropic_api_key:
        return (
            "no ANTHROPIC_API_KEY: variant generation is off; set ANTHROPIC_API_KEY, or "
            "LLM_PROVIDER=offline for the demo"
        )
    return None


def configuration_problems(settings: Settings, *, apis: bool = True) -> list[Problem]:
    """`apis=False` leaves out the tokens: `prompt-worker status` runs in a shell whose
    environment need not hold the service's tokens, and it uses neither API."""
    problems = []
    for code, env_name, token, api in (
        (
            NO_ADMIN_TOKEN,
            "ADMIN_TOKEN",
            settings.admin_token,
            "the admin API (/jobs, /prompts, /experiments, /insights)",
        ),
        (NO_INGEST_TOKEN, "INGEST_TOKEN", settings.ingest_token, "the application API (/v1/...)"),
    ):
        if apis and not token:
            problems.append(
                Problem(
                    code,
                    f"{env_name} is not set: {api} answers 503 to every "
                    f"request; set {env_name} to open it",
                )
            )
    if (message := llm_problem(settings)) is not None:
        problems.append(Problem(NO_LLM_KEY, message))
    return problems
