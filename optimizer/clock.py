"""The one place that reads the wall clock, and the one place that formats a moment for
people and JSON. Logic takes `now` as an argument."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    return datetime.now(UTC)


def _in_utc(moment: datetime) -> datetime:
    # Stored times are UTC; a naive one (a row written by hand) is read as UTC too.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@overload
def iso(moment: datetime, timespec: str = "auto") -> str: ...
@overload
def iso(moment: None, timespec: str = "auto") -> None: ...
def iso(moment: datetime | None, timespec: str = "auto") -> str | None:
    """ISO 8601 in UTC with a Z, as every JSON answer and webhook carries it:
    2026-11-22T09:00:00.123456Z (timespec="seconds": 2026-11-22T09:00:00Z)."""
    if moment is None:
        return None
    return _in_utc(moment).isoformat(timespec=timespec).replace("+00:00", "Z")


def table_time(moment: datetime | None) -> str:
    """A moment in a CLI table: 2026-11-22 09:00:00Z, or '-' when there is none."""
    return "-" if moment is None else _in_utc(moment).strftime("%Y-%m-%d %H:%M:%SZ")
