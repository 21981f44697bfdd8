"""LLM faults: the fake Anthropic API answers bursts of 429 (with retry-after) and 529 while
variant_generation and full_cycle jobs run in a real service process.

- The SDK backs off (honouring retry-after) and retries each call LLM_MAX_RETRIES times;
  a 429 left after that defers the job until the server's retry-after (pending, the attempt
  not counted), a 529 on both models fails the attempt and the queue retries it. A 429
  asking for a longer wait than 30 s defers at once instead of sleeping in a worker slot.
  No job is lost: every one ends completed.
- LLM_CALLS_PER_HOUR and LLM_DAILY_BUDGET_USD hold: past them no request reaches the API,
  the jobs wait (pending, run_after in the future), and the error says which limit.

The limit counts calls, one `llm_calls` row each; the SDK's own retries of one call (visible
as extra requests at the fake) are part of that call.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.support.fake_anthropic import Reply
from tests.support.replicas import (
    FakeApi,
    insert_job,
    job,
    llm_calls,
    replicas,
    seed_prompt,
    statuses,
    url_of,
    wait_until,
)

# Generation chains straight to experiment_creation here (no replay gate): these tests
# count the calls of generation alone; tests/integration/test_candidate_replay.py has replay's.
ONE_SLOT = {
    "WORKER_CONCURRENCY": "1",
    "POLL_INTERVAL_SECONDS": "0.2",
    "LEASE_SECONDS": "15",
    "REPLAY_ENABLED": "false",
}


def generation(engine, name: str) -> int:
    seed_prompt(engine, name)
    return insert_job(engine, "variant_generation", {"prompt": name, "n": 1})


def settled(engine) -> bool:
    """Nothing running, and nothing pending that is due."""
    with engine.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT count(*) FROM optimization_jobs WHERE status = 'running' "
                    "OR (status = 'pending' AND run_after <= now())"
                )
            ).scalar_one()
            == 0
        )


@pytest.mark.postgres
def test_bursts_of_429_and_529_back_off_defer_retry_and_lose_nothing(pg_engine, tmp_path):
    first = generation(pg_engine, "bot-one")
    second = generation(pg_engine, "bot-two")
    seed_prompt(pg_engine, "bot-three")
    cycle = insert_job(
        pg_engine, "full_cycle", {"prompt": "bot-three", "always_generate": True, "n": 1}
    )
    limited = Reply.error(429, retry_after="1")
    with FakeApi() as api:
        # One slot, so the calls come in order: the first job's call meets three 429s
        # (the SDK's try and two retries), the second job's meets 529 three times on
        # each model; everything after that succeeds.
        api.script(limited, limited, limited, *[Reply.error(529)] * 6)
        with replicas(
            url_of(pg_engine),
            tmp_path,
            1,
            **api.env(),
            **ONE_SLOT,
            LLM_MAX_RETRIES="2",
            RETRY_BASE_SECONDS="1",
        ) as (svc,):
            wait_until(
                lambda: (
                    statuses(pg_engine).keys() == {"completed"}
                    and statuses(pg_engine)["completed"] == 5
                ),
                90,
                "every job (and the two chained experiment_creation jobs) to complete",
            )

            # A 429 asking for two minutes: deferred at once, no retry held in the slot.
            seen = api.requests
            api.script(Reply.error(429, retry_after="120"))
            later = generation(pg_engine, "bot-four")
            wait_until(
                lambda: (
                    job(pg_engine, later).status == "pending"
                    and job(pg_engine, later).error is not None
                ),
                30,
                "the deferral",
            )
            deferred = job(pg_engine, later)
            now = datetime.now(UTC)
            assert timedelta(seconds=100) < deferred.run_after - now < timedelta(seconds=125)
            assert deferred.attempts == 0 and deferred.locked_by is None
            assert "rate limit" in deferred.error and "429" in deferred.error
            assert api.requests == seen + 1
            # Its time comes (moved forward here): it runs and completes.
            with pg_engine.begin() as conn:
                conn.execute(
                    text("UPDATE optimization_jobs SET run_after = now() WHERE id = :id"),
                    {"id": later},
                )
            wait_until(
                lambda: statuses(pg_engine) == {"completed": 7},
                30,
                "the deferred job (and its experiment_creation) to complete",
            )
            assert svc.terminate() == 0

    assert statuses(pg_engine) == {"completed": 7}
    # The 429s: deferred once, without spending an attempt; the SDK waited the
    # retry-after (1 s) between its tries.
    assert job(pg_engine, first).attempts == 1
    gaps = [b - a for a, b in zip(api.arrivals[0:2], api.arrivals[1:3], strict=True)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    # The 529s: fell back to the other model, then the attempt failed and was retried.
    assert job(pg_engine, second).attempts == 2
    assert job(pg_engine, cycle).attempts == 1
    outcomes = Counter(call["outcome"] for call in llm_calls(pg_engine))
    assert outcomes == {"rate_limited": 2, "overloaded": 2, "ok": 4}, outcomes
    models = [c["model"] for c in llm_calls(pg_engine) if c["outcome"] == "overloaded"]
    assert models == ["claude-sonnet-5-5", "claude-opus-5-5"]
    assert api.requests == 3 + 6 + 3 + 1 + 1
    assert "Traceback" not in svc.logs()


@pytest.mark.postgres
def test_hourly_call_limit_holds_and_the_rest_wait(pg_engine, tmp_path):
    ids = [generation(pg_engine, f"bot-{i}") for i in range(5)]
    with FakeApi() as api:
        api.script(Reply.error(429, retry_after="1"))  # a failed call counts too
        with replicas(
            url_of(pg_engine),
            tmp_path,
            1,
            **api.env(),
            **ONE_SLOT,
            LLM_MAX_RETRIES="0",
            LLM_CALLS_PER_HOUR="3",
        ) as (svc,):
            wait_until(
                lambda: len(llm_calls(pg_engine)) >= 3 and settled(pg_engine),
                60,
                "three calls, then every generation job waiting",
            )
            # Nothing more reaches the API while the window is full.
            quiet_until = time.monotonic() + 2.0
            while time.monotonic() < quiet_until:
                assert api.requests == 3 and len(llm_calls(pg_engine)) == 3
                time.sleep(0.2)
            assert svc.terminate() == 0

    calls = llm_calls(pg_engine)
    assert [c["outcome"] for c in calls].count("ok") == 2
    window_opens = calls[0]["created_at"] + timedelta(hours=1)
    jobs = [job(pg_engine, i) for i in ids]
    done = [j for j in jobs if j.status == "completed"]
    waiting = [j for j in jobs if j.status == "pending"]
    assert len(done) == 2 and len(waiting) == 3, [(j.status, j.error) for j in jobs]
    for j in waiting:
        assert j.attempts == 0 and j.locked_by is None
        assert "LLM_CALLS_PER_HOUR=3 reached" in (j.error or "")
        assert abs((j.run_after - window_opens).total_seconds()) < 1
    assert statuses(pg_engine) == {"completed": 4, "pending": 3}  # + 2 experiment_creation


@pytest.mark.postgres
def test_daily_budget_holds_and_the_rest_wait_for_the_next_day(pg_engine, tmp_path):
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if midnight - now < timedelta(minutes=2):
        # The budget resets at UTC midnight, within the test's run: start after it instead.
        time.sleep((midnight - now).total_seconds() + 1)
        midnight += timedelta(days=1)
    ids = [generation(pg_engine, f"bot-{i}") for i in range(4)]
    # Each call costs $0.40 (1000 input + 39,800 output tokens of Sonnet); the worst case of
    # one more is about $0.04. With $0.82 two calls fit and a third would not.
    budget = {"LLM_MAX_RETRIES": "0", "LLM_DAILY_BUDGET_USD": "0.82"}
    with (
        FakeApi(usage={"output_tokens": 39_800}) as api,
        replicas(url_of(pg_engine), tmp_path, 1, **api.env(), **ONE_SLOT, **budget) as (svc,),
    ):
        wait_until(
            lambda: settled(pg_engine) and statuses(pg_engine)["pending"] == 2,
            60,
            "two calls, then the other jobs waiting",
        )
        assert svc.terminate() == 0

    calls = llm_calls(pg_engine)
    assert [c["outcome"] for c in calls] == ["ok", "ok"]
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(0.80)
    assert api.requests == 2
    waiting = [job(pg_engine, i) for i in ids if job(pg_engine, i).status == "pending"]
    assert len(waiting) == 2
    for j in waiting:
        assert j.attempts == 0 and "LLM_DAILY_BUDGET_USD=$0.82 would be exceeded" in j.error
        assert j.run_after == midnight
