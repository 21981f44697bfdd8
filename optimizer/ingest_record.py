"""The conversation record: one pydantic model that ingest validates every record with (HTTP
body, batch item or JSONL line) and that the OpenAPI document shows.

A record holds exactly these fields (`null` counts as absent):

    prompt, version, unit_id            required: prompt name, its version number, the unit
    experiment_id                       optional: the experiment `resolve` reported
    each metric's name                  optional: true/false (a proportion) or a number in
                                        the metric's bounds (see optimizer.stats.metrics)
    input_tokens, output_tokens (whole, 0..bound), segment (<= 200 chars),
    tags (<= 50 strings of <= 100 chars), transcript (<= 100,000 chars),
    messages (the structured transcript, below),
    occurred_at (ISO 8601, at most FUTURE_TOLERANCE ahead; default now)  optional

`messages` is a list of at most MAX_MESSAGES {"role", "content"} objects: role one of
optimizer.conversation_turns.ROLES, content a string, or Anthropic's list of text blocks
({"type": "text", "text": ...}), joined into one string here so that what is stored is
always a string; the contents hold at most MAX_MESSAGES_CHARS characters in all, the
transcript's limit. An empty list counts as absent (stored as NULL, so replay falls back to
the text transcript). A message or a block with another key is refused, as a record is,
except the two keys Anthropic's text blocks may carry beside their text (BLOCK_METADATA).

`problems` turns a record's validation error into one problem per bad field, in the words
of the shared adapter (optimizer.input_models), so a batch reports every bad field of
every row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    model_validator,
)

from optimizer.clock import iso, utcnow
from optimizer.conversation_turns import ROLES
from optimizer.errors import InvalidInput
from optimizer.input_models import InputModel, MustBe, describe_error, one_of, plus_zero
from optimizer.prompt_text import MAX_NAME_CHARS
from optimizer.resolve import MAX_UNIT_ID
from optimizer.stats import REGISTRY, Metric
from optimizer.text_input import MAX_ID, kind_of, parse_timestamp, shown, text_problem, unstorable

MAX_SEGMENT = 200
MAX_TAGS, MAX_TAG = 50, 100
MAX_TRANSCRIPT = 100_000
MAX_MESSAGES = 500
# The structured transcript holds as much text as the text one may: the same conversation.
MAX_MESSAGES_CHARS = MAX_TRANSCRIPT
# Keys an Anthropic text block may carry beside "type" and "text": how to cache or cite it,
# not words of the conversation. Dropped, so messages sent to Claude can be logged as they are.
BLOCK_METADATA = ("cache_control", "citations")
# Between the texts of a message's blocks: a user's blocks (a document, then a question)
# run together otherwise.
BLOCK_SEPARATOR = "\n\n"
MAX_INT32 = 2**31 - 1
# The metrics' bounds are in the registry (optimizer.stats.metrics), and the checks treat
# stored values outside them as missing: a larger value is a unit mistake or a broken
# client, and one such row would swamp every sum a check takes.
MAX_TOKENS = 10_000_000
# How far past the server's clock occurred_at may be: clocks drift a little; a time further
# ahead is a wrong clock or time zone. Far in the past is fine (imports of history).
FUTURE_TOLERANCE = timedelta(minutes=5)
# The validation context key that holds the server's time (for occurred_at).
NOW = "now"


def _text(max_chars: int, *, allow_blank: bool = False) -> Callable[[str], str]:
    """Non-blank (unless allowed), at most `max_chars`, storable. The length is checked here,
    not by pydantic: its own length check fails on a lone surrogate before this one runs."""

    def check(value: str) -> str:
        problem = text_problem(value, max_chars, allow_blank=allow_blank)
        if problem is not None:
            raise ValueError(problem)
        return value

    return check


def _text_field(max_chars: int, *, allow_blank: bool = False) -> Any:
    shape: dict[str, Any] = {"type": "string", "maxLength": max_chars}
    if not allow_blank:
        shape["minLength"] = 1
    return Annotated[
        str, AfterValidator(_text(max_chars, allow_blank=allow_blank)), WithJsonSchema(shape)
    ]


def _occurred_at(value: Any, info: ValidationInfo) -> datetime:
    """ISO 8601 text (no offset means UTC), at most FUTURE_TOLERANCE after the server's time
    (the context's `now`)."""
    now = (info.context or {}).get(NOW) or utcnow()
    try:
        when = parse_timestamp(value, "occurred_at")
    except InvalidInput:
        raise ValueError(
            f"must be an ISO 8601 date-time such as 2026-11-22T09:00:00Z; got {shown(value)}"
        ) from None
    if when > now + FUTURE_TOLERANCE:
        minutes = FUTURE_TOLERANCE.total_seconds() / 60
        raise ValueError(
            f"is {iso(when)}, more than {minutes:g} minutes after the server's time "
            f"{iso(now)}; send when the conversation happened, in UTC or with its offset"
        )
    return when


def _metric_field(m: Metric) -> tuple[Any, Any]:
    """What a record may hold for the metric: true/false for a proportion, else a number
    within its bounds (a whole one where the metric says so)."""
    if m.kind == "proportion":
        return bool | None, Field(None, description=m.description)
    low, high = m.bounds
    if m.whole:
        must = MustBe(f"{low:g}..{high:g} (a whole number)")
        return Annotated[int | None, must], Field(
            None, ge=int(low), le=int(high), description=m.description
        )
    shown_high = f"{high:,.0f}" if high.is_integer() else f"{high:,}"
    must = MustBe(f"a finite number from {low:g} to {shown_high} {m.bound_note}".rstrip())
    return Annotated[float | None, must, AfterValidator(plus_zero)], Field(
        None, ge=low, le=high, description=m.description
    )


_TEXT_BLOCK = '{"type": "text", "text": "..."}'


def message_content(value: Any) -> str:
    """A message's content as stored: a string as it is, a list of text blocks joined."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        text = BLOCK_SEPARATOR.join(
            words for at, block in enumerate(value) if (words := _block_text(block, at))
        )
    else:
        raise ValueError(
            f"must be a string (or a list of text blocks {_TEXT_BLOCK}); got {kind_of(value)}"
        )
    problem = unstorable(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _block_text(block: Any, at: int) -> str:
    if not isinstance(block, dict):
        raise ValueError(
            f"holds {kind_of(block)} at [{at}]; a list may hold only text blocks "
            f"{_TEXT_BLOCK}, or send the text as a string"
        )
    kind = block.get("type")
    if kind != "text":
        raise ValueError(
            f"holds a block of type {shown(kind)} at [{at}]; only text is stored: send "
            "the text as a string (a tool's result as a message of role 'tool')"
        )
    for key in block:
        if key not in ("type", "text", *BLOCK_METADATA):
            raise ValueError(
                f"holds a text block with the unknown key {shown(key)} at [{at}]; allowed: "
                f"type, text, {', '.join(BLOCK_METADATA)}"
            )
    text = block.get("text")
    if not isinstance(text, str):
        raise ValueError(
            f"holds a text block at [{at}] whose text is not a string; got {kind_of(text)}"
        )
    return text


class ConversationMessage(InputModel):
    """One turn of the structured transcript."""

    role: Annotated[
        str, PlainValidator(one_of(ROLES)), WithJsonSchema({"type": "string", "enum": list(ROLES)})
    ]
    content: Annotated[
        str,
        PlainValidator(message_content),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "type": {"const": "text"},
                                "text": {"type": "string"},
                                **{key: {} for key in BLOCK_METADATA},
                            },
                            "required": ["type", "text"],
                            "additionalProperties": False,
                        },
                    },
                ],
                "description": "a string, or Anthropic's text blocks (joined with a blank "
                f"line; {' and '.join(BLOCK_METADATA)} ignored)",
            }
        ),
    ]


def _messages(messages: list[ConversationMessage]) -> list[ConversationMessage]:
    total = sum(len(message.content) for message in messages)
    if total > MAX_MESSAGES_CHARS:
        raise ValueError(
            f"hold {total:,} characters of content in all; at most {MAX_MESSAGES_CHARS:,} "
            "(as a transcript)"
        )
    return messages


def stored_messages(messages: Sequence[ConversationMessage] | None) -> str | None:
    """The column's JSON text: [{"role", "content"}, ...] with string contents; NULL for none
    (an empty list too: replay then reads the text transcript)."""
    if not messages:
        return None
    return json.dumps(
        [{"role": message.role, "content": message.content} for message in messages],
        ensure_ascii=False,
        separators=(",", ":"),
    )


_TOKENS = MustBe(f"a whole number from 0 to {MAX_TOKENS:,}")
_FIELDS: dict[str, Any] = {
    "prompt": (
        _text_field(MAX_NAME_CHARS),
        Field(description="the prompt's name"),
    ),
    "version": (
        Annotated[int, MustBe("the prompt's version number (a whole number >= 1)")],
        Field(ge=1, le=MAX_INT32, description="the version used (the version resolve returned)"),
    ),
    "unit_id": (
        _text_field(MAX_UNIT_ID),
        Field(description="the user or session id, non-blank"),
    ),
    "experiment_id": (
        Annotated[int | None, MustBe("a positive id")],
        Field(None, ge=1, le=MAX_ID, description="the experiment_id resolve returned"),
    ),
    **{m.name: _metric_field(m) for m in REGISTRY},
    "input_tokens": (Annotated[int | None, _TOKENS], Field(None, ge=0, le=MAX_TOKENS)),
    "output_tokens": (Annotated[int | None, _TOKENS], Field(None, ge=0, le=MAX_TOKENS)),
    "segment": (
        _text_field(MAX_SEGMENT) | None,
        Field(None, description="a segment of users, non-blank"),
    ),
    "tags": (
        list[_text_field(MAX_TAG)] | None,  # type: ignore[misc]  # built at run time
        Field(
            None,
            max_length=MAX_TAGS,
            description=f"non-blank strings of at most {MAX_TAG} characters",
        ),
    ),
    "transcript": (
        _text_field(MAX_TRANSCRIPT, allow_blank=True) | None,
        Field(None, description="the conversation"),
    ),
    "messages": (
        Annotated[list[ConversationMessage], AfterValidator(_messages)] | None,
        Field(
            None,
            max_length=MAX_MESSAGES,
            description=f"the conversation as turns, at most {MAX_MESSAGES}, with at most "
            f"{MAX_MESSAGES_CHARS:,} characters of content in all; an empty list counts as "
            "absent",
        ),
    ),
    "occurred_at": (
        Annotated[
            datetime | None, PlainValidator(_occurred_at, json_schema_input_type=datetime | None)
        ],
        Field(
            None,
            description="ISO 8601 (no offset means UTC), at most "
            f"{FUTURE_TOLERANCE.total_seconds() / 60:g} minutes after the server's clock; "
            "default: when the request is received",
        ),
    ),
}


class _Record(InputModel):
    """Null counts as absent: a required field sent as null is missing, an optional one keeps
    its default. An unknown field is refused whatever its value, null included."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and None in data.values():
            return {
                name: value
                for name, value in data.items()
                if value is not None or name not in cls.model_fields
            }
        return data


ConversationRecord: type[InputModel] = create_model(
    "ConversationRecord",
    __base__=_Record,
    __doc__="One conversation the application logged; null counts as absent.",
    **_FIELDS,
)
FIELDS: tuple[str, ...] = tuple(ConversationRecord.model_fields)


def problems(exc: ValidationError) -> dict[str, str]:
    """Each bad field of a record and its problem (the first, for a list such as tags),
    worded to follow "<field>: "."""
    found: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        name = str(loc[0]) if loc else ""
        if name in found:
            continue
        path, message = describe_error(error, ConversationRecord)
        # "rating must be ..." loses its subject; "unknown field 'x'" and "tags[2] ..." keep it.
        named = path == name and error["type"] != "extra_forbidden"
        found[name] = message.removeprefix(f"{path} ") if named else message
    return found
