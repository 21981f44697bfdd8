"""Disk/format faults: job rows written by hand in SQL whose payload is not JSON, is cut off,
is JSON but not an object, is absurdly large or deep, or is not what its job type takes, and
rows of a job type that does not exist (the database does not enforce the list: the job
specs do). Each such job fails at once (one attempt, no retry) with an error naming the
problem, and the worker carries on with the good jobs around it."""

from __future__ import annotations

import json

import pytest

from tests.support.replicas import (
    insert_job,
    job,
    replicas,
    seed_prompt,
    statuses,
    url_of,
    wait_until,
)

BAD_PAYLOADS = [
    (
        "not json",
        "experiment_monitoring",
        "not json at all",
        "payload is not valid JSON (Expecting value",
    ),
    (
        "truncated",
        "experiment_monitoring",
        '{"scope": "all", "scheduled_for": "2026-',
        "payload is not valid JSON (Unterminated string",
    ),
    ("array", "experiment_monitoring", "[1, 2, 3]", "payload must be a JSON object, got an array"),
    ("string", "experiment_monitoring", '"run it"', "payload must be a JSON object, got a string"),
    ("number", "experiment_monitoring", "42", "payload must be a JSON object, got a number"),
    ("null", "experiment_monitoring", "null", "payload must be a JSON object"),
    ("too deep", "experiment_monitoring", "[" * 200_000 + "]" * 200_000, "nesting too deep"),
    (
        "number too long",
        "experiment_monitoring",
        '{"n": ' + "9" * 100_000 + "}",
        "a number too long",
    ),
    (
        "absurd size",
        "experiment_monitoring",
        json.dumps({"scope": "x" * (8 * 1024 * 1024)}),
        "payload is too large: 8,388,621 characters",
    ),
    (
        "NUL in a field",
        "full_cycle",
        '{"prompt": "support\\u0000bot"}',
        "payload field prompt contains a NUL character",
    ),
    (
        "NUL in a key",
        "full_cycle",
        '{"prompt": "support-bot", "\\u0000": 1}',
        "is a key that contains a NUL character",
    ),
    (
        "unknown field",
        "full_cycle",
        '{"prompt": "support-bot", "colour": 1}',
        "unknown field 'colour' in payload; allowed: prompt, model, n, always_generate, scope",
    ),
    (
        "field out of range",
        "variant_generation",
        '{"prompt": "support-bot", "n": 99}',
        "payload.n must be from 1 to 10; got 99",
    ),
    (
        "required field missing",
        "experiment_creation",
        '{"variants": [2]}',
        "payload.prompt is required",
    ),
    (
        "unknown job type",
        "cleanup",
        "{}",
        "no handler for job type 'cleanup' in this build of prompt-worker",
    ),
]


@pytest.mark.postgres
def test_corrupt_payload_rows_fail_alone_and_the_worker_goes_on(pg_engine, tmp_path):
    seed_prompt(pg_engine, "support-bot")
    first_good = insert_job(pg_engine, "experiment_monitoring", "{}")
    bad = {
        name: (insert_job(pg_engine, job_type, raw), fragment)
        for name, job_type, raw, fragment in BAD_PAYLOADS
    }
    good = insert_job(pg_engine, "experiment_monitoring", '{"scope": "all"}')

    with replicas(
        url_of(pg_engine), tmp_path, 1, POLL_INTERVAL_SECONDS="0.2", LEASE_SECONDS="5"
    ) as (svc,):
        wait_until(
            lambda: statuses(pg_engine)["pending"] == 0 and statuses(pg_engine)["running"] == 0,
            60,
            "every row to be handled",
        )
        for name, (job_id, fragment) in bad.items():
            row = job(pg_engine, job_id)
            assert (row.status, row.attempts) == ("failed", 1), (name, row.status, row.error)
            assert fragment in (row.error or ""), (name, row.error)
            assert len(row.error or "") < 1000, name  # the error never echoes the payload
        assert job(pg_engine, first_good).status == "completed"
        assert job(pg_engine, good).status == "completed"

        # Still working: a job inserted after all that runs as usual.
        later = insert_job(pg_engine, "experiment_monitoring")
        wait_until(lambda: job(pg_engine, later).status == "completed", 30, "a later job")
        status, health = svc.get_json("/health")
        assert status == 200 and health["status"] == "healthy"
        assert health["stats"]["jobsFailed"] == len(BAD_PAYLOADS)
        assert svc.terminate() == 0
    assert statuses(pg_engine) == {"failed": len(BAD_PAYLOADS), "completed": 3}
    assert "Traceback" not in svc.logs()
