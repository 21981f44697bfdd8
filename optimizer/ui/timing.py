"""Server-Timing on every /ui/ response: the time the app took and the number of SQL
statements run for that request, so benchmarks and the N+1 tests read them from outside.

One listener per engine counts into a ContextVar that holds a mutable counter: the
middleware sets a fresh counter per request, and asyncio.to_thread copies the context into
the worker thread, so statements run there land on the same counter. Statements of other
work (the worker, the API) see no counter and are not counted.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import event
from sqlalchemy.engine import Engine


class QueryCount:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


_CURRENT: ContextVar[QueryCount | None] = ContextVar("ui_query_count", default=None)


def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    counter = _CURRENT.get()
    # BEGIN is issued by hand on SQLite only (optimizer.db): not counted, so both databases
    # report the same number of queries for the same page.
    if counter is not None and not statement.lstrip()[:5].upper().startswith("BEGIN"):
        counter.n += 1


def install_query_counter(engine: Engine) -> None:
    """Count statements on `engine` (and engines derived from it, such as db.read_only's)
    for requests inside the timing middleware. Safe to call again for the same engine."""
    if not event.contains(engine, "before_cursor_execute", _count):
        event.listen(engine, "before_cursor_execute", _count)


def header(seconds: float, queries: int) -> str:
    return f'app;dur={seconds * 1000:.1f}, db;desc="queries={queries}"'


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    counter = QueryCount()
    reset = _CURRENT.set(counter)
    start = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects pass through as exceptions
        exc.headers["Server-Timing"] = header(time.perf_counter() - start, counter.n)
        raise
    finally:
        _CURRENT.reset(reset)
    response.headers["Server-Timing"] = header(time.perf_counter() - start, counter.n)
    return response
