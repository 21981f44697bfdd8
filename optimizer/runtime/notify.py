"""PostgreSQL LISTEN: wake the worker as soon as a job is inserted, by anyone."""

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
    conninfo = psycopg_conninfo(database_url)
    failures = 0  # in a row: a connection that worked starts the backoff afresh
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=5
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                log.info("listening for new jobs", extra={"channel": CHANNEL})
                failures = 0
                wake.set()  # catch up on anything inserted while we were not listening
                while True:
                    async for _ in conn.notifies(timeout=KEEPALIVE_SECONDS):
                        wake.set()
                    await conn.execute("SELECT 1")  # a silent dead connection shows here
        except (psycopg.Error, OSError) as exc:
            failures += 1
            delay = retry_delay(failures, 1.0, cap_seconds=RECONNECT_MAX_SECONDS)
            log.warning(
                "job notifications unavailable; polling meanwhile",
                extra={"error": describe(exc, 200), "retry_in": delay},
            )
            await asyncio.sleep(delay)
