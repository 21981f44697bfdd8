"""Hypothesis against conversation ingest: batches of every allowed shape are stored exactly,
and a batch with one bad row anywhere is refused whole.

Batches mix rows without an experiment, rows for a running experiment (with a version that
resolve would serve the unit, a stopped arm's slice included) and rows for a completed one;
optional fields are absent, null or present; values sit at the edges (0, the bounds
themselves, subnormal floats, whole-number floats), strings carry any Unicode but lone
surrogates and NUL, control characters included; unit ids repeat within a batch.

Properties: a valid batch answers its row count and stores exactly those rows (every field,
the served and the assigned arm, finite numbers); a batch with one bad row raises
RowsInvalid naming that row (400 over HTTP, never a 5xx) and stores nothing. Directly and
over HTTP, on SQLite and PostgreSQL. On PostgreSQL, COPY (what ingest uses there) and
INSERT store the same values for any valid batch.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from optimizer import copy_insert
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.ingest import RowsInvalid, ingest
from optimizer.ingest_record import FUTURE_TOLERANCE, MAX_TOKENS, ConversationRecord
from optimizer.stats import metric
from tests.integration.test_ingest import World, seed
from tests.integration.test_ingest_copy import stored_rows
from tests.support.http_client import build_app, start_client

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
INGEST = "prop-ingest-token"
MAX_LATENCY_MS = int(metric("latency_ms").bounds[1])
MAX_COST_USD = int(metric("cost_usd").bounds[1])
RECORD_SCHEMA = Draft202012Validator(ConversationRecord.model_json_schema())
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        # The seeded database is shared by the examples on purpose: each
        # one compares the rows it added, never the table's total.
        HealthCheck.function_scoped_fixture,
    ],
)


@dataclass(frozen=True)
class Worlds:
    running: World  # support-bot: v1 control, v2 (weight 2), v3 stopped
    ended: World  # done-bot: a completed experiment, v1 against v2
    plain: World  # plain-bot: no experiment

    def by_prompt(self, name: str) -> World:
        return {w.name: w for w in (self.running, self.ended, self.plain)}[name]


def seed_worlds(engine: Engine) -> Worlds:
    return Worlds(
        seed(engine, "support-bot", experiment=[(1, 1.0), (2, 2.0), (3, 1.0)], stopped=[3]),
        seed(
            engine, "done-bot", numbers=(1, 2), experiment=[(1, 1.0), (2, 1.0)], status="completed"
        ),
        seed(engine, "plain-bot"),
    )


def served_versions(world: World, unit: str) -> list[int]:
    """What a running experiment accepts for the unit: resolve's answer, and for a stopped
    arm's slice its own version too (logged late)."""
    assigned = world.assigned(unit)
    return sorted({1, assigned}) if assigned == 3 else [assigned]


# --- strategies ----------------------------------------------------------------------------

# Any character but lone surrogates and NUL: control characters, astral planes, RTL marks.
CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
NON_BLANK = st.text(CHARS, min_size=1, max_size=40).filter(str.strip)
EDGE_FLOATS = [0, 0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 1.0]


def amounts(high: int) -> st.SearchStrategy[int | float]:
    return st.one_of(
        st.sampled_from([*EDGE_FLOATS, high, float(high)]),
        st.floats(0, high, allow_subnormal=True),
        st.integers(0, high),
    )


def moments(now: datetime, ahead: timedelta) -> st.SearchStrategy[str]:
    """ISO 8601 text for an instant from year 2 to `ahead` past `now`, in any UTC offset."""
    instants = st.one_of(
        st.sampled_from([now, now + ahead, datetime(2, 1, 1, tzinfo=UTC)]),
        st.datetimes(
            min_value=datetime(2, 1, 1),
            max_value=(now + ahead).replace(tzinfo=None),
            timezones=st.just(UTC),
        ),
    )
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))

    def spell(instant: datetime, offset: timezone, style: int) -> str:
        if style == 0:
            return instant.astimezone(offset).isoformat()
        if style == 1:
            return instant.isoformat().replace("+00:00", "Z")
        return instant.replace(tzinfo=None).isoformat()  # no offset: UTC

    return st.builds(spell, instants, offsets, st.integers(0, 2))


def optional_fields(now: datetime, ahead: timedelta) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "success": st.booleans(),
        "rating": st.integers(1, 5),
        "latency_ms": amounts(MAX_LATENCY_MS),
        "cost_usd": amounts(MAX_COST_USD),
        "input_tokens": st.sampled_from([0, MAX_TOKENS]) | st.integers(0, MAX_TOKENS),
        "output_tokens": st.sampled_from([0, MAX_TOKENS]) | st.integers(0, MAX_TOKENS),
        "segment": NON_BLANK | st.text(CHARS, min_size=200, max_size=200).filter(str.strip),
        "tags": st.lists(NON_BLANK, max_size=4) | st.just(["t" * 100] * 50),
        "transcript": st.text(CHARS, max_size=300),
        "occurred_at": moments(now, ahead),
    }


@st.composite
def valid_rows(
    draw: st.DrawFn, worlds: Worlds, units: list[str], now: datetime, ahead: timedelta
) -> dict[str, Any]:
    unit = draw(st.sampled_from(units))
    kind = draw(st.sampled_from(["none", "running", "ended"]))
    if kind == "running":
        row = {
            "prompt": "support-bot",
            "experiment_id": worlds.running.experiment_id,
            "version": draw(st.sampled_from(served_versions(worlds.running, unit))),
        }
    elif kind == "ended":
        row = {
            "prompt": "done-bot",
            "experiment_id": worlds.ended.experiment_id,
            "version": draw(st.sampled_from([1, 2])),
        }
    else:  # a version of a prompt, experiment or not, logged without an experiment_id
        world = draw(st.sampled_from([worlds.plain, worlds.running]))
        row = {"prompt": world.name, "version": draw(st.sampled_from(sorted(world.versions)))}
        if draw(st.booleans()):
            row["experiment_id"] = None
    row["unit_id"] = unit
    for name, values in optional_fields(now, ahead).items():
        presence = draw(st.sampled_from(["absent", "null", "value", "value"]))
        if presence != "absent":
            row[name] = draw(values) if presence == "value" else None
    return row


# A bad value per field: just past a bound, not finite, an integer of hundreds of digits
# (too large to convert to float), the wrong type, a NaN-like string, a lone surrogate, a NUL,
# a time too far ahead (set per call). Control characters are valid: CHARS holds them.
HUGE = int("9" * 400)
BAD_VALUES: dict[str, list[Any]] = {
    "latency_ms": [
        math.nextafter(MAX_LATENCY_MS, math.inf),
        MAX_LATENCY_MS + 1,
        10**400,
        -(10**400),
        HUGE,
        1e308,
        float("nan"),
        float("inf"),
        -5e-324,
        "NaN",
        "1e308",
        "\x00",
        True,
        [1],
    ],
    "cost_usd": [
        math.nextafter(MAX_COST_USD, math.inf),
        MAX_COST_USD + 1,
        1e308,
        -1e308,
        HUGE,
        -HUGE,
        float("nan"),
        "Infinity",
        "-0.0",
        -0.001,
        {"usd": 1},
    ],
    "input_tokens": [MAX_TOKENS + 1, 10**400, -HUGE, -1, 1.0, 1e308, 5e-324, "10", "\ud800"],
    "output_tokens": [MAX_TOKENS + 1, 2**63, HUGE, -1e308, float("nan"), "NaN", False],
    "rating": [0, 6, 4.5, True, "5", 10**400, -HUGE, 1e308, -0.0, float("nan")],
    "success": [0, 1, "true", "NaN", HUGE, "\x00"],
    "unit_id": ["", " \t", "a\x00b", "\x00", "\ud800", "u\udfff", "x" * 201, 7, HUGE, 1e308],
    "segment": ["\udfff", "s\x00", "\x00", " ", "s" * 201, HUGE, -0.0],
    "transcript": ["a\x00", "\ud83d", "\ud800\x00", "t" * 100_001, HUGE, 1e308],
    "tags": [
        [" "],
        ["ok", "\x00"],
        ["\ud800"],
        ["t" * 101],
        ["t"] * 51,
        "tag",
        [1],
        [HUGE],
        [None],
    ],
    "prompt": ["no-such-bot", "", "\ud800", "\x00", "support-bot\x00", "support-bot\ud800", HUGE],
    "version": [9, 0, 1.0, "1", 10**400, -HUGE, 1e308, float("nan"), "\x00"],
    "experiment_id": [999_999, 0, -1, "1", 2**63, HUGE, -HUGE, 1e308, "\x00"],
    "occurred_at": [
        "\x00",
        "2026-01-01T00:00:00\x00",
        "\ud800",
        "NaN",
        "9" * 400,
        HUGE,
        1e308,
        -0.0,
        "not a date",
    ],
    "bogus": [1, None, "\x00"],
}


@st.composite
def bad_row(
    draw: st.DrawFn, row: dict[str, Any], worlds: Worlds, now: datetime, past_tolerance: timedelta
) -> tuple[dict[str, Any], str]:
    """`row` with one thing wrong, and the field the error must name."""
    row = dict(row)
    # Half the time one of the two rules that need more than the row itself.
    choice = draw(st.sampled_from(["future", "wrong arm"]) | st.sampled_from(list(BAD_VALUES)))
    if choice == "future":
        late = (
            now + FUTURE_TOLERANCE + draw(st.sampled_from([past_tolerance, timedelta(days=3650)]))
        )
        row["occurred_at"] = late.isoformat()
        return row, "occurred_at"
    if choice == "wrong arm":
        allowed = served_versions(worlds.running, row["unit_id"])
        row.update(
            prompt="support-bot",
            experiment_id=worlds.running.experiment_id,
            version=draw(st.sampled_from([v for v in (1, 2, 3) if v not in allowed])),
        )
        return row, "version"
    row[choice] = draw(st.sampled_from(BAD_VALUES[choice]))
    return row, choice


UNIT_POOL = st.lists(
    NON_BLANK | st.sampled_from(["u1", "u2", "é", "\x01\x7f", "u" * 200]),
    min_size=1,
    max_size=4,
    unique=True,
)


@st.composite
def batches(
    draw: st.DrawFn, worlds: Worlds, now: datetime, ahead: timedelta, past_tolerance: timedelta
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """A batch, and (index, field) of its bad row if it has one. Good occurred_at values
    reach `ahead` past `now`, bad ones `past_tolerance` beyond the tolerance."""
    units = draw(UNIT_POOL)
    rows = draw(st.lists(valid_rows(worlds, units, now, ahead), min_size=1, max_size=12))
    if draw(st.booleans()):
        return rows, None
    at = draw(st.integers(0, len(rows) - 1))
    rows[at], field = draw(bad_row(rows[at], worlds, now, past_tolerance))
    return rows, (at, field)


# --- checking what was stored ----------------------------------------------------------------


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Conversation)).scalar_one())


def last_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(Conversation.id), 0))).scalar_one())


def instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def assert_stored_exactly(
    engine: Engine,
    worlds: Worlds,
    rows: list[dict[str, Any]],
    after_id: int,
    default_time: datetime | None,
) -> None:
    with Session(engine) as session:
        got = list(
            session.scalars(
                select(Conversation).where(Conversation.id > after_id).order_by(Conversation.id)
            )
        )
    assert len(got) == len(rows)
    for row, stored in zip(rows, got, strict=True):
        world = worlds.by_prompt(row["prompt"])
        assert (stored.prompt_id, stored.version_id, stored.unit_id) == (
            world.prompt_id,
            world.versions[row["version"]],
            row["unit_id"],
        )
        experiment_id = row.get("experiment_id")
        assert stored.experiment_id == experiment_id
        if experiment_id is None:
            assert stored.arm_id is None and stored.assigned_arm_id is None
        else:
            assert stored.arm_id == world.arms[row["version"]]
            assert stored.assigned_arm_id == world.arms[world.assigned(row["unit_id"])]
        for name in ("success", "rating", "input_tokens", "output_tokens", "segment", "transcript"):
            assert getattr(stored, name) == row.get(name), name
        for name in ("latency_ms", "cost_usd"):
            value = getattr(stored, name)
            if row.get(name) is None:
                assert value is None, name
            else:
                assert math.isfinite(value) and value == float(row[name]), (name, value)
        tags = row.get("tags")
        assert (None if stored.tags is None else json.loads(stored.tags)) == tags
        if row.get("occurred_at") is not None:
            assert stored.occurred_at == instant(row["occurred_at"])
        elif default_time is not None:
            assert stored.occurred_at == default_time


# --- directly, on SQLite and PostgreSQL -------------------------------------------------------


@pytest.fixture
def worlds(engine: Engine) -> Worlds:
    return seed_worlds(engine)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_batches_are_stored_exactly_or_not_at_all(
    engine: Engine, worlds: Worlds, data: st.DataObject
) -> None:
    rows, bad = data.draw(batches(worlds, NOW, FUTURE_TOLERANCE, timedelta(microseconds=1)))
    before, after_id = count(engine), last_id(engine)
    if bad is None:
        assert ingest(engine, {"conversations": rows}, now=NOW) == len(rows)
        assert_stored_exactly(engine, worlds, rows, after_id, NOW)
        # What ingest accepts, the OpenAPI document's schema of a record accepts too.
        for row in rows:
            assert RECORD_SCHEMA.is_valid(row), row
        return
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": rows}, now=NOW)
    note(f"bad row {bad}: {caught.value.errors}")
    assert bad in {(e.index, e.field) for e in caught.value.errors}
    assert count(engine) == before


@pytest.fixture
def pg_worlds(pg_engine: Engine) -> Worlds:
    return seed_worlds(pg_engine)


@pytest.mark.postgres
@PROPERTY_SETTINGS
@given(data=st.data())
def test_copy_and_insert_store_the_same_values(
    pg_engine: Engine, pg_worlds: Worlds, data: st.DataObject
) -> None:
    units = data.draw(UNIT_POOL)
    rows = data.draw(
        st.lists(valid_rows(pg_worlds, units, NOW, FUTURE_TOLERANCE), min_size=1, max_size=12)
    )
    start = last_id(pg_engine)
    assert ingest(pg_engine, {"conversations": rows}, now=NOW) == len(rows)
    middle = last_id(pg_engine)
    with mock.patch.object(copy_insert, "available", return_value=False):
        assert ingest(pg_engine, {"conversations": rows}, now=NOW) == len(rows)
    by_copy = stored_rows(pg_engine, start)[: len(rows)]
    assert by_copy == stored_rows(pg_engine, middle)


# --- over HTTP, on SQLite and PostgreSQL -----------------------------------------------------


class Client:
    """One real app on a migrated database, driven from the synchronous test."""

    def __init__(self, engine: Engine) -> None:
        self.loop = asyncio.new_event_loop()
        app = build_app(engine, Settings(ingest_token=INGEST))
        self.client = self.loop.run_until_complete(start_client(app))

    def post(self, body: bytes) -> tuple[int, Any]:
        async def send() -> tuple[int, Any]:
            resp = await self.client.post(
                "/v1/conversations",
                data=body,
                headers={"Authorization": f"Bearer {INGEST}", "Content-Type": "application/json"},
            )
            return resp.status, await resp.json()

        return self.loop.run_until_complete(send())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def http(module_engine: Engine) -> Iterator[tuple[Engine, Worlds, Client]]:
    client = Client(module_engine)
    yield module_engine, seed_worlds(module_engine), client
    client.close()


INF = "__INF__"


def to_json(value: Any) -> Any:
    """JSON has no NaN or Infinity: those go as the number 1e400, which parses to inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return INF
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


@PROPERTY_SETTINGS
@given(data=st.data())
def test_http_batches_are_202_and_stored_or_400_and_not(
    http: tuple[Engine, Worlds, Client], data: st.DataObject
) -> None:
    engine, worlds, client = http
    # The server reads its own clock: dates keep a minute clear of the tolerance.
    minute = timedelta(minutes=1)
    rows, bad = data.draw(batches(worlds, utcnow(), FUTURE_TOLERANCE - minute, minute))
    body = json.dumps(to_json({"conversations": rows}))
    before, after_id = count(engine), last_id(engine)
    status, answer = client.post(body.replace(f'"{INF}"', "1e400").encode())
    note(f"{status} {answer}")
    if bad is None:
        assert (status, answer) == (202, {"accepted": len(rows)})
        assert_stored_exactly(engine, worlds, rows, after_id, None)
        return
    assert status == 400
    if INF not in body:  # inf is refused with the whole document, before any row
        assert list(bad) in [[e["index"], e["field"]] for e in answer["errors"]]
    assert count(engine) == before
