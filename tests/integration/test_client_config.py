"""GET /v1/config on SQLite and PostgreSQL: evaluated locally with optimizer.assignment (as an
SDK does, from the document alone) it gives every unit exactly what resolve answers, running,
paused and stopped arms included; its ETag holds while nothing changes and answers 304."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.experiments import ExperimentArm
from models.prompts import PromptVersion
from optimizer.assignment import SCHEME_NAME, SCHEME_VERSION, pick_arm
from optimizer.client_config import tag_matches
from optimizer.config import Settings
from tests.integration.test_ingest import seed
from tests.support.http_client import ClientMaker

INGEST = "ingest-token-1"
ADMIN = "admin-token-1"
AUTH = {"Authorization": f"Bearer {INGEST}"}
# Many resolve calls in a row: no rate limit in the way.
SETTINGS = Settings(admin_token=ADMIN, ingest_token=INGEST, app_rate_limit_per_second=0)
UNITS = [f"unit-{i}" for i in range(2000)] + ["ü 🙂/é", " spaced ", "日本"]


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, SETTINGS)


def evaluate(config: dict[str, Any], name: str, unit_id: str) -> dict[str, Any] | None:
    """What an SDK does with the document: resolve's answer, or None where resolve answers
    409 (no active version)."""
    prompt = next(p for p in config["prompts"] if p["name"] == name)
    experiment = prompt["experiment"]
    if experiment is not None:
        arms = experiment["arms"]
        control = next(a for a in arms if a["role"] == "control")
        chosen, experiment_id, arm = control, None, None
        if experiment["status"] == "running":
            arm_id = pick_arm(experiment["id"], unit_id, [(a["id"], a["weight"]) for a in arms])
            chosen = next(a for a in arms if a["id"] == arm_id)
            if chosen["status"] != "active":
                chosen = control
            experiment_id, arm = experiment["id"], {"id": chosen["id"], "role": chosen["role"]}
        return {
            "prompt": name,
            "version": chosen["version"],
            "version_id": chosen["version_id"],
            "content": chosen["content"],
            "experiment_id": experiment_id,
            "arm": arm,
        }
    active = prompt["active_version"]
    if active is None:
        return None
    return {
        "prompt": name,
        "version": active["number"],
        "version_id": active["id"],
        "content": active["content"],
        "experiment_id": None,
        "arm": None,
    }


async def get_config(client: TestClient, **headers: str) -> tuple[int, str, Any]:
    resp = await client.get("/v1/config", headers={**AUTH, **headers})
    body = await resp.json() if resp.status == 200 else await resp.read()
    return resp.status, resp.headers.get("ETag", ""), body


def seed_world(engine: Engine) -> None:
    seed(engine, "plain", active=2)
    seed(engine, "running", experiment=[(1, 1.0), (2, 3.0), (3, 0.5)], stopped=[3])
    seed(engine, "uneven", experiment=[(1, 0.1), (2, 0.2), (3, 0.7)])
    seed(engine, "paused", experiment=[(1, 1.0), (2, 1.0)], status="paused")
    seed(engine, "no-control", active=2, experiment=[(1, 1.0), (2, 1.0)], stopped=[1])
    seed(engine, "completed", active=1, experiment=[(1, 1.0), (2, 1.0)], status="completed")
    seed(engine, "no-active", active=None)


async def test_local_evaluation_gives_what_resolve_answers(
    client: TestClient, engine: Engine
) -> None:
    seed_world(engine)
    status, _, config = await get_config(client)
    assert status == 200
    assert config["hashing"] == {"scheme": SCHEME_NAME, "version": SCHEME_VERSION}
    names = [p["name"] for p in config["prompts"]]
    assert (
        names
        == sorted(names)
        == sorted(["plain", "running", "uneven", "paused", "no-control", "completed", "no-active"])
    )
    by_name = {p["name"]: p for p in config["prompts"]}
    assert by_name["completed"]["experiment"] is None
    assert by_name["no-control"]["experiment"] is None  # resolve ignores it too
    assert by_name["no-active"]["active_version"] is None
    assert by_name["paused"]["experiment"]["status"] == "paused"
    running = by_name["running"]["experiment"]
    assert [a["status"] for a in running["arms"]] == ["active", "active", "stopped"]
    assert [a["role"] for a in running["arms"]] == ["control", "variant", "variant"]

    async def resolved(name: str, unit: str) -> dict[str, Any] | None:
        resp = await client.get(
            f"/v1/prompts/{name}/resolve", params={"unit_id": unit}, headers=AUTH
        )
        if resp.status == 409:
            return None
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer

    for name in names:
        units = UNITS if by_name[name]["experiment"] else UNITS[:20]
        for start in range(0, len(units), 100):
            chunk = units[start : start + 100]
            answers = await asyncio.gather(*(resolved(name, unit) for unit in chunk))
            for unit, answer in zip(chunk, answers, strict=True):
                assert evaluate(config, name, unit) == answer, (name, unit)
    # The stopped arm's slice is not empty, so its units really went to control.
    arms = [(a["id"], a["weight"]) for a in running["arms"]]
    assert any(pick_arm(running["id"], u, arms) == running["arms"][2]["id"] for u in UNITS)


async def test_etag_and_304(client: TestClient, engine: Engine) -> None:
    world = seed(engine, "bot", experiment=[(1, 1.0), (2, 1.0)])
    status, tag, first = await get_config(client)
    assert status == 200 and tag.startswith('"') and tag.endswith('"') and len(tag) == 66
    await asyncio.sleep(0.01)
    status, again, second = await get_config(client)
    assert (status, again) == (200, tag)  # a new generated_at, the same configuration
    assert {**first, "generated_at": None} == {**second, "generated_at": None}
    for header in (tag, f"W/{tag}", f'"nope", {tag}', "*", f' "x" ,W/{tag} '):
        status, same, body = await get_config(client, **{"If-None-Match": header})
        assert (status, same, body) == (304, tag, b""), header
    status, _, _ = await get_config(client, **{"If-None-Match": '"other"'})
    assert status == 200
    # Any change that moves a unit changes the tag.
    with Session(engine) as session, session.begin():
        arm = session.get(ExperimentArm, world.arms[2])
        assert arm is not None
        arm.status = "stopped"
    status, changed, config = await get_config(client, **{"If-None-Match": tag})
    assert status == 200 and changed != tag
    assert config["prompts"][0]["experiment"]["arms"][1]["status"] == "stopped"
    with Session(engine) as session, session.begin():
        version = session.get(PromptVersion, world.versions[1])
        assert version is not None
        version.content = "edited"
    status, edited, _ = await get_config(client, **{"If-None-Match": changed})
    assert status == 200 and edited not in (tag, changed)


async def test_empty_configuration(client: TestClient) -> None:
    status, tag, config = await get_config(client)
    assert status == 200 and tag
    assert config["prompts"] == []
    assert config["generated_at"].endswith("Z")


async def test_needs_the_ingest_token_and_no_query(client: TestClient) -> None:
    for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
        resp = await client.get("/v1/config", headers=headers)
        assert resp.status == 401
    resp = await client.get("/v1/config", params={"prompt": "x"}, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["field"] == "prompt"


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
        ('"ABC"', False),
    ],
)
def test_tag_matches(header: str | None, matches: bool) -> None:
    assert tag_matches(header, '"abc"') is matches
