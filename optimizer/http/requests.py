"""The request models of the HTTP API: one per body and one per query string, validated once
(optimizer.http.body) and read by the OpenAPI document. The body of POST /experiments is
optimizer.experiments.validation.NewExperiment, shared with the CLI.

A model checks the request's shape (which fields, of which JSON types); a value whose rule
belongs to the domain (a prompt's name, a job's payload per type, a unit id) is checked by
the domain's own function, here through `rule` so the message is the one the CLI gives.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    WithJsonSchema,
)

from models.experiments import EXPERIMENT_STATUSES
from models.jobs import JOB_STATUSES
from optimizer import ingest
from optimizer.ingest_record import ConversationRecord
from optimizer.input_models import InputModel, one_of, rule
from optimizer.jobs.registry import JOB_TYPES, SPECS
from optimizer.patterns import views
from optimizer.prompt_text import MAX_CONTENT_CHARS, MAX_NOTES_CHARS, NAME_RE, NAME_RULE
from optimizer.prompts import MAX_REASON_CHARS, MAX_VERSION
from optimizer.resolve import check_unit_id
from optimizer.runtime.job_input import MAX_PRIORITY, MIN_PRIORITY, parse_new_job
from optimizer.runtime.queue import NewJob
from optimizer.text_input import MAX_ID, parse_whole

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
DEFAULT_ROLLBACK_REASON = "rollback via the admin API"


class Query(InputModel):
    """A query string: every value arrives as text."""

    noun: ClassVar[str] = "query parameter"


def _limit(default: int) -> Any:
    """`limit`: a whole number typed as text, 1 to MAX_LIMIT."""
    return Field(default, ge=1, le=MAX_LIMIT, description=f"at most this many (default {default})")


Limit = Annotated[int, BeforeValidator(rule(lambda raw: parse_whole(raw, "limit", 1, MAX_LIMIT)))]


# --- jobs ------------------------------------------------------------------------------------


def _as_sent(value: Any) -> Any:
    return value


# The schema of `payload`: any job type's payload model (the OpenAPI document ties each to
# its `type`), or the same as JSON text; parse_new_job checks it against the type's model.
_PAYLOADS: Any = Union[  # noqa: UP007 - a Union built from a run-time tuple
    tuple(spec.payload for spec in SPECS.values())
]


class NewJobBody(InputModel):
    """The body of POST /jobs. The values are checked by runtime.job_input.parse_new_job,
    which the CLI uses too; the payload against the job type's payload model."""

    type: str = Field(
        description=f"the job type: one of {', '.join(JOB_TYPES)}",
        json_schema_extra={"enum": list(JOB_TYPES)},
    )
    prompt: str | None = Field(
        None, description='a shortcut that puts {"prompt": NAME} into the payload'
    )
    payload: Annotated[
        Any,
        PlainValidator(
            _as_sent,
            json_schema_input_type=_PAYLOADS
            | Annotated[str, Field(description="the payload as the JSON text of an object")]
            | None,
        ),
    ] = Field(
        None, description="the job type's payload (see the schema named after the type); default {}"
    )
    priority: Annotated[
        Any,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
                    {"type": "string", "pattern": r"^\s*-?[0-9]{1,6}\s*$"},
                    {"type": "null"},
                ],
                "default": 0,
                "description": f"a whole number from {MIN_PRIORITY} to {MAX_PRIORITY} "
                "(or its text); higher runs first",
            }
        ),
    ] = 0
    run_at: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description="ISO 8601; without an offset it is UTC; the job "
        "does not run before it (default: now)",
    )

    def new_job(self) -> NewJob:
        return parse_new_job(
            self.type,
            prompt=self.prompt,
            payload=self.payload,
            priority=self.priority,
            run_at=self.run_at,
        )


def _enum(values: tuple[str, ...]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "enum": list(values)})


class JobListQuery(Query):
    status: Annotated[str, AfterValidator(one_of(JOB_STATUSES)), _enum(JOB_STATUSES)] | None = (
        Field(None, description="only jobs in this status")
    )
    type: Annotated[str, AfterValidator(one_of(JOB_TYPES)), _enum(JOB_TYPES)] | None = Field(
        None, description="only jobs of this type"
    )
    limit: Limit = _limit(DEFAULT_LIMIT)


# --- prompts ---------------------------------------------------------------------------------

_NAME: dict[str, Any] = {"pattern": f"^{NAME_RE.pattern}$"}
ChangeNotes = Annotated[
    str | None,
    Field(
        description=f"at most {MAX_NOTES_CHARS:,} characters",
        json_schema_extra={"maxLength": MAX_NOTES_CHARS},
    ),
]


class NewPromptBody(InputModel):
    """The body of POST /prompts. optimizer.prompts checks the values (as for the CLI)."""

    name: str = Field(description=f"the prompt's name: {NAME_RULE}", json_schema_extra=_NAME)
    content: str = Field(
        description=f"the text of version 1: non-blank, at most {MAX_CONTENT_CHARS:,} characters",
        json_schema_extra={"maxLength": MAX_CONTENT_CHARS},
    )
    change_notes: ChangeNotes = None


class NewVersionBody(InputModel):
    """The body of POST /prompts/{name}/versions."""

    content: str = Field(
        description=f"the text of the new version: non-blank, at most "
        f"{MAX_CONTENT_CHARS:,} characters, unlike every other version's",
        json_schema_extra={"maxLength": MAX_CONTENT_CHARS},
    )
    change_notes: ChangeNotes = None


class RollbackBody(InputModel):
    """The body of POST /prompts/{name}/rollback."""

    version: int = Field(
        ge=1, le=MAX_VERSION, description="the version number to make active again"
    )
    reason: str = Field(
        DEFAULT_ROLLBACK_REASON,
        description=f"why, recorded with the "
        f"change: non-blank, at most {MAX_REASON_CHARS:,} characters",
        json_schema_extra={"maxLength": MAX_REASON_CHARS},
    )


class NoQuery(Query):
    """A route that takes no query parameter: any is refused, so a misspelt filter is not
    silently ignored."""


# --- experiments -----------------------------------------------------------------------------


class ExperimentListQuery(Query):
    status: (
        Annotated[str, AfterValidator(one_of(EXPERIMENT_STATUSES)), _enum(EXPERIMENT_STATUSES)]
        | None
    ) = Field(None, description="only experiments in this status")
    prompt: str | None = Field(None, description="only this prompt's experiments")
    limit: Limit = _limit(DEFAULT_LIMIT)


class AnalysisListQuery(Query):
    after: Annotated[
        int, BeforeValidator(rule(lambda raw: parse_whole(raw, "after", 0, MAX_ID)))
    ] = Field(0, description="only checks with a larger id: the `next_after` of the last page")
    limit: Limit = _limit(DEFAULT_LIMIT)


class StopBody(InputModel):
    """The body of POST /experiments/{id}/stop (or no body at all)."""

    reason: str | None = Field(None, description="why, recorded with the experiment")


# --- insights --------------------------------------------------------------------------------


class InsightListQuery(Query):
    prompt: Annotated[str, AfterValidator(rule(views.parse_prompt))] | None = Field(
        None, description="only this prompt's insights (an unknown prompt answers 404)"
    )
    actionable: Annotated[bool, BeforeValidator(rule(views.parse_actionable))] | None = Field(
        None, description="only insights that are (true) or are not (false) actionable"
    )
    kind: Annotated[str, AfterValidator(rule(views.parse_kind)), _enum(views.KINDS)] | None = Field(
        None, description="only insights of this kind"
    )
    limit: Annotated[int, BeforeValidator(rule(views.parse_limit))] = Field(
        views.DEFAULT_LIMIT,
        ge=1,
        le=views.MAX_LIMIT,
        description=f"at most this many (default {views.DEFAULT_LIMIT})",
    )


# --- application API -------------------------------------------------------------------------


class ResolveQuery(Query):
    unit_id: Annotated[str, AfterValidator(rule(check_unit_id))] = Field(
        description="the user or session id: non-blank, at most 200 characters"
    )


# --- conversations ---------------------------------------------------------------------------
# ConversationRecord (optimizer.ingest_record) is what ingest validates each record with;
# ingest reads the body itself, to report every bad field of every row at once.


class ConversationBatch(BaseModel):
    """Up to 1,000 records, stored all or nothing."""

    model_config = ConfigDict(extra="forbid")

    conversations: list[ConversationRecord] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=ingest.MAX_BATCH
    )


class ConversationsBody(RootModel[ConversationRecord | ConversationBatch]):  # type: ignore[valid-type]
    """One record, or a batch of them."""
