"""This process's counters since start, as /health reports them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

STAT_NAMES = (
    "jobsCompleted",
    "jobsFailed",
    "patternsAnalyzed",
    "variantsGenerated",
    "experimentsCreated",
    "experimentsCompleted",
)


@dataclass
class RunStats:
    _counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_NAMES, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, amount: int = 1) -> None:
        if name not in self._counts:
            raise KeyError(f"unknown stat {name!r}; known: {', '.join(STAT_NAMES)}")
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
