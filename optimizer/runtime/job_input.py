"""Validation of a new job as an admin describes it (HTTP body or CLI flags): its type and
payload are checked against the job type's spec before anything is stored."""

from __future__ import annotations

import json
import re
from typing import Any

from optimizer import strict_json
from optimizer.errors import InvalidInput, PermanentJobError
from optimizer.jobs.registry import JOB_TYPES, check_payload
from optimizer.prompt_text import MAX_NAME_CHARS, validate_name
from optimizer.runtime.queue import NewJob
from optimizer.text_input import (
    check_text,
    first_unstorable,
    kind_of,
    parse_timestamp,
    refuse_unstorable_in,
)
from optimizer.text_input import shown as shown_value

MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
_PRIORITY_TEXT = re.compile(r"-?[0-9]{1,6}")  # ASCII digits only: int() accepts more
# A payload holds a few small fields; the HTTP API cannot send one past MAX_BODY_BYTES
# (1 MiB by default). A row written by hand may hold anything, so the worker caps it too.
MAX_STORED_PAYLOAD_CHARS = 1_048_576


def parse_job_type(value: Any) -> str:
    if not isinstance(value, str) or value not in JOB_TYPES:
        raise InvalidInput(
            f"type must be one of {', '.join(JOB_TYPES)}; got {shown_value(value)}", field="type"
        )
    return value


def parse_priority(value: Any) -> int:
    if isinstance(value, str) and _PRIORITY_TEXT.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(
            f"priority must be a whole number; got {shown_value(value)}", field="priority"
        )
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidInput(
            f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}; got {shown_value(value)}",
            field="priority",
        )
    return value


def parse_payload_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        if isinstance(value, str):
            value = strict_json.loads(value)
        else:
            strict_json.check(value)
    except strict_json.JsonRejected as exc:
        raise InvalidInput(f"payload is {exc}", field="payload") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"payload must be a JSON object; got {kind_of(value)}", field="payload")
    refuse_unstorable_in(value, "payload")
    return value


def parse_prompt_name(value: Any) -> str:
    """The `prompt` shortcut, checked under its own name before it joins the payload."""
    return validate_name(check_text(value, "prompt", MAX_NAME_CHARS).strip(), field="prompt")


def parse_new_job(
    type_: Any, *, prompt: Any = None, payload: Any = None, priority: Any = 0, run_at: Any = None
) -> NewJob:
    job_type = parse_job_type(type_)
    body = parse_payload_object(payload)
    if prompt is not None:
        body = {**body, "prompt": parse_prompt_name(prompt)}
    # What is stored is what was sent: the handler applies the defaults when it runs.
    check_payload(job_type, body)
    return NewJob(
        type=job_type,
        payload=body,
        priority=parse_priority(priority if priority is not None else 0),
        run_at=parse_timestamp(run_at, "run_at") if run_at is not None else None,
    )


def decode_stored_payload(raw: str | None) -> dict[str, Any]:
    """The payload column as the worker reads it; a row written by hand may be anything."""
    if raw is None or raw.strip() == "":
        return {}
    if len(raw) > MAX_STORED_PAYLOAD_CHARS:
        raise PermanentJobError(
            f"payload is too large: {len(raw):,} characters, at most "
            f"{MAX_STORED_PAYLOAD_CHARS:,}; a job payload holds a few small fields, fix the "
            "row or insert a new job with a small JSON object payload"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PermanentJobError(
            f"payload is not valid JSON ({exc}); "
            "fix the row or insert a new job with a JSON object payload"
        ) from None
    except (ValueError, RecursionError):
        raise PermanentJobError(
            "payload is JSON this worker cannot read (a number too long or nesting too "
            "deep); insert a new job with a plain JSON object payload"
        ) from None
    if not isinstance(value, dict):
        raise PermanentJobError(
            f"payload must be a JSON object, got {kind_of(value)}; "
            "insert a new job with a JSON object payload"
        )
    # Refused here, once for every job type: a handler would otherwise pass the text to the
    # database, whose error looks temporary and would be retried to no end.
    found = first_unstorable(value)
    if found is not None:
        raise PermanentJobError(f"payload field {found[0]} {found[1]}; insert a new job without it")
    return value
