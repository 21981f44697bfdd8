"""Fixtures for the integration tests beyond those of tests/conftest.py (databases, clients)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.db import create_db_engine
from tests.support.ui_seed import Seeded, seed_large


@pytest.fixture(scope="module")
def large_seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Seeded]]:
    """SLOW (about 10 s): the dashboard's large seed (100 prompts x 50 versions, 1,000
    experiments, 200 checks on one; tests/support/ui_seed.py) on a SQLite file, SQLite only.
    Written once per module that asks for it, so a test that changes it touches no other
    module's copy."""
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('large') / 'large.db'}")
    seeded = seed_large(engine, utcnow())
    yield engine, seeded
    engine.dispose()
