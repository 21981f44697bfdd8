"""The shared test client (tests/support/http_client.py) that the HTTP tests build on."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from tests.support.http_client import (
    ADMIN_TOKEN,
    INGEST_TOKEN,
    ClientMaker,
    build_app,
)


async def test_default_settings_open_both_apis(
    sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(sqlite_engine)
    jobs = await client.get("/jobs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert jobs.status == 200, await jobs.text()
    resolve = await client.get(
        "/v1/prompts/absent/resolve?unit_id=u", headers={"Authorization": f"Bearer {INGEST_TOKEN}"}
    )
    assert resolve.status == 404, await resolve.text()


async def test_overrides_replace_single_settings(
    sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    client = await make_client(sqlite_engine, admin_token=None)
    resp = await client.get("/jobs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 503, await resp.text()


def test_a_misspelt_override_is_refused(sqlite_engine: Engine) -> None:
    with pytest.raises(TypeError, match="not a Settings field: max_body_byte"):
        build_app(sqlite_engine, max_body_byte=1024)


async def test_close_closes_every_client(sqlite_engine: Engine) -> None:
    maker = ClientMaker()
    first, second = await maker(sqlite_engine), await maker(sqlite_engine)
    await first.close()  # closed by the test already: closing again is harmless
    await maker.close()
    assert first.server.closed and second.server.closed
