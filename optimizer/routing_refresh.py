"""Each process's routing snapshot, and how it is kept fresh.

The snapshot is the client configuration document (optimizer.client_config) read in one
transaction, with what is derived from it once: the routing resolve evaluates
(optimizer.routing), the JSON body GET /v1/config sends and its ETag. On PostgreSQL that
transaction is REPEATABLE READ, so the stamp, the prompts and the experiments are one
state of the database (READ COMMITTED would let a promotion that commits between two of
its statements mix the old and the new in one document and ETag); SQLite's read
transaction sees one state already.

Requests read the snapshot from memory on the event loop; only a reload touches the
database, off the request path. Reloads run on the cache's own thread and connection
(`reader_engine`), not on the loop's default executor and the service's pool, which
ingest, admin calls and job handlers share: behind them, a reload could wait past the
bound under load. One reload runs at a time, so one thread and one connection suffice; on
PostgreSQL a statement timeout (LOAD_TIMEOUT_SECONDS) ends a read stuck behind a lock (a
migration's ALTER TABLE), so it fails and is retried instead of holding that thread.
A request waits for a reload only right after this process itself changed routing, or
before the first snapshot.

Staleness bound: a change committed anywhere (another replica, the CLI, plain SQL)
reaches this process's answers within 1 second, while this process reaches the database:
- triggers (migration 0007) raise the one-row routing stamp in the transaction of every
  change that can move an answer; this process reads the stamp every POLL_SECONDS (0.25 s),
  from the first request that needs routing on, and reloads when it moved (a reload reads
  a few rows: milliseconds);
- on PostgreSQL they also NOTIFY channel CHANNEL at commit, which wakes the reload at once
  (optimizer.http.routing_app passes LISTEN in as a waker); the stamp covers notifications
  lost while the listening connection was down;
- this process's own commits are seen at once (optimizer.routing_writes): the next resolve
  after one waits for a reload that started after it, so a caller always reads its writes.

When a reload fails (the database is down; or anything else, which is logged as a bug),
requests answer from the last snapshot at once, and start another reload at most once per
poll interval; the refresh loop retries after a delay growing from the poll interval to
the bound, and never ends before the cache is stopped. Before the first snapshot, resolve
and GET /v1/config answer 503 as any request does while the database is down. `age()`
(exported as the gauge prompt_worker_routing_snapshot_age_seconds) says how long ago the
snapshot was last confirmed current: a fraction of a second while reloads succeed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.routing import RoutingStamp
from optimizer import client_config, routing_writes
from optimizer.clock import iso, utcnow
from optimizer.db import create_db_engine, read_only, sqlite_file
from optimizer.errors import DatabaseUnavailable, describe
from optimizer.routing import Routing
from optimizer.runtime.backoff import retry_delay

log = logging.getLogger("prompt_worker.routing")

CHANNEL = "prompt_routing"  # as migration 0007's triggers NOTIFY
POLL_SECONDS = 0.25
STALENESS_BOUND_SECONDS = 1.0
# Far above a reload's milliseconds: only a read stuck behind a lock comes near it.
LOAD_TIMEOUT_SECONDS = 2.0

Waker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Snapshot:
    routing: Routing
    config_body: bytes  # GET /v1/config's body, `generated_at` being when it was read
    etag: str
    stamp: int | None  # the routing stamp, read in the transaction that read the rows
    generation: int  # routing_writes.generation() before that transaction began
    read_at: float  # time.monotonic() then: the database was at least this recent


def snapshot_of(
    document: dict[str, Any], stamp: int | None, generation: int, read_at: float
) -> Snapshot:
    body = json.dumps({**document, "generated_at": iso(utcnow())}).encode()
    return Snapshot(
        Routing.from_config(document),
        body,
        client_config.etag(document),
        stamp,
        generation,
        read_at,
    )


def load(engine: Engine, previous: Snapshot | None) -> Snapshot:
    """A snapshot of the database as it is now; `previous` again (with the new generation
    and time) when the stamp has not moved since it was read. Blocking: run it in a
    thread."""
    generation = routing_writes.generation()
    read_at = time.monotonic()
    with Session(_one_state(engine)) as session:
        stamp = session.scalar(select(RoutingStamp.value).where(RoutingStamp.id == 1))
        if previous is not None and stamp is not None and stamp == previous.stamp:
            return replace(previous, generation=generation, read_at=read_at)
        document = client_config.build(session)
    return snapshot_of(document, stamp, generation, read_at)


def _one_state(engine: Engine) -> Engine:
    """Read-only; on PostgreSQL REPEATABLE READ, so every statement of the transaction sees
    the state its first one saw (as optimizer.jobs.pattern_analysis reads its sums)."""
    reader = read_only(engine)
    if reader.dialect.name == "postgresql":
        reader = reader.execution_options(isolation_level="REPEATABLE READ")
    return reader


def reader_engine(engine: Engine) -> Engine:
    """The cache's own engine on `engine`'s database: one connection at a time (one reload
    at a time), on PostgreSQL with every statement limited to LOAD_TIMEOUT_SECONDS. An
    in-memory SQLite database cannot be opened twice: `engine` itself then."""
    if engine.dialect.name == "sqlite" and sqlite_file(engine.url) is None:
        return engine
    url = engine.url.render_as_string(hide_password=False)
    own = create_db_engine(url, pool_size=1, create_missing=False)
    if own.dialect.name == "postgresql":
        event.listen(own, "do_connect", _limit_statements)
    return own


def _limit_statements(
    dialect: Dialect, record: Any, cargs: list[Any], cparams: dict[str, Any]
) -> None:
    limit = f"-c statement_timeout={round(LOAD_TIMEOUT_SECONDS * 1000)}"
    cparams["options"] = f"{cparams.get('options', '')} {limit}".strip()


class _Reader:
    """Where reloads run: a thread and an engine of their own (see the module's docstring)."""

    def __init__(self, engine: Engine) -> None:
        self._shared = engine
        self.engine = reader_engine(engine)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="routing")

    async def load(self, previous: Snapshot | None) -> Snapshot:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, load, self.engine, previous)

    def close(self) -> None:
        # A load still running finishes on its own; its connection is closed on return.
        self._thread.shutdown(wait=False, cancel_futures=True)
        if self.engine is not self._shared:
            self.engine.dispose()


class RoutingCache:
    """The process's snapshot. `fresh()` is the hot path; `run()` keeps it current."""

    def __init__(
        self, engine: Engine, wakers: Sequence[Waker] = (), poll_seconds: float = POLL_SECONDS
    ) -> None:
        """`wakers` run beside the poll while the cache runs, and set the event they are
        given when routing changed (on PostgreSQL: LISTEN)."""
        routing_writes.watch()
        self._engine = engine
        self._wakers = wakers
        self._poll_seconds = poll_seconds
        self.snapshot: Snapshot | None = None
        self.wake = asyncio.Event()  # set by a waker: reload now rather than at the next poll
        self._reader: _Reader | None = None
        self._reload_task: asyncio.Task[bool] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._failures = 0  # reloads failed in a row
        self._failed_at: float | None = None  # time.monotonic() of the last one

    def start(self) -> None:
        """Start keeping the snapshot fresh (idempotent). Done on the first request that
        needs routing, so a process that never serves it never reads it."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.run(), name="routing refresh"),
                *(
                    asyncio.create_task(waker(self.wake), name="routing waker")
                    for waker in self._wakers
                ),
            ]

    async def stop(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._tasks]
        self._tasks = []
        if self._reload_task is not None:
            tasks.append(self._reload_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def fresh(self) -> Snapshot | None:
        """The snapshot, unless there is none or this process committed a routing change
        after it was read."""
        snapshot = self.snapshot
        if snapshot is not None and snapshot.generation == routing_writes.generation():
            return snapshot
        return None

    def age(self) -> float | None:
        """Seconds since the snapshot was last confirmed current (when the read that
        confirmed it began); None before the first."""
        snapshot = self.snapshot
        return None if snapshot is None else max(0.0, time.monotonic() - snapshot.read_at)

    async def current(self) -> Snapshot:
        """A snapshot that holds this process's own writes; the last one if the database
        cannot be read now; DatabaseUnavailable if none was ever read. Waits for a reload
        unless one failed less than a poll interval ago."""
        snapshot = self.fresh()
        if snapshot is not None:
            return snapshot
        self.start()
        if not self._failed_recently():
            await self.refresh()
        if self.snapshot is None:
            raise DatabaseUnavailable(
                "routing not loaded yet: the database has not answered since this process "
                "started; try again"
            )
        return self.snapshot

    def _failed_recently(self) -> bool:
        failed_at = self._failed_at
        return failed_at is not None and time.monotonic() - failed_at < self._poll_seconds

    async def refresh(self) -> None:
        """Returns once a reload that started after this call has finished, or failed.
        One reload at a time; callers arriving meanwhile share it."""
        target = routing_writes.generation()
        while True:
            task = self._reload_task
            if task is None or task.done():
                task = self._reload_task = asyncio.create_task(self._reload(), name="routing")
            ok = await asyncio.shield(task)
            snapshot = self.snapshot
            if not ok or (snapshot is not None and snapshot.generation >= target):
                return

    async def _reload(self) -> bool:
        if self._reader is None:
            self._reader = _Reader(self._engine)
        try:
            snapshot = await self._reader.load(self.snapshot)
        except Exception as exc:  # whatever failed, the last snapshot keeps answering
            self._failed(exc)
            return False
        if self._failures:
            log.info("routing snapshot refreshed again", extra={"failed_tries": self._failures})
            self._failures, self._failed_at = 0, None
        previous, self.snapshot = self.snapshot, snapshot
        if previous is None or previous.etag != snapshot.etag:
            log.info(
                "routing snapshot loaded",
                extra={"stamp": snapshot.stamp, "prompts": len(snapshot.routing.routes)},
            )
        return True

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        self._failed_at = time.monotonic()
        if self._failures > 1:
            return  # logged when the failures began; their end is logged too
        outage = isinstance(exc, SQLAlchemyError)
        log.log(
            logging.WARNING if outage else logging.ERROR,
            "routing snapshot not refreshed; answering from the last one",
            extra={"error": describe(exc, 200), "loaded": self.snapshot is not None},
            exc_info=not outage,  # not the database: a bug, whose traceback is wanted
        )

    def _next_poll(self) -> float:
        """The poll interval; after failures a delay growing from it to the bound, so an
        outage is not hammered and a database back is still seen within the bound."""
        if not self._failures:
            return self._poll_seconds
        cap = max(self._poll_seconds, STALENESS_BOUND_SECONDS)
        return retry_delay(self._failures, self._poll_seconds, cap_seconds=cap)

    async def run(self) -> None:
        """Until cancelled: reload now, then whenever woken or the poll interval passed
        (a reload whose stamp has not moved reads one row). A failed reload never ends it."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.refresh()
                # A timer rather than wait_for(wake.wait()): cancelling that at shutdown
                # was seen to hang on Python 3.11 (its inner task never finished).
                timer = loop.call_later(self._next_poll(), self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    timer.cancel()
                self.wake.clear()
        finally:
            task = self._reload_task
            if task is not None and not task.done():
                task.cancel()
