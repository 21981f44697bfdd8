"""The whole experiment loop through a real `prompt-worker run` process and nothing but its
HTTP API, on SQLite and PostgreSQL: prompts are created, an experiment starts, the
application resolves each user to an arm and reports outcomes, a monitoring job runs, and
the clear winner (30% -> 60% success) is promoted while an A/A pair is left running."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from sqlalchemy.engine import Engine

from tests.support.procs import ServiceProcess, start_service

ADMIN, INGEST = "e2e-admin-token", "e2e-ingest-token"
UNITS = 1000


def call(
    svc: ServiceProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str = ADMIN,
    expect: int = 200,
) -> Any:
    status, answer = svc.request(method, path, body, token)
    assert status == expect, (method, path, status, answer)
    return answer


def start_experiment(svc: ServiceProcess, name: str) -> int:
    call(svc, "POST", "/prompts", {"name": name, "content": "You are a support agent."}, expect=201)
    call(
        svc,
        "POST",
        f"/prompts/{name}/versions",
        {"content": "You are a careful support agent.", "change_notes": "be careful"},
        expect=201,
    )
    # No minimum runtime, so the one monitoring check below may decide.
    experiment = call(
        svc,
        "POST",
        "/experiments",
        {"prompt": name, "variants": [2], "min_runtime_hours": 0},
        expect=201,
    )
    return int(experiment["id"])


def serve_traffic(
    svc: ServiceProcess, name: str, experiment_id: int, success_rate: dict[int, float], seed: int
) -> Counter[int]:
    """Resolve every unit, as the application would, and report one conversation each."""
    rng = random.Random(seed)
    served: Counter[int] = Counter()
    rows = []
    for unit in range(UNITS):
        path = f"/v1/prompts/{name}/resolve?unit_id=user-{unit}"
        got = call(svc, "GET", path, token=INGEST)
        assert got["experiment_id"] == experiment_id
        if unit % 100 == 0:  # sticky: asking again gives the same arm
            assert call(svc, "GET", path, token=INGEST) == got
        version = got["version"]
        served[version] += 1
        rows.append(
            {
                "prompt": name,
                "version": version,
                "unit_id": f"user-{unit}",
                "experiment_id": experiment_id,
                "success": rng.random() < success_rate[version],
            }
        )
    answer = call(
        svc, "POST", "/v1/conversations", {"conversations": rows}, token=INGEST, expect=202
    )
    assert answer == {"accepted": UNITS}
    return served


def run_monitoring(svc: ServiceProcess) -> dict[str, Any]:
    job = call(svc, "POST", "/jobs", {"type": "experiment_monitoring"}, expect=201)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = call(svc, "GET", f"/jobs/{job['id']}")
        if shown["status"] in ("completed", "failed", "dead"):
            assert shown["status"] == "completed", shown
            return shown
        time.sleep(0.1)
    raise AssertionError("the monitoring job did not finish in 30 s")


def test_winner_promoted_and_aa_pair_kept_running(engine: Engine, tmp_path):
    url = engine.url.render_as_string(hide_password=False)
    # Rate limits are tested on their own; this test sends its traffic as fast as it can.
    svc = start_service(
        url,
        tmp_path,
        ADMIN_TOKEN=ADMIN,
        INGEST_TOKEN=INGEST,
        POLL_INTERVAL_SECONDS="0.2",
        APP_RATE_LIMIT_PER_SECOND="0",
    )
    try:
        svc.wait_healthy()
        better = start_experiment(svc, "better-bot")
        same = start_experiment(svc, "same-bot")
        served = serve_traffic(svc, "better-bot", better, {1: 0.30, 2: 0.60}, seed=1)
        # Equal weights: each arm gets roughly half of the users.
        assert all(400 <= served[v] <= 600 for v in (1, 2)), served
        serve_traffic(svc, "same-bot", same, {1: 0.30, 2: 0.30}, seed=2)

        run_monitoring(svc)

        won = call(svc, "GET", f"/experiments/{better}")
        assert won["status"] == "completed" and won["winner_version"] == 2, won
        assert won["decision_reason"]
        assert sum(arm["conversations"] for arm in won["arms"]) == UNITS
        prompt = call(svc, "GET", "/prompts/better-bot")
        assert prompt["active_version"] == 2
        statuses = {v["number"]: v["status"] for v in prompt["versions"]}
        assert statuses == {1: "retired", 2: "active"}
        # With the experiment over, every user now gets the winner.
        after = call(svc, "GET", "/v1/prompts/better-bot/resolve?unit_id=user-1", token=INGEST)
        assert after["version"] == 2 and after["experiment_id"] is None

        tied = call(svc, "GET", f"/experiments/{same}")
        assert tied["status"] == "running" and tied["winner_version"] is None, tied
        assert tied["latest_analysis"]["decision"] == "continue"
        assert call(svc, "GET", "/prompts/same-bot")["active_version"] == 1

        health = call(svc, "GET", "/health")
        assert health["stats"]["experimentsCreated"] == 2
        assert health["stats"]["experimentsCompleted"] == 1
        assert svc.terminate() == 0
    finally:
        svc.kill()
    assert "Traceback" not in svc.logs()
