"""Crash: SIGKILL of the replica running a long job. The job is a `full_cycle` whose call to
Claude streams for about ten seconds; its replica dies mid-stream, the lease it held runs
out, the other replica's reaper returns the job to the queue and that replica runs it to
the end. Nothing is left `running`, and the work is done once."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.support.replicas import (
    FakeApi,
    insert_job,
    job,
    llm_calls,
    replicas,
    scalar,
    seed_prompt,
    slow_reply,
    statuses,
    url_of,
    wait_until,
)

LEASE = 3.0


@pytest.mark.postgres
def test_sigkill_mid_llm_call_other_replica_finishes_the_job(pg_engine, tmp_path):
    seed_prompt(pg_engine, "support-bot")
    with FakeApi() as api:
        api.script(slow_reply(10.0))  # the first call streams slowly; later ones are quick
        # No replay gate: the prompt has no conversations to replay, and the test is about
        # the experiment being created once after the takeover.
        env = {
            **api.env(),
            "LEASE_SECONDS": str(LEASE),
            "POLL_INTERVAL_SECONDS": "0.5",
            "REPLAY_ENABLED": "false",
        }
        with replicas(url_of(pg_engine), tmp_path, 2, **env) as procs:
            job_id = insert_job(
                pg_engine, "full_cycle", {"prompt": "support-bot", "always_generate": True, "n": 1}
            )
            wait_until(lambda: api.in_flight == 1, 30, "the slow LLM call to start")
            owner_id = job(pg_engine, job_id).locked_by or ""
            (victim,) = [p for p in procs if f":{p.proc.pid}:" in owner_id]
            (survivor,) = [p for p in procs if p is not victim]
            victim.kill()  # SIGKILL, mid-stream
            assert victim.proc.returncode == -9
            orphaned = job(pg_engine, job_id)
            assert orphaned.status == "running" and orphaned.locked_by == owner_id

            took = wait_until(
                lambda: job(pg_engine, job_id).status == "completed",
                60,
                "the other replica to complete the job",
            )
            assert took < 30
            assert survivor.proc.poll() is None
            assert survivor.terminate() == 0

    done = job(pg_engine, job_id)
    assert done.attempts == 2 and done.locked_by is None and done.error is None
    result = json.loads(done.result or "{}")
    assert [v["version"] for v in result["generation"]["stored"]] == [2]
    assert result["creation"]["variant_versions"] == [2]
    assert statuses(pg_engine) == {"completed": 1}
    # The killed call never finished, so it left no llm_calls row; the second one did.
    assert [(c["job_id"], c["outcome"]) for c in llm_calls(pg_engine)] == [(job_id, "ok")]
    assert api.requests == 2
    assert scalar(pg_engine, "SELECT count(*) FROM ai_ab_experiments") == 1
    assert scalar(pg_engine, "SELECT count(*) FROM ai_prompt_versions") == 2
    # The survivor took it over only once the dead replica's lease had run out.
    (restart,) = survivor.events("job started")
    assert restart["attempt"] == "2"
    assert datetime.fromisoformat(restart["ts"]) >= orphaned.lease_expires_at
    reaped = survivor.events("expired leases reaped")
    assert sum(int(e["requeued"]) for e in reaped) == 1
    assert [e["job_id"] for e in survivor.events("job finished")] == [str(job_id)]
    assert victim.events("job finished") == []
    assert "Traceback" not in survivor.logs()
