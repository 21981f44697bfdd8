"""COPY ingest on a real PostgreSQL: the rows COPY stores are the rows the INSERT path
stores, a failure anywhere in a COPY leaves nothing behind (rows, idempotency key), a lost
connection is a database outage the pool recovers from, and concurrent batches each land
whole."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from models.conversations import Conversation
from optimizer import copy_insert, idempotency
from optimizer.errors import Conflict
from optimizer.http.errors import is_database_outage
from optimizer.ingest import COLUMNS, References, ingest
from optimizer.ingest_record import MAX_TOKENS
from tests.integration.test_ingest import World, conversation_count, record, seed
from tests.integration.test_ingest_idempotency import claim, key_count

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
# What COPY's text format escapes or could mistake for its own syntax, and Unicode.
AWKWARD = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "end\\",
    "\\N",
    "\\.",
    "\\.\n",
    "\\t\\n literally",
    "quotes \" and '",
    "commas, semicolons; pipes|",
    "é 😀 中文 \u200f rtl",
    "\x01\x7f\x1b controls",
]
OPTIONAL = (
    "experiment_id",
    "success",
    "rating",
    "latency_ms",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "segment",
    "tags",
    "transcript",
    "messages",
    "occurred_at",
)


def awkward_batch(world: World) -> list[dict[str, Any]]:
    rows = [
        record(unit_id="nothing optional"),
        record(unit_id="all null", **dict.fromkeys(OPTIONAL)),
    ]
    for i, value in enumerate(AWKWARD):
        rows.append(
            record(
                unit_id=f"{i} {value}",
                segment=value,
                tags=[value, "plain", "é"],
                transcript=value * 3,
                # Stored as JSON text: COPY must carry its escapes (\n, \u0001) through intact.
                messages=[
                    {"role": "user", "content": value},
                    {"role": "assistant", "content": [{"type": "text", "text": value}] * 2},
                ],
                success=i % 2 == 0,
                rating=1 + i % 5,
                latency_ms=[0, 0.1, 5e-324, 1e-300, 12345.678][i % 5],
                cost_usd=[0.0004, 1, 0.0][i % 3],
                input_tokens=[0, MAX_TOKENS, 17][i % 3],
                occurred_at=["2026-01-01T00:00:00", "2026-03-04T05:06:07.891234+05:45"][i % 2],
            )
        )
    rows.append(record(unit_id="no tags", tags=[], transcript="", messages=[]))
    assert world.experiment_id is not None
    for unit in world.units_of(2, 3) + world.units_of(1, 2):
        rows.append(
            record(unit_id=unit, version=world.assigned(unit), experiment_id=world.experiment_id)
        )
    return rows


def stored_rows(engine: Engine, after_id: int = 0) -> list[tuple[Any, ...]]:
    """Every column ingest writes, in id order, each value by repr (so -0.0 is not 0.0, nor
    1 equal to 1.0 or True)."""
    table = Conversation.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(*(table.c[name] for name in COLUMNS))
            .where(table.c.id > after_id)
            .order_by(table.c.id)
        )
        return [tuple(repr(value) for value in row) for row in rows]


def last_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(Conversation.id), 0))).scalar_one())


class CopySpy:
    """Counts the COPYs ingest runs (the real ones)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = copy_insert.copy_rows

        def spy(conn: Connection, table: str, columns: Sequence[str], rows: Any) -> None:
            self.calls += 1
            real(conn, table, columns, rows)

        monkeypatch.setattr(copy_insert, "copy_rows", spy)


def test_copy_stores_exactly_what_insert_stores(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = seed(pg_engine, experiment=[(1, 1.0), (2, 1.0)])
    batch = awkward_batch(world)
    spy = CopySpy(monkeypatch)
    assert ingest(pg_engine, {"conversations": batch}, now=NOW) == len(batch)
    assert spy.calls == 1
    by_copy = stored_rows(pg_engine)
    middle = last_id(pg_engine)
    with monkeypatch.context() as patch:
        patch.setattr(copy_insert, "available", lambda conn: False)
        assert ingest(pg_engine, {"conversations": batch}, now=NOW) == len(batch)
    assert spy.calls == 1  # the second batch went in with INSERT
    by_insert = stored_rows(pg_engine, middle)
    assert len(by_copy) == len(batch) and by_copy == by_insert
    # The text went through COPY's escaping unchanged, NULLs stayed NULL.
    with pg_engine.connect() as conn:
        segments = set(conn.execute(select(Conversation.segment)).scalars())
        minimal = conn.execute(
            select(Conversation).where(
                Conversation.unit_id == "nothing optional", Conversation.id <= middle
            )
        ).one()
    assert set(AWKWARD) <= segments
    with pg_engine.connect() as conn:
        turns = dict(conn.execute(select(Conversation.segment, Conversation.messages)).all())
    for value in AWKWARD:
        assert json.loads(turns[value]) == [
            {"role": "user", "content": value},
            {"role": "assistant", "content": f"{value}\n\n{value}"},
        ]
    assert [getattr(minimal, name) for name in OPTIONAL[:-1]] == [None] * (len(OPTIONAL) - 1)
    assert minimal.occurred_at == NOW and minimal.ingested_at is not None


def tamper(monkeypatch: pytest.MonkeyPatch, at: int, column: str, value: Any) -> None:
    """Row `at` of the batch gets `value` in `column` after every check passed, as if the
    database had changed between the lookups and the COPY."""
    real = References.row_for
    position = COLUMNS.index(column)

    def row_for(self: References, draft: Any) -> Any:
        row, errors = real(self, draft)
        if row is not None and draft.index == at:
            row = (*row[:position], value, *row[position + 1 :])
        return row, errors

    monkeypatch.setattr(References, "row_for", row_for)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("version_id", 2**40),  # a foreign key: checked when the statement ends
        ("rating", 9),  # a CHECK constraint: fails while the rows are still streaming
    ],
)
def test_a_failure_in_the_middle_of_a_copy_stores_nothing(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch, column: str, value: Any
) -> None:
    seed(pg_engine)
    spy = CopySpy(monkeypatch)
    tamper(monkeypatch, 600, column, value)
    body = {"conversations": [record(unit_id=f"u{i}", transcript="t" * 500) for i in range(1000)]}
    with pytest.raises(Conflict, match="nothing was stored, send them again"):
        ingest(pg_engine, body, now=NOW, key=claim("k", b"body"))
    assert spy.calls == 1
    assert conversation_count(pg_engine) == 0 and key_count(pg_engine) == 0
    # The connection went back to the pool clean: the same batch, untampered, goes in.
    monkeypatch.undo()
    assert ingest(pg_engine, body, now=NOW, key=claim("k", b"body")) == 1000
    assert conversation_count(pg_engine) == 1000 and key_count(pg_engine) == 1


def test_a_connection_lost_during_a_copy_is_an_outage_and_stores_nothing(
    pg_engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(pg_engine)
    real = copy_insert.copy_rows
    killer = create_engine(pg_url, isolation_level="AUTOCOMMIT")

    def dying(conn: Connection, table: str, columns: Sequence[str], rows: Any) -> None:
        pid = conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]

        def feed() -> Iterable[Any]:
            for i, row in enumerate(rows):
                if i == 300:
                    with killer.connect() as other:
                        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                yield row

        real(conn, table, columns, feed())

    monkeypatch.setattr(copy_insert, "copy_rows", dying)
    body = {"conversations": [record(unit_id=f"u{i}", transcript="t" * 500) for i in range(600)]}
    try:
        with pytest.raises(OperationalError) as caught:
            ingest(pg_engine, body, now=NOW)
    finally:
        killer.dispose()
    assert caught.value.connection_invalidated and is_database_outage(caught.value)
    monkeypatch.undo()
    assert conversation_count(pg_engine) == 0
    assert ingest(pg_engine, body, now=NOW) == 600  # the pool replaced the dead connection


def test_concurrent_batches_each_land_whole(pg_engine: Engine) -> None:
    world = seed(pg_engine, experiment=[(1, 1.0), (2, 1.0)])
    assert world.experiment_id is not None
    experiment_id = world.experiment_id
    start = threading.Barrier(8)

    def batch(prefix: str) -> dict[str, Any]:
        rows = []
        for i in range(300):
            unit = f"{prefix}-{i}"
            if i % 2:
                rows.append(record(unit_id=unit))
            else:
                rows.append(
                    record(unit_id=unit, version=world.assigned(unit), experiment_id=experiment_id)
                )
        return {"conversations": rows}

    def send(worker: int) -> list[int]:
        start.wait()
        if worker >= 6:  # two racing on one key with one body: stored once
            body = batch("shared")
            return [ingest(pg_engine, body, now=NOW, key=claim("shared", b"shared"))]
        return [ingest(pg_engine, batch(f"w{worker}-b{n}"), now=NOW) for n in range(3)]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert answers == [[300] * 3] * 6 + [[300]] * 2
    with pg_engine.connect() as conn:
        units = conn.execute(select(Conversation.unit_id)).scalars().all()
    per_batch = Counter(unit.split("-")[0] for unit in units)
    # "w3-b1-7" groups by "w3": three batches of 300 per worker.
    assert per_batch == {**{f"w{w}": 900 for w in range(6)}, "shared": 300}
    assert key_count(pg_engine) == 1
    assert idempotency.stored_answer(pg_engine, claim("shared", b"shared"), now=NOW) == 300
