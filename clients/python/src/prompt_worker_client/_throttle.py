"""Log lines that could repeat thousands of times a second (a full buffer, an outage) are
written at most once a minute per kind, saying how many were held back."""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("prompt_worker_client")


class Throttle:
    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        """Log `message` unless a `kind` line was logged within the interval."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            message += f" ({held} similar messages held back in the last {self.interval:g} s)"
        logger.log(level, message, *args)

    def reset(self, kind: str) -> None:
        """Log the next `kind` line at once (the condition ended, e.g. the service is back)."""
        with self._lock:
            self._last.pop(kind, None)
            self._held.pop(kind, None)
