"""Each process's routing snapshot, and how it is kept fresh.

The snapshot is the client configuration document (optimizer.client_config) read in one
transaction, with what is derived from it once: the routing resolve evaluates
(optimizer.routing), the JSON body GET /v1/config sends and its ETag. Requests read it
from memory on the event loop; only a reload touches the database, in a thread, off the
request path (a request waits for one only right after this process itself changed
routing, or before the first snapshot).

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
While the database cannot be reached, answers come from the last snapshot (nothing can be
changed meanwhile, except by whoever still reaches it); before the first snapshot, resolve
and GET /v1/config answer 503 as any request does while the database is down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.routing import RoutingStamp
from optimizer import client_config, routing_writes
from optimizer.clock import iso, utcnow
from optimizer.db import read_only
from optimizer.errors import DatabaseUnavailable, describe
from optimizer.routing import Routing

log = logging.getLogger("prompt_worker.routing")

CHANNEL = "prompt_routing"  # as migration 0007's triggers NOTIFY
POLL_SECONDS = 0.25
STALENESS_BOUND_SECONDS = 1.0

Waker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Snapshot:
    routing: Routing
    config_body: bytes  # GET /v1/config's body, `generated_at` being when it was read
    etag: str
    stamp: int | None  # the routing stamp read just before the rows
    generation: int  # routing_writes.generation() before the stamp was read


def snapshot_of(document: dict[str, Any], stamp: int | None, generation: int) -> Snapshot:
    body = json.dumps({**document, "generated_at": iso(utcnow())}).encode()
    return Snapshot(
        Routing.from_config(document), body, client_config.etag(document), stamp, generation
    )


def load(engine: Engine, previous: Snapshot | None) -> Snapshot:
    """A snapshot of the database as it is now; `previous` again (with the new generation)
    when the stamp has not moved since it was read. Blocking: run it in a thread."""
    generation = routing_writes.generation()
    with Session(read_only(engine)) as session:
        # The stamp first: on PostgreSQL each statement sees the latest commits, so the
        # rows read next are at least as new as the stamp, never older.
        stamp = session.scalar(select(RoutingStamp.value).where(RoutingStamp.id == 1))
        if previous is not None and stamp is not None and stamp == previous.stamp:
            return replace(previous, generation=generation)
        document = client_config.build(session)
    return snapshot_of(document, stamp, generation)


class RoutingCache:
    """The process's snapshot. `fresh()` is the hot path; `run()` keeps it current."""

    def __init__(self, engine: Engine, wakers: Sequence[Waker] = ()) -> None:
        """`wakers` run beside the poll while the cache runs, and set the event they are
        given when routing changed (on PostgreSQL: LISTEN)."""
        routing_writes.watch()
        self._engine = engine
        self._wakers = wakers
        self.snapshot: Snapshot | None = None
        self.wake = asyncio.Event()  # set by a waker: reload now rather than at the next poll
        self._reload_task: asyncio.Task[bool] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._failures = 0

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
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def fresh(self) -> Snapshot | None:
        """The snapshot, unless there is none or this process committed a routing change
        after it was read."""
        snapshot = self.snapshot
        if snapshot is not None and snapshot.generation == routing_writes.generation():
            return snapshot
        return None

    async def current(self) -> Snapshot:
        """A snapshot that holds this process's own writes; the last one if the database
        cannot be read now; DatabaseUnavailable if none was ever read."""
        snapshot = self.fresh()
        if snapshot is not None:
            return snapshot
        self.start()
        await self.refresh()
        if self.snapshot is None:
            raise DatabaseUnavailable(
                "routing not loaded yet: the database has not answered since this process "
                "started; try again"
            )
        return self.snapshot

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
        try:
            snapshot = await asyncio.to_thread(load, self._engine, self.snapshot)
        except SQLAlchemyError as exc:
            self._failures += 1
            if self._failures == 1:
                log.warning(
                    "routing snapshot not refreshed; answering from the last one",
                    extra={"error": describe(exc, 200), "loaded": self.snapshot is not None},
                )
            return False
        if self._failures:
            log.info("routing snapshot refreshed again", extra={"failed_tries": self._failures})
            self._failures = 0
        previous, self.snapshot = self.snapshot, snapshot
        if previous is None or previous.etag != snapshot.etag:
            log.info(
                "routing snapshot loaded",
                extra={"stamp": snapshot.stamp, "prompts": len(snapshot.routing.routes)},
            )
        return True

    async def run(self, poll_seconds: float = POLL_SECONDS) -> None:
        """Until cancelled: reload now, then whenever woken or the poll interval passed
        (a reload whose stamp has not moved reads one row)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.refresh()
                # A timer rather than wait_for(wake.wait()): cancelling that at shutdown
                # was seen to hang on Python 3.11 (its inner task never finished).
                timer = loop.call_later(poll_seconds, self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    timer.cancel()
                self.wake.clear()
        finally:
            task = self._reload_task
            if task is not None and not task.done():
                task.cancel()
