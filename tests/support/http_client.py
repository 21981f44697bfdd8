"""The real app (optimizer.http.app_factory.create_app) behind an aiohttp test client.

Async tests take the `make_client` fixture (tests/conftest.py), which closes every client it
started. Synchronous tests that run their own event loop (the hypothesis property tests) use
`build_app` and `start_client` directly and close their clients themselves.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.health import HealthMonitor
from optimizer.http.app_factory import create_app
from optimizer.prometheus import Metrics
from optimizer.run_stats import RunStats
from optimizer.webhooks import WebhookSender

ADMIN_TOKEN = "test-admin-token"
INGEST_TOKEN = "test-ingest-token"
# Both APIs open; a test that needs another configuration passes its own Settings or
# overrides single fields.
TEST_SETTINGS = Settings(admin_token=ADMIN_TOKEN, ingest_token=INGEST_TOKEN)


def build_app(
    engine: Engine,
    settings: Settings = TEST_SETTINGS,
    *,
    stats: RunStats | None = None,
    health: HealthMonitor | None = None,
    metrics: Metrics | None = None,
    webhooks: WebhookSender | None = None,
    **overrides: Any,
) -> web.Application:
    """The service's app on `engine`; `overrides` replace fields of `settings`."""
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:  # model_copy does not validate, so a misspelt name would pass silently
        raise TypeError(f"not a Settings field: {', '.join(unknown)}")
    if overrides:
        settings = settings.model_copy(update=overrides)
    if stats is None:
        stats = RunStats()
    if health is None:
        health = HealthMonitor(engine, stats, utcnow())
    return create_app(settings, engine, stats, health, metrics, webhooks)


async def start_client(app: web.Application) -> TestClient:
    """A started client on `app`; the caller closes it. Call on the loop that will use it:
    aiohttp binds the server's parts to the running loop."""
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


class ClientMaker:
    """Starts clients on the real app and remembers them, so that all are closed at the end."""

    def __init__(self) -> None:
        self.clients: list[TestClient] = []

    async def __call__(
        self,
        engine: Engine,
        settings: Settings = TEST_SETTINGS,
        *,
        stats: RunStats | None = None,
        health: HealthMonitor | None = None,
        metrics: Metrics | None = None,
        **overrides: Any,
    ) -> TestClient:
        """A client on `build_app(...)` with these arguments."""
        return await self.serve(
            build_app(engine, settings, stats=stats, health=health, metrics=metrics, **overrides)
        )

    async def serve(self, app: web.Application) -> TestClient:
        """A client on an app the test built (and perhaps altered) itself."""
        client = await start_client(app)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        # TestClient.close is idempotent: clients a test closed itself are skipped.
        for client in self.clients:
            await client.close()
