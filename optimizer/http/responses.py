"""The answers of the HTTP API, as pydantic models used only for the OpenAPI document.

The handlers answer the domain's own `to_dict()` (jobs, prompts, experiments, insights) so
that the CLI prints the same documents; these models describe that shape, and
tests/integration/test_openapi.py validates real answers against the schemas built from
them, so a change to a to_dict() that these do not follow fails there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.experiments import ARM_STATUSES, EXPERIMENT_STATUSES
from models.jobs import JOB_STATUSES
from models.prompts import VERSION_STATUSES
from optimizer.jobs.registry import JOB_TYPES
from optimizer.patterns.views import KINDS


class Answer(BaseModel):
    # Answers may gain keys (the /health contract says so); clients ignore unknown ones.
    model_config = ConfigDict(extra="allow")


def _enum(values: tuple[str, ...]) -> Any:
    return Field(json_schema_extra={"enum": list(values)})


class Error(Answer):
    """Every error: what is wrong and what to do, and the field at fault (or null)."""

    error: str
    field: str | None


class RowProblem(Answer):
    index: int = Field(description="the record's position in the batch, from 0")
    field: str | None
    problem: str


class RowErrors(Error):
    """A batch of conversations with bad records: nothing was stored."""

    errors: list[RowProblem] = Field(
        default_factory=list,
        description="every problem (at "
        "most 100); absent when the body is neither a record "
        "nor a batch",
    )


# --- jobs ------------------------------------------------------------------------------------


class Job(Answer):
    """A job: every column of the optimization_jobs table."""

    id: int
    type: str = _enum(JOB_TYPES)
    status: str = _enum(JOB_STATUSES)
    priority: int
    payload: dict[str, Any] | str = Field(
        description="the payload (text only if a row written by hand holds no valid JSON)"
    )
    result: Any = Field(description="what the handler returned, once completed")
    error: str | None
    attempts: int
    max_attempts: int
    dedupe_key: str | None
    run_after: datetime
    locked_by: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    progress: int
    current_step: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(Answer):
    jobs: list[Job] = Field(description="newest first")


# --- prompts ---------------------------------------------------------------------------------


class Version(Answer):
    number: int
    status: str = _enum(VERSION_STATUSES)
    status_reason: str | None = Field(
        None, description="why it has its status, when something decided it (a replay rejection)"
    )
    content: str
    change_notes: str | None
    parent: int | None = Field(description="the version it was derived from")
    source: str
    created_at: datetime


class Activation(Answer):
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    at: datetime


class PromptSettings(Answer):
    prompt: str
    promotion_mode: Literal["auto", "approve"] | None = Field(
        description="the prompt's own mode; null: it follows PROMOTION_MODE"
    )
    effective_promotion_mode: Literal["auto", "approve"] = Field(
        description="the mode its winners follow now"
    )
    judge_rubric: str | None = Field(description="extra criteria for the replay judge")


class PromptDocument(Answer):
    name: str
    active_version: int | None
    created_at: datetime | None
    versions: list[Version]
    activations: list[Activation] = Field(
        description="every change of the active version, oldest first"
    )
    settings: PromptSettings


class PromptSummary(Answer):
    name: str
    active_version: int | None
    versions_count: int
    created_at: datetime


class PromptList(Answer):
    prompts: list[PromptSummary] = Field(description="by name")


# --- experiments -----------------------------------------------------------------------------


class Arm(Answer):
    id: int
    version: int
    version_id: int
    is_control: bool
    weight: float
    status: str = _enum(ARM_STATUSES)
    stopped_reason: str | None
    conversations: int = Field(description="conversations logged for this arm's version")
    units: int = Field(description="users whose assignment falls in this arm's slice")


class StoredGuardrail(Answer):
    metric: str
    higher_is_better: bool
    tolerance: float
    required: bool
    cap: float | None


class Analysis(Answer):
    id: int
    job_id: int | None = Field(description="the monitoring job that made the check")
    decision: str
    reason: str
    srm_detected: bool
    statistics: Any
    checked_at: datetime


class Experiment(Answer):
    id: int
    prompt: str
    status: str = _enum(EXPERIMENT_STATUSES)
    arms: list[Arm] = Field(description="the control first")
    winner_version: int | None
    decision_reason: str | None
    started_at: datetime
    ended_at: datetime | None
    primary_metric: str
    guardrails: list[StoredGuardrail]
    confidence: float
    min_conversations_per_arm: int
    min_runtime_hours: float
    max_runtime_hours: float
    created_by: str | None
    latest_analysis: Analysis | None


class AnalysisPage(Answer):
    experiment_id: int
    analyses: list[Analysis] = Field(description="oldest first")
    next_after: int | None = Field(
        description="pass as `after` for the next page; null when this page is the last"
    )


class ExperimentList(Answer):
    experiments: list[Experiment] = Field(
        description="newest first; latest_analysis is always null here"
    )


# --- insights --------------------------------------------------------------------------------


class Insight(Answer):
    id: int
    prompt: str
    version: int | None
    kind: str = _enum(KINDS)
    title: str
    detail: str | None
    evidence: dict[str, Any]
    is_actionable: bool
    effect_size: float | None
    occurrences: int
    first_seen_at: datetime
    last_seen_at: datetime


class InsightList(Answer):
    insights: list[Insight] = Field(description="most recently seen first")


# --- application API -------------------------------------------------------------------------


class ResolvedArm(Answer):
    id: int
    role: Literal["control", "variant"]


class Resolved(Answer):
    """Which version of the prompt this unit gets (sticky)."""

    prompt: str
    version: int
    version_id: int
    content: str
    experiment_id: int | None = Field(description="send it with the conversation you log")
    arm: ResolvedArm | None


class Accepted(Answer):
    accepted: int = Field(description="how many conversations were stored")


class ConfigVersion(Answer):
    number: int
    id: int
    content: str


class ConfigArm(Answer):
    id: int
    version: int
    version_id: int
    content: str
    weight: float
    status: str = _enum(ARM_STATUSES)
    role: Literal["control", "variant"]


class ConfigExperiment(Answer):
    id: int
    status: Literal["running", "paused"] = Field(
        description="paused: everyone gets the control arm's version, with no experiment"
    )
    arms: list[ConfigArm] = Field(description="every arm, stopped ones too, ordered by id")


class ConfigPrompt(Answer):
    name: str
    active_version: ConfigVersion | None
    experiment: ConfigExperiment | None = Field(
        description="present while an experiment with an active control arm runs or is paused"
    )


class Hashing(Answer):
    scheme: str = Field(description="the assignment scheme (docs/assignment.md)")
    version: int


class ClientConfig(Answer):
    """What an SDK needs to resolve every prompt locally, exactly as resolve would."""

    hashing: Hashing
    generated_at: datetime
    prompts: list[ConfigPrompt] = Field(description="ordered by name")


# --- probes ----------------------------------------------------------------------------------


class DatabaseReading(Answer):
    ok: bool
    checkedAt: datetime | None  # noqa: N815 - the public /health shape
    error: str | None = Field(description="generic unless the request carries the admin token")


class Problem(Answer):
    code: str
    message: str


class Health(Answer):
    """Liveness: read from memory only; more keys may be added, none renamed."""

    status: Literal["healthy", "degraded"]
    uptime: int = Field(description="seconds since the process started")
    stats: dict[str, int] = Field(description="counters of this process")
    timestamp: datetime
    totals: dict[str, int]
    queue: dict[str, int] = Field(description="jobs per status")
    database: DatabaseReading
    problems: list[Problem] = Field(description="configuration problems")


class Ready(Answer):
    ready: bool
    reason: str | None = Field(None, description="why not, when not ready")
