"""Throttled logging: a flood of alike events costs one line per interval, every event is
accounted for, and the accept-error loop handler leaves other loop errors alone."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from optimizer.http import accept_errors
from optimizer.http.accept_errors import accept_errors_throttled, is_accept_error
from optimizer.log_throttle import BurstWindow, ThrottledLog

INTERVAL = 10.0
EMFILE = OSError(errno.EMFILE, "Too many open files")


class FakeLoop:
    """Just what ThrottledLog uses of a loop: a clock and timers."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        self.timers.append((when, callback))

    def advance_to(self, when: float) -> None:
        while due := sorted((t for t in self.timers if t[0] <= when), key=lambda t: t[0]):
            self.timers.remove(due[0])
            self.now = max(self.now, due[0][0])
            due[0][1]()
        self.now = max(self.now, when)


class Lines(logging.Handler):
    def __init__(self, loop: FakeLoop) -> None:
        super().__init__()
        self.loop = loop
        self.lines: list[tuple[float, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.loop.now, dict(vars(record))))


def throttled(loop: FakeLoop) -> tuple[ThrottledLog, Lines]:
    logger = logging.getLogger("test.log_throttle")
    logger.handlers.clear()
    logger.propagate = False
    lines = Lines(loop)
    logger.addHandler(lines)
    return ThrottledLog(logger, logging.ERROR, "it happened", INTERVAL, loop), lines  # type: ignore[arg-type]


def test_window_holds_events_until_the_interval_ends():
    window = BurstWindow(INTERVAL)
    assert window.admit(0.0) == 0
    assert [window.admit(t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert window.release(10.0) == 3
    assert window.admit(15.0) is None  # the report opened a new interval
    assert window.release(20.0) == 1
    assert window.release(30.0) == 0
    assert window.admit(31.0) == 0  # quiet since: logged at once


def test_a_storm_is_one_line_then_one_count_per_interval():
    loop = FakeLoop()
    log, lines = throttled(loop)
    for step in range(2500):  # 25 s of 100 events a second
        loop.advance_to(step / 100)
        log.note(error="boom")
    loop.advance_to(60.0)
    times = [t for t, _ in lines.lines]
    assert times == [0.0, 10.0, 20.0, 30.0]
    assert "suppressed" not in lines.lines[0][1]
    assert sum(record.get("suppressed", 0) for _, record in lines.lines) == 2499
    assert all(record["error"] == "boom" for _, record in lines.lines)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=300))
def test_every_event_is_counted_and_lines_are_an_interval_apart(offsets):
    loop = FakeLoop()
    log, lines = throttled(loop)
    for when in sorted(offsets):
        loop.advance_to(when)
        log.note()
    loop.advance_to(1000.0)
    # A line is either the first event of a burst or the count of those held back since.
    assert sum(record.get("suppressed", 1) for _, record in lines.lines) == len(offsets)
    times = [t for t, _ in lines.lines]
    assert all(
        later - earlier >= INTERVAL - 1e-9 for earlier, later in zip(times, times[1:], strict=False)
    )


def test_accept_errors_are_recognised():
    assert is_accept_error(
        {"message": "socket.accept() out of system resource", "exception": EMFILE}
    )
    assert is_accept_error({"message": "anything", "exception": OSError(errno.ENFILE, "x")})
    assert is_accept_error(
        {
            "message": "Exception in callback BaseSelectorEventLoop._start_serving(...)",
            "exception": ValueError("Invalid file descriptor: -1"),
        }
    )
    assert not is_accept_error(
        {"message": "Task exception was never retrieved", "exception": ValueError("x")}
    )
    assert not is_accept_error({"message": "x", "exception": OSError(errno.ECONNRESET, "y")})


async def test_accept_error_storm_is_one_line_and_other_loop_errors_pass_through(caplog):
    loop = asyncio.get_running_loop()
    passed_on: list[dict[str, Any]] = []

    def previous(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        passed_on.append(context)

    loop.set_exception_handler(previous)
    try:
        with caplog.at_level(logging.ERROR), accept_errors_throttled(loop):
            for _ in range(5000):
                loop.call_exception_handler(
                    {"message": "socket.accept() out of system resource", "exception": EMFILE}
                )
            loop.call_exception_handler({"message": "something else"})
        assert loop.get_exception_handler() is previous
    finally:
        loop.set_exception_handler(None)
    assert passed_on == [{"message": "something else"}]
    accept_lines = [r for r in caplog.records if r.name == "prompt_worker.http"]
    assert len(accept_lines) == 1
    assert "Too many open files" in accept_lines[0].error


# --- the open-files watch (what uvloop's silent accepts leave to us) ----------------------


def test_open_files_counts_this_process_and_reads_a_full_table_as_full(monkeypatch) -> None:
    counts = accept_errors.open_files()
    assert counts is not None
    used, limit = counts
    assert 3 <= used <= limit == resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    def full(_path: str) -> list[str]:
        raise EMFILE

    monkeypatch.setattr(os, "listdir", full)
    assert accept_errors.open_files() == (limit, limit)

    def missing(_path: str) -> list[str]:
        raise FileNotFoundError(errno.ENOENT, "no /proc here")

    monkeypatch.setattr(os, "listdir", missing)
    assert accept_errors.open_files() is None


async def test_watch_warns_past_nine_tenths_of_the_limit_once_per_interval(
    monkeypatch, caplog
) -> None:
    readings = iter([(80, 100), (89, 100), (90, 100), (99, 100), (100, 100), (50, 100)])
    monkeypatch.setattr(accept_errors, "open_files", lambda: next(readings, None))
    with caplog.at_level(logging.WARNING, logger="prompt_worker.http"):
        await asyncio.wait_for(accept_errors.watch_open_files(interval=0.001), timeout=5)
    said = [r for r in caplog.records if "nearly out of file descriptors" in r.getMessage()]
    assert len(said) == 1  # the first reading at 90%; the next two held for the interval
    assert (said[0].open, said[0].limit) == (90, 100)
