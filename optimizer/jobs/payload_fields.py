"""Payload fields that several job types share."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from optimizer.prompt_text import NAME_RE, name_problem


def _prompt_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


# The pattern is for the JSON schema (docs, OpenAPI); the validator words the error.
PromptName = Annotated[
    str, AfterValidator(_prompt_name), Field(json_schema_extra={"pattern": f"^{NAME_RE.pattern}$"})
]

# The scheduler puts {"scope": "all"} into every job it enqueues. Every payload accepts the
# key with any value so such a payload can be copied into a job of any type.
Scope = Annotated[
    Any, Field(description='a label (the scheduler adds "all"); any value is accepted and ignored')
]
