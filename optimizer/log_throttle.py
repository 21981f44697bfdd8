"""One log line per interval for events that can repeat thousands of times a second.

A flood of alike events (accept errors while out of file descriptors, malformed requests,
clients cut off for being too slow) must not turn into a flood of log lines: the first
event of a burst is logged at once, the rest are counted, and the count is logged in one
line when the interval ends.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

# One line per this many seconds for a repeating event, with the count of the rest.
LOG_INTERVAL_SECONDS = 10.0


@dataclass
class BurstWindow:
    """Which events of a burst to log; pure, driven by the caller's clock."""

    interval: float
    ends_at: float = float("-inf")
    held: int = 0

    def admit(self, now: float) -> int | None:
        """None: hold this event back (it is counted). A number: log this event now,
        reporting that many events held back before it."""
        if now < self.ends_at:
            self.held += 1
            return None
        held, self.held = self.held, 0
        self.ends_at = now + self.interval
        return held

    def release(self, now: float) -> int:
        """The events held back so far, to be reported in one line. That line counts as
        the next interval's, so a burst that goes on gets one line per interval."""
        held, self.held = self.held, 0
        if held:
            self.ends_at = now + self.interval
        return held


class ThrottledLog:
    """Logs `message` for the first event of a burst and, at the end of each interval,
    once more with `suppressed` = how many were held back. Runs on the event loop."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        message: str,
        interval: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._logger = logger
        self._level = level
        self._message = message
        self._loop = loop
        self._window = BurstWindow(interval)
        self._timer: asyncio.TimerHandle | None = None
        self._last: dict[str, Any] = {}

    def note(self, **fields: Any) -> None:
        self._last = fields
        held = self._window.admit(self._loop.time())
        if held is not None:
            self._emit(fields, held)
        elif self._timer is None:
            self._timer = self._loop.call_at(self._window.ends_at, self._release)

    def _release(self) -> None:
        self._timer = None
        held = self._window.release(self._loop.time())
        if held:
            self._emit(self._last, held)

    def _emit(self, fields: dict[str, Any], held: int) -> None:
        extra = dict(fields)
        if held:
            extra.update(suppressed=held, interval_seconds=self._window.interval)
        self._logger.log(self._level, self._message, extra=extra)
