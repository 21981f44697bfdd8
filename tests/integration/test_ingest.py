"""Conversation ingest on real SQLite and PostgreSQL: every field check, reference lookups,
all-or-nothing batches, and the JSONL import command."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.assignment import pick_arm
from optimizer.cli.conversations import cmd_conversations_import, register
from optimizer.config import Settings
from optimizer.db import read_only
from optimizer.errors import InvalidInput
from optimizer.ingest import FIELDS, MAX_BATCH, RowsInvalid, ingest
from optimizer.ingest_record import FUTURE_TOLERANCE, MAX_TOKENS
from optimizer.resolve import resolve
from optimizer.stats import metric

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
MAX_LATENCY_MS = int(metric("latency_ms").bounds[1])
MAX_COST_USD = int(metric("cost_usd").bounds[1])


# --- seeding (direct model rows; no dependency on optimizer.prompts) ---------------------


@dataclass
class World:
    prompt_id: int
    name: str
    versions: dict[int, int]  # number -> version id
    experiment_id: int | None = None
    arms: dict[int, int] = field(default_factory=dict)  # version number -> arm id
    weights: dict[int, float] = field(default_factory=dict)  # version number -> arm weight

    def assigned(self, unit_id: str) -> int:
        """The version number of the arm whose slice holds `unit_id` (as resolve computes)."""
        assert self.experiment_id is not None
        arm_id = pick_arm(
            self.experiment_id, unit_id, [(self.arms[n], self.weights[n]) for n in self.arms]
        )
        return next(n for n, arm in self.arms.items() if arm == arm_id)

    def units_of(self, number: int, count: int = 1, prefix: str = "u") -> list[str]:
        """`count` unit ids whose slice is the arm of version `number`."""
        found: list[str] = []
        i = 0
        while len(found) < count:
            if self.assigned(unit := f"{prefix}{i}") == number:
                found.append(unit)
            i += 1
        return found


def seed(
    engine: Engine,
    name: str = "support-bot",
    numbers: Sequence[int] = (1, 2, 3),
    active: int | None = 1,
    experiment: Sequence[tuple[int, float]] | None = None,
    status: str = "running",
    stopped: Sequence[int] = (),
) -> World:
    """A prompt with versions; `experiment` = [(version number, weight)], first is control."""
    with Session(engine) as session, session.begin():
        prompt = Prompt(name=name)
        session.add(prompt)
        session.flush()
        versions = {}
        for number in numbers:
            content = f"{name} prompt v{number}"
            version = PromptVersion(
                prompt_id=prompt.id,
                version=number,
                content=content,
                content_hash=hashlib.sha256(content.encode()).hexdigest(),
                status="active" if number == active else "candidate",
            )
            session.add(version)
            session.flush()
            versions[number] = version.id
        world = World(prompt.id, name, versions)
        if experiment is not None:
            exp = Experiment(prompt_id=prompt.id, status=status)
            session.add(exp)
            session.flush()
            world.experiment_id = exp.id
            for position, (number, weight) in enumerate(experiment):
                arm = ExperimentArm(
                    experiment_id=exp.id,
                    version_id=versions[number],
                    is_control=position == 0,
                    weight=weight,
                    status="stopped" if number in stopped else "active",
                )
                session.add(arm)
                session.flush()
                world.arms[number] = arm.id
                world.weights[number] = weight
        return world


def conversation_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Conversation)).scalar_one())


def stored(engine: Engine) -> list[Conversation]:
    with Session(engine) as session:
        return list(session.scalars(select(Conversation).order_by(Conversation.id)))


def record(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "support-bot", "version": 1, "unit_id": "user-1", **overrides}


# --- ingest ------------------------------------------------------------------------------


def test_single_record_with_every_field(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    [unit] = world.units_of(2)
    full = record(
        version=2,
        unit_id=unit,
        experiment_id=world.experiment_id,
        success=True,
        rating=4,
        latency_ms=812.5,
        input_tokens=1200,
        output_tokens=300,
        cost_usd=0.0042,
        segment="enterprise",
        tags=["billing", "refund"],
        transcript="hi\nthere",
        occurred_at="2026-11-21T08:30:00+01:00",
    )
    assert ingest(engine, full, now=NOW) == 1
    [row] = stored(engine)
    assert (row.prompt_id, row.version_id) == (world.prompt_id, world.versions[2])
    assert (row.experiment_id, row.arm_id) == (world.experiment_id, world.arms[2])
    assert row.assigned_arm_id == world.arms[2]
    assert (row.success, row.rating, row.latency_ms, row.cost_usd) == (True, 4, 812.5, 0.0042)
    assert (row.input_tokens, row.output_tokens, row.segment) == (1200, 300, "enterprise")
    assert json.loads(row.tags or "") == ["billing", "refund"]
    assert row.transcript == "hi\nthere"
    assert row.occurred_at == datetime(2026, 11, 21, 7, 30, tzinfo=UTC)


def test_minimal_record_defaults(engine: Engine) -> None:
    seed(engine)
    nulls = {"success": None, "experiment_id": None, "tags": None, "occurred_at": None}
    assert ingest(engine, record(**nulls), now=NOW) == 1
    [row] = stored(engine)
    assert row.experiment_id is None and row.arm_id is None and row.success is None
    assert row.assigned_arm_id is None
    assert row.tags is None and row.occurred_at == NOW


def test_batch_is_stored_whole(engine: Engine) -> None:
    seed(engine)
    batch = {
        "conversations": [record(unit_id=f"u{i}", success=i % 2 == 0) for i in range(MAX_BATCH)]
    }
    assert ingest(engine, batch, now=NOW) == MAX_BATCH
    assert conversation_count(engine) == MAX_BATCH


def test_more_than_the_limit_is_refused(engine: Engine) -> None:
    seed(engine)
    with pytest.raises(InvalidInput, match="at most 1000") as caught:
        ingest(engine, {"conversations": [record()] * (MAX_BATCH + 1)}, now=NOW)
    assert caught.value.field == "conversations"
    assert conversation_count(engine) == 0


def test_bad_rows_are_all_listed_and_nothing_is_written(engine: Engine) -> None:
    seed(engine)
    batch = [record(unit_id="a"), record(rating=6), record(), record(version=9, tags="x")]
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": batch}, now=NOW)
    found = {(e.index, e.field) for e in caught.value.errors}
    assert found == {(1, "rating"), (3, "tags")}  # field errors come before lookups
    assert "2 of 4" in str(caught.value)
    assert conversation_count(engine) == 0


def test_every_bad_field_of_a_row_is_listed_once(sqlite_engine: Engine) -> None:
    seed(sqlite_engine)
    bad = record(
        prompt=None, unit_id="", rating=9, tags=[1, " ", 2], occurred_at="soon", colour="red"
    )
    with pytest.raises(RowsInvalid) as caught:
        ingest(sqlite_engine, {"conversations": [record(), bad]}, now=NOW)
    problems = {e.field: e.problem for e in caught.value.errors}
    assert {e.index for e in caught.value.errors} == {1} and len(caught.value.errors) == 6
    assert problems == {
        "prompt": "is required: the prompt's name",
        "unit_id": "is empty",
        "rating": "must be 1..5 (a whole number); got 9",
        "tags": "tags[0] must be a string; got 1",
        "occurred_at": "must be an ISO 8601 date-time such as 2026-11-22T09:00:00Z; got 'soon'",
        "colour": "unknown field 'colour'; allowed: " + ", ".join(FIELDS),
    }
    assert "1 of 2 conversations are invalid" in str(caught.value)
    assert conversation_count(sqlite_engine) == 0


def test_reference_errors_per_row(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    other = seed(engine, name="other", experiment=[(1, 1.0), (2, 1.0)])
    batch = [
        record(),
        record(prompt="nope"),
        record(version=7),
        record(version=3, experiment_id=world.experiment_id),
        record(version=1, experiment_id=other.experiment_id),
        record(experiment_id=999_999),
        record(version=2, unit_id=world.units_of(2)[0], experiment_id=world.experiment_id),
    ]
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": batch}, now=NOW)
    by_index = {e.index: (e.field, e.problem) for e in caught.value.errors}
    assert set(by_index) == {1, 2, 3, 4, 5}
    assert by_index[1] == ("prompt", "no prompt named 'nope'")
    assert by_index[2][0] == "version" and "no version 7" in by_index[2][1]
    assert by_index[3][0] == "experiment_id" and "not an arm" in by_index[3][1]
    assert by_index[4][0] == "experiment_id" and "another prompt" in by_index[4][1]
    assert by_index[5][0] == "experiment_id" and "does not exist" in by_index[5][1]
    assert conversation_count(engine) == 0


BAD_FIELDS = [
    ("prompt", None),
    ("prompt", ""),
    ("prompt", 5),
    ("prompt", "x" * 201),
    ("version", None),
    ("version", 0),
    ("version", "1"),
    ("version", 1.0),
    ("version", True),
    ("version", 2**40),
    ("unit_id", None),
    ("unit_id", " "),
    ("unit_id", "u" * 201),
    ("unit_id", "a\x00b"),
    ("unit_id", "\ud800"),
    ("experiment_id", 0),
    ("experiment_id", "1"),
    ("experiment_id", 2**63),
    ("success", 1),
    ("success", "true"),
    ("rating", 0),
    ("rating", 6),
    ("rating", 4.0),
    ("rating", True),
    ("latency_ms", -1),
    ("latency_ms", "5"),
    ("latency_ms", 10**400),
    ("latency_ms", False),
    ("latency_ms", 86_400_001),
    ("latency_ms", 1e200),
    pytest.param("latency_ms", 10**5000, id="latency_ms-10**5000"),
    ("latency_ms", "NaN"),
    ("cost_usd", -0.01),
    ("cost_usd", 1001),
    ("cost_usd", 10**400),
    ("cost_usd", "Infinity"),
    ("input_tokens", -1),
    ("input_tokens", 1.5),
    ("input_tokens", 10_000_001),
    ("input_tokens", 10**400),
    ("output_tokens", 2**31),
    ("output_tokens", "1"),
    ("segment", "s" * 201),
    ("segment", ["a"]),
    ("tags", "a"),
    ("tags", ["a"] * 51),
    ("tags", [1]),
    ("tags", ["t" * 101]),
    ("tags", [{"a": 1}]),
    ("transcript", "t" * 100_001),
    ("transcript", 5),
    ("occurred_at", "yesterday"),
    ("occurred_at", 1700000000),
    ("occurred_at", "2026-11-22T09:05:01Z"),
    ("occurred_at", "9999-12-31T23:59:59Z"),
    ("occurred_at", "2026-11-22T10:06:00+01:00"),
    ("bogus", 1),
    ("bogus", None),  # an unknown field is refused even when null
]


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS)
def test_each_bad_field_is_named(sqlite_engine: Engine, name: str, value: Any) -> None:
    seed(sqlite_engine)
    raw = record(**{name: value})
    with pytest.raises(RowsInvalid) as caught:
        ingest(sqlite_engine, raw, now=NOW)
    [error] = caught.value.errors
    assert (error.index, error.field) == (0, name)
    assert error.problem
    assert conversation_count(sqlite_engine) == 0


@pytest.mark.parametrize(
    "body",
    [
        [record()],
        "x",
        5,
        None,
        {"conversations": []},
        {"conversations": {}},
        {"conversations": [record()], "x": 1},
    ],
)
def test_bad_body_shapes(sqlite_engine: Engine, body: Any) -> None:
    seed(sqlite_engine)
    with pytest.raises(InvalidInput):
        ingest(sqlite_engine, body, now=NOW)
    assert conversation_count(sqlite_engine) == 0


def test_non_object_items_and_error_cap(sqlite_engine: Engine) -> None:
    seed(sqlite_engine)
    batch = [5, *[{f"junk{i}": 1 for i in range(30)}] * 10]
    with pytest.raises(RowsInvalid) as caught:
        ingest(sqlite_engine, {"conversations": batch}, now=NOW)
    assert caught.value.errors[0].index == 0 and caught.value.errors[0].field is None
    assert len(caught.value.errors) == 100 and caught.value.omitted > 0


def test_nul_and_limits_are_accepted_at_the_edge_on_both_databases(engine: Engine) -> None:
    seed(engine)
    edge = record(
        unit_id="u" * 200,
        segment="s" * 200,
        tags=["t" * 100] * 50,
        transcript="é" * 100_000,
        input_tokens=MAX_TOKENS,
        rating=5,
        occurred_at="2026-01-01T00:00:00",
    )
    assert ingest(engine, edge, now=NOW) == 1
    with pytest.raises(RowsInvalid):
        ingest(engine, record(transcript="a\x00b"), now=NOW)
    assert conversation_count(engine) == 1


# --- the unit's slice: assigned_arm_id and the assignment rule -----------------------------


def test_assigned_arm_is_stored_for_every_row_with_an_experiment(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 2.0), (3, 1.0)])
    units = [f"unit-{i}" for i in range(120)]
    batch = [
        record(unit_id=u, version=world.assigned(u), experiment_id=world.experiment_id)
        for u in units
    ] + [record(unit_id="no-experiment")]
    assert ingest(engine, {"conversations": batch}, now=NOW) == len(batch)
    rows = stored(engine)
    slices = [(world.arms[n], world.weights[n]) for n in (1, 2, 3)]
    assert {row.assigned_arm_id for row in rows[:-1]} == set(world.arms.values())
    for row, unit in zip(rows, units, strict=False):
        assert row.assigned_arm_id == pick_arm(world.experiment_id or 0, unit, slices)
        assert row.arm_id == row.assigned_arm_id
    assert (rows[-1].experiment_id, rows[-1].arm_id, rows[-1].assigned_arm_id) == (None, None, None)


def test_a_row_for_another_arm_is_refused_and_its_batch_not_stored(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    good = [
        record(unit_id=u, version=world.assigned(u), experiment_id=world.experiment_id)
        for u in ("a", "b", "c")
    ]
    [unit] = world.units_of(2, prefix="u-")
    wrong = record(unit_id=unit, version=1, experiment_id=world.experiment_id)
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": [*good, wrong]}, now=NOW)
    [error] = caught.value.errors
    assert (error.index, error.field) == (3, "version")
    assert error.problem == (
        f"unit {unit!r} is assigned to version 2 (arm {world.arms[2]}) of experiment "
        f"{world.experiment_id}, not version 1; send the version and experiment_id that "
        "resolve returned"
    )
    assert conversation_count(engine) == 0


def test_a_stopped_arms_units_may_log_control_or_the_stopped_version(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0), (3, 1.0)])
    with Session(engine) as session, session.begin():
        session.execute(
            update(ExperimentArm).where(ExperimentArm.id == world.arms[3]).values(status="stopped")
        )
    eid = world.experiment_id
    unit_3, other_3 = world.units_of(3, 2)
    [unit_2] = world.units_of(2)
    assert resolve(engine, "support-bot", unit_3)["version"] == 1
    allowed = [
        record(unit_id=unit_3, version=1, experiment_id=eid),  # served control now
        record(unit_id=other_3, version=3, experiment_id=eid),  # logged late
        record(unit_id=unit_2, version=2, experiment_id=eid),
    ]
    assert ingest(engine, {"conversations": allowed}, now=NOW) == 3
    rows = stored(engine)
    assert [(r.arm_id, r.assigned_arm_id) for r in rows] == [
        (world.arms[1], world.arms[3]),
        (world.arms[3], world.arms[3]),
        (world.arms[2], world.arms[2]),
    ]
    refused = [
        record(unit_id=unit_3, version=2, experiment_id=eid),
        record(unit_id=unit_2, version=1, experiment_id=eid),
        record(unit_id=unit_2, version=3, experiment_id=eid),
    ]
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": refused}, now=NOW)
    problems = {e.index: e.problem for e in caught.value.errors}
    assert {e.field for e in caught.value.errors} == {"version"} and set(problems) == {0, 1, 2}
    assert problems[0] == (
        f"unit {unit_3!r} is assigned to version 3 (arm {world.arms[3]}, stopped: its units "
        f"now get the control, version 1) of experiment {eid}, not version 2; send the "
        "version and experiment_id that resolve returned"
    )
    assert f"assigned to version 2 (arm {world.arms[2]}) of" in problems[2]
    assert conversation_count(engine) == 3


@pytest.mark.parametrize("status", ["paused", "completed", "stopped"])
def test_rows_for_an_experiment_not_running_keep_the_arm_rule(engine: Engine, status: str) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)], status=status)
    eid = world.experiment_id
    [unit] = world.units_of(2)
    # Served control while paused, or the winner after the end: any arm's version goes.
    assert (
        ingest(
            engine,
            {
                "conversations": [
                    record(unit_id=unit, version=1, experiment_id=eid),
                    record(unit_id=unit, version=2, experiment_id=eid),
                ]
            },
            now=NOW,
        )
        == 2
    )
    assert [(r.arm_id, r.assigned_arm_id) for r in stored(engine)] == [
        (world.arms[1], world.arms[2]),
        (world.arms[2], world.arms[2]),
    ]
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, record(unit_id=unit, version=3, experiment_id=eid), now=NOW)
    assert caught.value.errors[0].field == "experiment_id"
    assert conversation_count(engine) == 2


# --- bounds and the future -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "limit", "over"),
    [
        ("latency_ms", MAX_LATENCY_MS, math.nextafter(MAX_LATENCY_MS, math.inf)),
        ("latency_ms", float(MAX_LATENCY_MS), MAX_LATENCY_MS + 1),
        ("cost_usd", MAX_COST_USD, math.nextafter(MAX_COST_USD, math.inf)),
        ("input_tokens", MAX_TOKENS, MAX_TOKENS + 1),
        ("output_tokens", MAX_TOKENS, MAX_TOKENS + 1),
    ],
)
def test_numbers_are_accepted_at_their_bound_and_refused_past_it(
    engine: Engine, name: str, limit: float, over: float
) -> None:
    seed(engine)
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": [record(), record(**{name: over})]}, now=NOW)
    [error] = caught.value.errors
    assert (error.index, error.field) == (1, name)
    assert conversation_count(engine) == 0
    assert ingest(engine, record(**{name: limit}), now=NOW) == 1
    assert ingest(engine, record(**{name: 0}), now=NOW) == 1
    assert sorted(getattr(row, name) for row in stored(engine)) == [0, limit]


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("latency_ms", 1e200, "must be a finite number from 0 to 86,400,000 (one day); got 1e+200"),
        ("latency_ms", -1, "must be a finite number from 0 to 86,400,000 (one day); got -1"),
        ("latency_ms", "5", "must be a finite number from 0 to 86,400,000 (one day); got '5'"),
        ("cost_usd", 1000.5, "must be a finite number from 0 to 1,000; got 1000.5"),
        pytest.param(
            "cost_usd",
            10**5000,
            "must be a finite number from 0 to 1,000; got a whole number of about 5000 digits",
            id="cost_usd-10**5000",
        ),
        ("input_tokens", 10_000_001, "must be a whole number from 0 to 10,000,000; got 10000001"),
        ("output_tokens", 1.0, "must be a whole number from 0 to 10,000,000; got 1.0"),
    ],
)
def test_bound_messages(sqlite_engine: Engine, name: str, value: Any, problem: str) -> None:
    seed(sqlite_engine)
    with pytest.raises(RowsInvalid) as caught:
        ingest(sqlite_engine, record(**{name: value}), now=NOW)
    assert [(e.field, e.problem) for e in caught.value.errors] == [(name, problem)]


def test_occurred_at_in_the_future_is_refused_past_the_tolerance(engine: Engine) -> None:
    seed(engine)
    at = NOW + FUTURE_TOLERANCE + timedelta(seconds=1)
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": [record(), record(occurred_at=at.isoformat())]}, now=NOW)
    [error] = caught.value.errors
    assert (error.index, error.field) == (1, "occurred_at")
    assert error.problem == (
        "is 2026-11-22T09:05:01Z, more than 5 minutes after the server's time "
        "2026-11-22T09:00:00Z; send when the conversation happened, in UTC or with its offset"
    )
    assert conversation_count(engine) == 0
    accepted = [
        NOW + timedelta(minutes=4),
        NOW + FUTURE_TOLERANCE,
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    ]
    texts = [
        (NOW + timedelta(minutes=4)).isoformat(),
        "2026-11-22T10:05:00+01:00",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00",
    ]
    batch = [record(unit_id=f"u{i}", occurred_at=text) for i, text in enumerate(texts)]
    assert ingest(engine, {"conversations": batch}, now=NOW) == 4
    assert [row.occurred_at for row in stored(engine)] == accepted


# --- CLI import --------------------------------------------------------------------------


def run_import(engine: Engine, path: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["conversations", "import", str(path), *extra])
    assert args.func is cmd_conversations_import
    return int(args.func(args, Settings(), engine))


def write_lines(path: Path, lines: Sequence[Any]) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


def test_import_in_chunks(engine: Engine, tmp_path: Path, capsys) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 3.0)])
    lines = [
        record(
            unit_id=f"u{i}",
            version=world.assigned(f"u{i}"),
            experiment_id=world.experiment_id,
            success=i % 3 == 0,
        )
        for i in range(250)
    ]
    path = write_lines(tmp_path / "c.jsonl", [*lines[:100], "", *lines[100:]])
    assert run_import(engine, path, "--batch", "60") == 0
    assert capsys.readouterr().out.strip() == "imported 250 conversations"
    assert conversation_count(engine) == 250
    rows = stored(engine)
    assert {row.arm_id for row in rows} == {world.arms[1], world.arms[2]}
    assert all(row.arm_id == row.assigned_arm_id for row in rows)


def test_import_with_bad_lines_writes_nothing(engine: Engine, tmp_path: Path, capsys) -> None:
    seed(engine)
    lines: list[Any] = [record(unit_id=f"u{i}") for i in range(20)]
    lines[6] = record(rating=9)  # line 7
    lines[14] = "{not json"  # line 15
    lines[17] = record(prompt="missing")  # line 18
    path = write_lines(tmp_path / "c.jsonl", lines)
    assert run_import(engine, path, "--batch", "5") == 1
    err = capsys.readouterr().err
    assert "line 7: rating: must be 1..5" in err
    assert "line 15: not valid JSON" in err
    assert "line 18: prompt: no prompt named 'missing'" in err
    assert conversation_count(engine) == 0


def test_import_refuses_a_line_for_another_arm(engine: Engine, tmp_path: Path, capsys) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    lines = [
        record(unit_id=f"u{i}", version=world.assigned(f"u{i}"), experiment_id=world.experiment_id)
        for i in range(30)
    ]
    unit = lines[11]["unit_id"]
    lines[11]["version"] = 3 - lines[11]["version"]  # line 12: the other arm's version
    path = write_lines(tmp_path / "c.jsonl", lines)
    assert run_import(engine, path, "--batch", "7") == 1
    err = capsys.readouterr().err
    assert f"line 12: version: unit {unit!r} is assigned to version" in err
    assert conversation_count(engine) == 0


def test_import_bad_utf8_and_missing_file(sqlite_engine: Engine, tmp_path: Path, capsys) -> None:
    seed(sqlite_engine)
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(record()).encode() + b"\n\xff\xfe\n")
    assert run_import(sqlite_engine, path) == 1
    assert "line 2: not UTF-8" in capsys.readouterr().err
    with pytest.raises(InvalidInput, match="cannot read"):
        run_import(sqlite_engine, tmp_path / "absent.jsonl")
    with pytest.raises(InvalidInput, match="batch"):
        run_import(sqlite_engine, path, "--batch", "0")
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(InvalidInput, match="no conversations"):
        run_import(sqlite_engine, empty)
    assert conversation_count(sqlite_engine) == 0


# --- resolve beside a writer ---------------------------------------------------------------


def test_resolve_reads_while_another_connection_holds_the_write_lock(
    sqlite_engine: Engine, tmp_path
) -> None:
    """On SQLite every ordinary transaction takes the write lock first; resolve must not.
    With the lock held elsewhere, a resolve that asked for it would wait out the busy
    timeout and fail with "database is locked"."""
    world = seed(sqlite_engine, experiment=[(1, 1.0), (2, 1.0)])
    path = sqlite_engine.url.database
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE prompts SET name = name")
        answer = resolve(read_only(sqlite_engine), "support-bot", "user-7")
        assert answer["experiment_id"] == world.experiment_id
    finally:
        writer.execute("ROLLBACK")
        writer.close()
