"""Graceful shutdown: SIGTERM while a job waits on a slow streamed call to Claude. With a
long SHUTDOWN_GRACE_SECONDS the job finishes and the process exits 0; with a short one the
job goes back to the queue (pending, the interrupted attempt not counted) and the process
still exits 0. Either way no new job is claimed once SIGTERM has arrived."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.replicas import (
    FakeApi,
    insert_job,
    job,
    llm_calls,
    replicas,
    seed_prompt,
    slow_reply,
    url_of,
    wait_until,
)

CYCLE = {"prompt": "support-bot", "always_generate": True, "n": 1}


@pytest.mark.postgres
def test_sigterm_with_long_grace_finishes_the_job_and_exits_zero(pg_engine, tmp_path):
    seed_prompt(pg_engine, "support-bot")
    with FakeApi() as api:
        api.script(slow_reply(4.0))
        with replicas(
            url_of(pg_engine),
            tmp_path,
            1,
            **api.env(),
            SHUTDOWN_GRACE_SECONDS="60",
            WORKER_CONCURRENCY="2",
            POLL_INTERVAL_SECONDS="0.2",
        ) as (svc,):
            job_id = insert_job(pg_engine, "full_cycle", CYCLE)
            wait_until(lambda: api.in_flight == 1, 30, "the slow LLM call to start")
            svc.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: svc.events("shutting down"), 10, "shutdown to begin")
            # The idle slot stops claiming: a job added now waits for the next process.
            late_id = insert_job(pg_engine, "experiment_monitoring")
            assert svc.proc.wait(timeout=60) == 0
            # It exited only after the whole reply had streamed in.
            wait_until(lambda: api.answered == 1, 5, "the fake to close the stream")

    done = job(pg_engine, job_id)
    assert (done.status, done.attempts, done.locked_by) == ("completed", 1, None)
    assert [c["outcome"] for c in llm_calls(pg_engine)] == ["ok"]
    late = job(pg_engine, late_id)
    assert (late.status, late.attempts) == ("pending", 0)
    assert svc.events("shutdown grace over; releasing running jobs") == []
    assert "Traceback" not in svc.logs()


@pytest.mark.postgres
def test_sigterm_with_short_grace_hands_the_job_back_and_exits_zero(pg_engine, tmp_path):
    seed_prompt(pg_engine, "support-bot")
    url = url_of(pg_engine)
    with FakeApi() as api:
        api.script(slow_reply(120.0))
        with replicas(
            url, tmp_path, 1, **api.env(), SHUTDOWN_GRACE_SECONDS="1", POLL_INTERVAL_SECONDS="0.2"
        ) as (svc,):
            job_id = insert_job(pg_engine, "full_cycle", CYCLE)
            wait_until(lambda: api.in_flight == 1, 30, "the slow LLM call to start")
            assert job(pg_engine, job_id).status == "running"
            sent = time.monotonic()
            svc.proc.send_signal(signal.SIGTERM)
            assert svc.proc.wait(timeout=30) == 0
            took = time.monotonic() - sent
        assert took < 15, f"exit took {took:.1f}s with SHUTDOWN_GRACE_SECONDS=1"
        assert svc.events("shutdown grace over; releasing running jobs")

        back = job(pg_engine, job_id)
        assert (back.status, back.attempts, back.locked_by, back.lease_expires_at) == (
            "pending",
            0,
            None,
            None,
        )
        # The abandoned call is on record (tokens may have been billed), as a failure.
        (call,) = llm_calls(pg_engine)
        assert call["outcome"] == "error" and "cancelled" in call["error"]

        # The next process picks it up and, with Claude answering promptly, finishes it.
        with replicas(url, tmp_path, 1, **api.env(), POLL_INTERVAL_SECONDS="0.2") as (nxt,):
            wait_until(
                lambda: job(pg_engine, job_id).status == "completed",
                30,
                "the job to complete in the next process",
            )
            assert nxt.terminate() == 0
    assert job(pg_engine, job_id).attempts == 1
    assert [c["outcome"] for c in llm_calls(pg_engine)] == ["error", "ok"]
    assert "Traceback" not in svc.logs() + nxt.logs()
