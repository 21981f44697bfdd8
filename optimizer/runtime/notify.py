"""PostgreSQL LISTEN: wake the worker as soon as a job is inserted, by anyone, and each
replica's routing snapshot as soon as routing changes (optimizer.routing_refresh)."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from sqlalchemy.engine import make_url

from optimizer.errors import describe
from optimizer.runtime.backoff import retry_delay

log = logging.getLogger("prompt_worker.notify")
CHANNEL = "optimization_jobs"
KEEPALIVE_SECONDS = 30.0
RECONNECT_MAX_SECONDS = 30.0


def psycopg_conninfo(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_for_jobs(database_url: str, wake: asyncio.Event) -> None:
    """Runs until cancelled. Reconnects after any failure; polling covers the gaps."""
    await listen(database_url, CHANNEL, wake, "new jobs", "job notifications")


async def listen(
    database_url: str, channel: str, wake: asyncio.Event, what: str, kind: str
) -> None:
    """Sets `wake` on every notification on `channel`, and on each (re)connection (to catch
    up on what was sent while not listening). Runs until cancelled; reconnects after any
    failure with a growing delay. `what` and `kind` name the notifications in the logs."""
    conninfo = psycopg_conninfo(database_url)
    failures = 0  # in a row: a connection that worked starts the backoff afresh
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=5
            ) as conn:
                await conn.execute(f"LISTEN {channel}")
                log.info(f"listening for {what}", extra={"channel": channel})
                failures = 0
                wake.set()
                while True:
                    async for _ in conn.notifies(timeout=KEEPALIVE_SECONDS):
                        wake.set()
                    await conn.execute("SELECT 1")  # a silent dead connection shows here
        except (psycopg.Error, OSError) as exc:
            failures += 1
            delay = retry_delay(failures, 1.0, cap_seconds=RECONNECT_MAX_SECONDS)
            log.warning(
                f"{kind} unavailable; polling meanwhile",
                extra={"error": describe(exc, 200), "retry_in": delay},
            )
            await asyncio.sleep(delay)
