"""Validation of new jobs (HTTP/CLI input), their payloads checked against the job type's
spec, and decoding of stored payloads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from optimizer.errors import InvalidInput, PermanentJobError
from optimizer.jobs.registry import JOB_TYPES, SPECS
from optimizer.runtime.job_input import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    decode_stored_payload,
    parse_new_job,
)
from optimizer.runtime.queue import NewJob
from optimizer.text_input import parse_timestamp

# A type whose payload may be empty, for the checks that are not about the payload.
ANY_TYPE = "experiment_monitoring"


# A valid value of each field some type requires.
REQUIRED_VALUES: dict[str, object] = {"prompt": "support-bot", "versions": [2]}


def minimal_payload(job_type: str) -> dict[str, object]:
    """The smallest valid payload of a type: its required fields."""
    required = [
        name for name, info in SPECS[job_type].payload.model_fields.items() if info.is_required()
    ]
    assert set(required) <= set(REQUIRED_VALUES), required
    return {name: REQUIRED_VALUES[name] for name in required}


def rejected(field: str, **kwargs: object) -> InvalidInput:
    kwargs.setdefault("type_", ANY_TYPE)
    type_ = kwargs.pop("type_")
    with pytest.raises(InvalidInput) as info:
        parse_new_job(type_, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)
    return info.value


# --- type ------------------------------------------------------------------------------


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_every_job_type_is_accepted(job_type):
    payload = minimal_payload(job_type)
    assert parse_new_job(job_type, payload=payload) == NewJob(type=job_type, payload=payload)


@pytest.mark.parametrize(
    "job_type", ["", "FULL_CYCLE", "full-cycle", "cleanup", None, 3, ["full_cycle"]]
)
def test_unknown_type_is_rejected(job_type):
    err = rejected("type", type_=job_type)
    assert "full_cycle" in str(err)  # the message lists the valid choices


# --- priority --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (0, 0),
        (MIN_PRIORITY, MIN_PRIORITY),
        (MAX_PRIORITY, MAX_PRIORITY),
        (-7, -7),
        ("12", 12),
        (" -3 ", -3),
        (None, 0),
    ],
)
def test_priority_accepted(given, expected):
    assert parse_new_job(ANY_TYPE, priority=given).priority == expected


@pytest.mark.parametrize("given", [MIN_PRIORITY - 1, MAX_PRIORITY + 1, "1001", 10**9])
def test_priority_out_of_bounds(given):
    err = rejected("priority", priority=given)
    assert str(MIN_PRIORITY) in str(err) and str(MAX_PRIORITY) in str(err)


@pytest.mark.parametrize(
    "given", [True, False, 1.5, 2.0, "high", "", "1e3", "\uff15", "1_000", [1], {"p": 1}]
)
def test_priority_must_be_a_whole_number(given):
    err = rejected("priority", priority=given)
    assert "whole number" in str(err)


def test_long_priority_text_is_shortened_in_the_message():
    err = rejected("priority", priority="x" * 5000)
    assert len(str(err)) < 200


# --- run_at ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T09:00:00Z",
        "2026-11-22T09:00:00z",
        "2026-11-22T10:00:00+01:00",
        "2026-11-22T04:00:00-05:00",
        "2026-11-22T09:00:00",  # naive: taken as UTC
        "2026-11-22 09:00:00",
        " 2026-11-22T09:00:00.000Z ",
    ],
)
def test_run_at_is_normalised_to_utc(text):
    job = parse_new_job(ANY_TYPE, run_at=text)
    assert job.run_at == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert job.run_at is not None and job.run_at.utcoffset().total_seconds() == 0


def test_run_at_absent_means_now():
    assert parse_new_job(ANY_TYPE).run_at is None


@pytest.mark.parametrize(
    "text",
    ["tomorrow", "2026-13-01T00:00:00Z", "2026-11-22T25:00", "", "Z", "0001-01-01T00:00:00+01:00"],
)
def test_bad_run_at_is_rejected(text):
    err = rejected("run_at", run_at=text)
    assert "ISO 8601" in str(err)


@pytest.mark.parametrize("value", [1764000000, 1.5, ["2026-11-22"], {"at": "x"}, True])
def test_run_at_must_be_a_string(value):
    rejected("run_at", run_at=value)


def test_parse_timestamp_names_the_field():
    with pytest.raises(InvalidInput) as info:
        parse_timestamp("nope", "since")
    assert info.value.field == "since"


# Python's fromisoformat stops at a NUL and would take what came before it.
@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01T00:00:00\x00",
        "2026-01-01T00:00:00\x00junk",
        "2026-01-01\x1bT00:00:00",
        "2026-01-01T00:00:00\ud800",
    ],
)
def test_parse_timestamp_refuses_control_characters_and_surrogates(value):
    with pytest.raises(InvalidInput) as info:
        parse_timestamp(value, "occurred_at")
    assert info.value.field == "occurred_at"


# --- payload and prompt ----------------------------------------------------------------


def test_payload_as_json_text():
    job = parse_new_job("full_cycle", payload='{"prompt": "support", "n": 5}')
    assert job.payload == {"prompt": "support", "n": 5}


def test_payload_as_object():
    given = {"prompt": "support", "guardrails": [{"metric": "rating", "tolerance": 0.1}]}
    assert parse_new_job("experiment_creation", payload=given).payload == given


def test_payload_absent_is_empty_object():
    assert parse_new_job(ANY_TYPE, payload=None).payload == {}


def test_what_is_stored_is_what_was_sent_without_defaults():
    # The handler applies the defaults when it runs: a later default change reaches queued jobs.
    job = parse_new_job("variant_generation", payload={"prompt": "support", "scope": "x"})
    assert job.payload == {"prompt": "support", "scope": "x"}


@pytest.mark.parametrize(
    ("job_type", "payload", "field", "words"),
    [
        (
            "variant_generation",
            {"prompt": "support", "n": 99},
            "payload.n",
            "payload.n must be from 1 to 10; got 99",
        ),
        ("variant_generation", {"n": 2}, "payload.prompt", "payload.prompt is required"),
        (
            "variant_generation",
            {"prompt": "support", "model": "two words"},
            "payload.model",
            "'sonnet' or 'opus' or a full model id",
        ),
        (
            "variant_generation",
            {"prompt": "support", "insight_ids": [0]},
            "payload.insight_ids[0]",
            "at least 1",
        ),
        (
            "full_cycle",
            {"prompt": "support", "always_generate": "yes"},
            "payload.always_generate",
            "true or false",
        ),
        (
            "full_cycle",
            {"prompt": "support", "colour": 1},
            "payload.colour",
            "unknown field 'colour' in payload; allowed: prompt, model, n, always_generate, scope",
        ),
        (
            "pattern_analysis",
            {"prompt": "two words"},
            "payload.prompt",
            "letters, digits, '.', '_' or '-'",
        ),
        (
            "experiment_creation",
            {"prompt": "support", "confidence": 2},
            "payload.confidence",
            "from 0.5 to 0.9999",
        ),
        (
            "experiment_creation",
            {"prompt": "support", "variants": [2], "weights": [1]},
            "payload.weights",
            "2 numbers, control first",
        ),
        (
            "experiment_creation",
            {"prompt": "support", "guardrails": [{"metric": "mood"}]},
            "payload.guardrails[0].metric",
            "one of",
        ),
        (
            "experiment_monitoring",
            {"prompt": "support"},
            "payload.prompt",
            "unknown field 'prompt' in payload; allowed: scope",
        ),
    ],
)
def test_the_payload_is_checked_against_its_type(job_type, payload, field, words):
    with pytest.raises(InvalidInput) as info:
        parse_new_job(job_type, payload=payload)
    assert info.value.field == field
    assert words in str(info.value)


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_every_type_accepts_the_scope_the_scheduler_adds(job_type):
    payload = {**minimal_payload(job_type), "scope": {"any": ["value"]}}
    assert parse_new_job(job_type, payload=payload).payload == payload


@pytest.mark.parametrize("payload", ["[1, 2]", [1, 2], '"text"', "42", "null", 42])
def test_payload_must_be_an_object(payload):
    err = rejected("payload", payload=payload)
    assert "object" in str(err)


@pytest.mark.parametrize(
    "payload",
    [
        "{not json",
        '{"a": 1',
        "",
        '{"a": NaN}',
        {"a": float("nan")},
        {"a": float("inf")},
        "[" * 100 + "]" * 100,
    ],
)
def test_invalid_payload_is_rejected(payload):
    rejected("payload", payload=payload)


def test_prompt_is_added_to_payload():
    job = parse_new_job("pattern_analysis", prompt="  support-bot  ", payload={"scope": 3})
    assert job.payload == {"scope": 3, "prompt": "support-bot"}


def test_the_prompt_shortcut_fills_a_required_field():
    job = parse_new_job("variant_generation", prompt="support-bot")
    assert job.payload == {"prompt": "support-bot"}


def test_prompt_overrides_payload_prompt():
    job = parse_new_job("pattern_analysis", prompt="b", payload='{"prompt": "a"}')
    assert job.payload == {"prompt": "b"}


def test_prompt_does_not_mutate_caller_payload():
    given = {"scope": 3}
    parse_new_job("pattern_analysis", prompt="x", payload=given)
    assert given == {"scope": 3}


@pytest.mark.parametrize("prompt", ["", "   ", "x" * 201, 5, ["a"], "two words", "bot/1"])
def test_bad_prompt_is_rejected(prompt):
    rejected("prompt", type_="pattern_analysis", prompt=prompt)


def test_first_problem_reported_is_the_type():
    rejected("type", type_="nope", priority="bad", payload="[")


# --- stored payloads -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "   \n"])
def test_empty_stored_payload_is_empty_object(raw):
    assert decode_stored_payload(raw) == {}


def test_stored_object_is_decoded():
    assert decode_stored_payload('{"prompt": "support"}') == {"prompt": "support"}


@pytest.mark.parametrize("raw", ["{not json", '{"prompt": "supp', "{'a': 1}"])
def test_corrupt_or_truncated_payload_is_permanent_error(raw):
    with pytest.raises(PermanentJobError, match="not valid JSON"):
        decode_stored_payload(raw)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [("[1, 2]", "an array"), ('"x"', "a string"), ("7", "a number"), ("null", "null")],
)
def test_non_object_payload_is_permanent_error(raw, kind):
    with pytest.raises(PermanentJobError, match=f"JSON object, got {kind}"):
        decode_stored_payload(raw)


def test_unreadable_payload_is_permanent_error_not_crash():
    with pytest.raises(PermanentJobError):
        decode_stored_payload("[" * 200_000 + "]" * 200_000)
    with pytest.raises(PermanentJobError):
        decode_stored_payload('{"n": ' + "9" * 100_000 + "}")
