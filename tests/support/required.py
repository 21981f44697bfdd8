"""Tests that need a tool the machine may lack: skipped with the reason on a developer's
machine, failed when CI says the tool must be there (REQUIRE_POSTGRES, REQUIRE_BROWSER,
REQUIRE_COMPOSE, set by .ci/run)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing_tool(flag: str, reason: str) -> NoReturn:
    """Skip the test with `reason`, or fail it when the environment sets `flag` to 1."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {reason}")
    pytest.skip(reason)
