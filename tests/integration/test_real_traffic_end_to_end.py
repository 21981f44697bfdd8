"""Traffic shaped like a real chat product's, through a real `prompt-worker run` process and
nothing but HTTP, on SQLite and PostgreSQL: users come back many times and their outcomes
cluster, and cost has a heavy tail. An A/A experiment is not paused for a traffic mismatch
and not promoted; a variant that succeeds more but costs half as much again is not promoted
(counting conversations as independent and treating "no harm shown" as safe did both)."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy.engine import Engine

from tests.integration.test_end_to_end import call, run_monitoring, start_experiment
from tests.support.procs import ServiceProcess, start_service

ADMIN, INGEST = "e2e-admin-token", "e2e-ingest-token"
USERS = 600


def user_traffic(
    svc: ServiceProcess,
    name: str,
    experiment_id: int,
    seed: int,
    *,
    success: dict[int, float],
    cost_scale: dict[int, float],
) -> dict[int, int]:
    """Every user resolves once and logs a geometric number of conversations (mean 6) with a
    user-level success rate (intra-class correlation 0.3) and lognormal cost (sigma 2).
    Optional fields are left out at random, as real applications do. Returns conversations
    per version."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    per_version: dict[int, int] = {}
    for user in range(USERS):
        got = call(svc, "GET", f"/v1/prompts/{name}/resolve?unit_id=user-{user}", token=INGEST)
        version = got["version"]
        base = success[version]
        p = rng.betavariate(base * 7 / 3, (1 - base) * 7 / 3)  # ICC = 1 / (1 + 7/3) = 0.3
        conversations = 1
        while rng.random() > 1 / 6:
            conversations += 1
        for _ in range(conversations):
            row: dict[str, Any] = {
                "prompt": name,
                "version": version,
                "unit_id": f"user-{user}",
                "experiment_id": experiment_id,
                "success": rng.random() < p,
            }
            if rng.random() < 0.9:
                row["cost_usd"] = min(999.0, cost_scale[version] * rng.lognormvariate(-6, 2))
            if rng.random() < 0.5:
                row["segment"] = rng.choice(["free", "pro", "team"])
            rows.append(row)
        per_version[version] = per_version.get(version, 0) + conversations
    for start in range(0, len(rows), 1000):
        answer = call(
            svc,
            "POST",
            "/v1/conversations",
            {"conversations": rows[start : start + 1000]},
            token=INGEST,
            expect=202,
        )
        assert answer == {"accepted": len(rows[start : start + 1000])}
    return per_version


def test_repeat_users_and_a_costly_winner(engine: Engine, tmp_path):
    url = engine.url.render_as_string(hide_password=False)
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
        same = start_experiment(svc, "same-bot")
        costly = start_experiment(svc, "costly-bot")
        user_traffic(
            svc, "same-bot", same, seed=3, success={1: 0.3, 2: 0.3}, cost_scale={1: 1.0, 2: 1.0}
        )
        served = user_traffic(
            svc, "costly-bot", costly, seed=4, success={1: 0.3, 2: 0.6}, cost_scale={1: 1.0, 2: 1.5}
        )
        assert sum(served.values()) > 3 * USERS  # users came back

        run_monitoring(svc)

        aa = call(svc, "GET", f"/experiments/{same}")
        assert aa["status"] == "running", aa
        assert aa["latest_analysis"]["decision"] == "continue", aa["latest_analysis"]
        assert not aa["latest_analysis"]["srm_detected"]
        assert sum(arm["units"] for arm in aa["arms"]) == USERS

        shown = call(svc, "GET", f"/experiments/{costly}")
        analysis = shown["latest_analysis"]
        assert shown["winner_version"] is None and analysis["decision"] != "promote", shown
        [success] = analysis["statistics"]["comparisons"]
        assert success["diff_low"] > 0  # the variant is clearly better on success ...
        cost = next(g for g in analysis["statistics"]["guardrails"] if g["metric"] == "cost_usd")
        assert cost["status"] in ("undecided", "harmed")  # ... but not shown affordable
        assert "cost_usd" in analysis["reason"]
        assert call(svc, "GET", "/prompts/costly-bot")["active_version"] == 1
        assert svc.terminate() == 0
    finally:
        svc.kill()
    assert "Traceback" not in svc.logs()
