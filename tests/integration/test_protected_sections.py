"""Protected sections on SQLite and PostgreSQL: resolve (HTTP and the database path) and
GET /v1/config serve the text without its markers, while the admin API shows them; malformed
markers are refused with a 400 (HTTP) or an error (CLI) naming the line, and nothing is
stored."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.prompts import Prompt, PromptVersion
from optimizer import cli
from optimizer.config import Settings
from optimizer.prompt_text import CLOSE_MARKER, OPEN_MARKER, served_text
from optimizer.resolve import resolve
from tests.support.cli import Outcome
from tests.support.http_client import ClientMaker

ADMIN, INGEST = "admin-token-1", "ingest-token-1"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
APP_AUTH = {"Authorization": f"Bearer {INGEST}"}
SETTINGS = Settings(admin_token=ADMIN, ingest_token=INGEST, app_rate_limit_per_second=0)
NAME = "guarded"
V1 = (
    "[[protected]]\nYou are Acme's assistant « Ada » 🙂.\n[[/protected]]\n"
    "Help {{name}} with billing. <script>alert(1)</script>\n"
    "Cite [[protected]]Terms §4.2[[/protected]] when refunds come up.\n"
)
V2 = (
    "[[protected]]\nYou are Acme's assistant « Ada » 🙂.\n[[/protected]]\n"
    "Help {{name}} with billing; give the invoice number first.\n"
    "Cite [[protected]]Terms §4.2[[/protected]] when refunds come up.\n"
)
UNITS = [f"u{i}" for i in range(60)] + ["日本", " spaced "]


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, SETTINGS)


async def admin_post(client: TestClient, path: str, body: Any) -> ClientResponse:
    return await client.post(path, data=json.dumps(body).encode(), headers=ADMIN_AUTH)


async def created(resp: ClientResponse) -> Any:
    assert resp.status == 201, await resp.text()
    return await resp.json()


def no_marker(text: str) -> bool:
    return OPEN_MARKER not in text and CLOSE_MARKER not in text


def stored(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        prompts = conn.execute(select(func.count()).select_from(Prompt)).scalar_one()
        versions = conn.execute(select(func.count()).select_from(PromptVersion)).scalar_one()
    return int(prompts), int(versions)


async def test_served_without_markers_shown_with_them(client: TestClient, engine: Engine) -> None:
    await created(await admin_post(client, "/prompts", {"name": NAME, "content": V1}))
    await created(await admin_post(client, f"/prompts/{NAME}/versions", {"content": V2}))
    await created(await admin_post(client, "/experiments", {"prompt": NAME, "variants": [2]}))

    shown = await (await client.get(f"/prompts/{NAME}", headers=ADMIN_AUTH)).json()
    assert [v["content"] for v in shown["versions"]] == [V1, V2]

    served = {1: served_text(V1), 2: served_text(V2)}
    assert served[1] == (
        "You are Acme's assistant « Ada » 🙂.\n"
        "Help {{name}} with billing. <script>alert(1)</script>\n"
        "Cite Terms §4.2 when refunds come up.\n"
    )
    seen = set()
    for unit in UNITS:
        resp = await client.get(
            f"/v1/prompts/{NAME}/resolve", params={"unit_id": unit}, headers=APP_AUTH
        )
        answer = await resp.json()
        assert resp.status == 200, answer
        assert answer["content"] == served[answer["version"]] and no_marker(answer["content"])
        # The database path (CLI, demo) answers the same.
        direct = await asyncio.to_thread(resolve, engine, NAME, unit)
        assert direct["content"] == answer["content"]
        seen.add(answer["version"])
    assert seen == {1, 2}

    config = await (await client.get("/v1/config", headers=APP_AUTH)).json()
    (prompt,) = [p for p in config["prompts"] if p["name"] == NAME]
    assert prompt["active_version"]["content"] == served[1]
    arms = prompt["experiment"]["arms"]
    assert {a["version"]: a["content"] for a in arms} == served
    assert no_marker(json.dumps(config, ensure_ascii=False))


MALFORMED = [
    ("Hello.\n[[protected]]\nAcme", "line 2: [[protected]] is never closed"),
    ("Hello.\n\nBye [[/protected]]", "line 3: [[/protected]] closes no section"),
    ("[[protected]]a\n[[protected]]b[[/protected]]\n[[/protected]]", "line 2: [[protected]] opens"),
    ("x\n[[protected]]  \n[[/protected]]", "line 2: the protected section opened here is empty"),
    ("[[Protected]]Acme[[/protected]]", "line 1: '[[Protected]]' is not a protected-section"),
]


@pytest.mark.parametrize(("content", "needle"), MALFORMED)
async def test_malformed_markers_are_a_400_and_nothing_is_stored(
    client: TestClient, engine: Engine, content: str, needle: str
) -> None:
    resp = await admin_post(client, "/prompts", {"name": NAME, "content": content})
    assert resp.status == 400
    body = await resp.json()
    assert body["field"] == "content" and needle in body["error"], body
    assert body["error"].startswith("content has malformed protected-section markers: ")
    assert await asyncio.to_thread(stored, engine) == (0, 0)

    await created(await admin_post(client, "/prompts", {"name": NAME, "content": V1}))
    resp = await admin_post(client, f"/prompts/{NAME}/versions", {"content": content})
    assert resp.status == 400
    assert needle in (await resp.json())["error"]
    assert await asyncio.to_thread(stored, engine) == (1, 1)


@pytest.fixture
def run(engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))

    def call(*argv: str) -> Outcome:
        capsys.readouterr()
        code = cli.main(["prompts", *argv])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return call


def test_cli_add_refuses_malformed_markers(run: Any, tmp_path: Path, engine: Engine) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("Intro\n[[protected]]\nLegal text\n", encoding="utf-8")
    good = tmp_path / "good.txt"
    good.write_text(V1, encoding="utf-8")

    refused = run("add", NAME, "--file", str(bad))
    assert refused.code == 1 and "Traceback" not in refused.err
    assert "line 2: [[protected]] is never closed" in refused.err
    assert stored(engine) == (0, 0)

    assert run("add", NAME, "--file", str(good)).code == 0
    refused = run("add", NAME, "--file", str(bad))
    assert refused.code == 1 and "line 2" in refused.err
    assert stored(engine) == (1, 1)
    shown = run("show", NAME).json()
    assert shown["versions"][0]["content"] == V1
