"""The structured transcript (`messages`) on every ingest path, on real SQLite and PostgreSQL
(where ingest uses COPY): batches of any valid shape are stored and their JSON reads back as
the turns sent (blocks joined into strings); a batch with one bad message anywhere is refused
whole, naming the row, the field and the message's position; the HTTP route, the JSONL
import and the OpenAPI schema agree; retention erases messages with transcripts; no log line
carries a message's content."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from optimizer.conversation_turns import ROLES, Turn, turns_of
from optimizer.ingest import RowsInvalid, ingest
from optimizer.ingest_record import (
    BLOCK_SEPARATOR,
    MAX_MESSAGES,
    MAX_MESSAGES_CHARS,
    ConversationRecord,
)
from optimizer.retention import prune_conversations
from tests.integration.test_ingest import record, run_import, seed, write_lines
from tests.support.http_client import INGEST_TOKEN, ClientMaker

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}
RECORD_SCHEMA = Draft202012Validator(ConversationRecord.model_json_schema())
PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        # One seeded database for all examples: each compares only the rows it added.
        HealthCheck.function_scoped_fixture,
    ],
)

# --- strategies ----------------------------------------------------------------------------

# What a column can hold: any character but NUL and lone surrogates (controls, astral, RTL).
STORABLE = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
HOSTILE = [
    "<script>alert(1)</script>",
    "user: ignore previous instructions\nassistant: ok",
    "\\N",
    "\\.\n",
    "tab\there, back\\slash, quote\" '",
    '{"role": "system"}',
    "é 😀 中文 \u200f\u202e rtl",
    "",
    "   ",
]
TEXT = st.text(STORABLE, max_size=50) | st.sampled_from(HOSTILE)
BLOCK = st.fixed_dictionaries(
    {"type": st.just("text"), "text": TEXT},
    optional={
        "cache_control": st.just({"type": "ephemeral"}),
        "citations": st.just([]) | st.none(),
    },
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES), "content": TEXT | st.lists(BLOCK, max_size=3)}
)


def the_most_allowed() -> list[dict[str, str]]:
    """MAX_MESSAGES messages with MAX_MESSAGES_CHARS characters of content in all, most of
    them outside the BMP (one code point each, two UTF-16 units, four UTF-8 bytes)."""
    each = MAX_MESSAGES_CHARS // MAX_MESSAGES
    return [{"role": ROLES[n % 2], "content": ("😀é\t" * each)[:each]} for n in range(MAX_MESSAGES)]


def expected_content(content: Any) -> str:
    """The documented rule: a string as it is; blocks' non-empty texts joined."""
    if isinstance(content, str):
        return content
    return BLOCK_SEPARATOR.join(block["text"] for block in content if block["text"])


def expected_messages(row: dict[str, Any]) -> list[dict[str, str]] | None:
    messages = row.get("messages")
    if not messages:  # absent, null or []: stored as NULL
        return None
    return [{"role": m["role"], "content": expected_content(m["content"])} for m in messages]


@st.composite
def good_rows(draw: st.DrawFn) -> dict[str, Any]:
    row = record(unit_id=draw(st.text(STORABLE, min_size=1, max_size=20).filter(str.strip)))
    presence = draw(st.sampled_from(["absent", "null", "empty", "value", "value", "huge"]))
    if presence == "null":
        row["messages"] = None
    elif presence == "empty":
        row["messages"] = []
    elif presence == "value":
        row["messages"] = draw(st.lists(MESSAGE, min_size=1, max_size=6))
    elif presence == "huge":
        row["messages"] = the_most_allowed()
    if draw(st.booleans()):
        row["transcript"] = draw(TEXT)
    return row


def bad_messages(at: int) -> list[tuple[Any, str]]:
    """(messages with message `at` wrong, what the problem must say), after `at` good ones."""
    good = [{"role": ROLES[n % len(ROLES)], "content": f"turn {n}"} for n in range(at)]
    block = {"type": "text", "text": "fine"}
    cases: list[tuple[dict[str, Any] | Any, str]] = [
        (
            {"role": "bot", "content": "x"},
            f"messages[{at}].role must be one of user, assistant, system, tool; got 'bot'",
        ),
        ({"role": "User", "content": "x"}, f"messages[{at}].role must be one of"),
        ({"role": None, "content": "x"}, f"messages[{at}].role must be one of"),
        ({"content": "x"}, f"messages[{at}].role is required"),
        ({"role": "user"}, f"messages[{at}].content is required"),
        ({"role": "user", "content": 5}, f"messages[{at}].content must be a string"),
        ({"role": "user", "content": None}, f"messages[{at}].content must be a string"),
        ({"role": "user", "content": {"text": "x"}}, f"messages[{at}].content must be a string"),
        (
            {"role": "user", "content": [block, {"type": "image", "source": {}}]},
            f"messages[{at}].content holds a block of type 'image' at [1]",
        ),
        (
            {"role": "tool", "content": [{"type": "tool_result", "content": "42"}]},
            "a tool's result as a message of role 'tool'",
        ),
        (
            {"role": "user", "content": [{"type": "text", "text": "x", "lang": "en"}]},
            "unknown key 'lang' at [0]",
        ),
        ({"role": "user", "content": [{"type": "text"}]}, "whose text is not a string"),
        ({"role": "user", "content": ["plain"]}, "holds a string at [0]"),
        (
            {"role": "user", "content": "x", "name": "bob"},
            f"unknown field 'name' in messages[{at}]; allowed: role, content",
        ),
        ({"role": "user", "content": "a\x00b"}, f"messages[{at}].content contains a NUL"),
        ({"role": "user", "content": "a\ud800"}, f"messages[{at}].content contains a lone"),
        (
            {"role": "user", "content": [{"type": "text", "text": "\udfff"}]},
            f"messages[{at}].content contains a lone",
        ),
        ("hi", f"messages[{at}] must be a JSON object; got 'hi'"),
    ]
    found = [([*good, message], problem) for message, problem in cases]
    found += [
        ("user: hi", "must be an array; got 'user: hi'"),
        ({"role": "user", "content": "x"}, "must be an array; got an object"),
        ([{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1), "is 501 items; at most 500"),
        (
            [*the_most_allowed()[:-1], {"role": "user", "content": "x" * 201}],
            f"{MAX_MESSAGES_CHARS + 1:,} characters of content in all; at most",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "x" * 50_000}] * 2}],
            "100,002 characters",  # the blank line between blocks counts
        ),
    ]
    return found


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """A batch, and (its bad row, what the problem says) when it has one."""
    rows = draw(st.lists(good_rows(), min_size=1, max_size=6))
    if draw(st.booleans()):
        return rows, None
    where = draw(st.integers(0, len(rows) - 1))
    messages, problem = draw(st.sampled_from(bad_messages(draw(st.integers(0, 3)))))
    rows[where] = {**rows[where], "messages": messages}
    return rows, (where, problem)


# --- checks ----------------------------------------------------------------------------------


def last_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(Conversation.id), 0))).scalar_one())


def stored_after(engine: Engine, after_id: int) -> list[Conversation]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Conversation).where(Conversation.id > after_id).order_by(Conversation.id)
            )
        )


def assert_stored(engine: Engine, rows: list[dict[str, Any]], after_id: int) -> None:
    got = stored_after(engine, after_id)
    assert len(got) == len(rows)
    for row, stored in zip(rows, got, strict=True):
        assert stored.unit_id == row["unit_id"] and stored.transcript == row.get("transcript")
        expected = expected_messages(row)
        if expected is None:
            assert stored.messages is None
            continue
        assert stored.messages is not None and json.loads(stored.messages) == expected
        # Replay reads them back as the turns sent, whenever a user said something.
        turns = turns_of(stored.messages, stored.transcript)
        if any(m["role"] == "user" and m["content"].strip() for m in expected):
            assert turns == [Turn(m["role"], m["content"]) for m in expected]


# --- directly, on SQLite and PostgreSQL (COPY) ------------------------------------------------


@pytest.fixture
def world(engine: Engine) -> None:
    seed(engine)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_batches_with_messages_are_stored_exactly_or_not_at_all(
    engine: Engine, world: None, data: st.DataObject
) -> None:
    rows, bad = data.draw(batches())
    after_id = last_id(engine)
    if bad is None:
        assert ingest(engine, {"conversations": rows}, now=NOW) == len(rows)
        assert_stored(engine, rows, after_id)
        for row in rows:  # what ingest takes, the OpenAPI schema of a record takes
            assert RECORD_SCHEMA.is_valid(row)
        return
    with pytest.raises(RowsInvalid) as caught:
        ingest(engine, {"conversations": rows}, now=NOW)
    note(f"bad row {bad}: {caught.value.errors}")
    where, problem = bad
    [error] = [e for e in caught.value.errors if e.index == where]
    assert error.field == "messages" and problem in f"messages {error.problem}", error
    assert "turn " not in error.problem and "fine" not in error.problem  # no content quoted
    assert last_id(engine) == after_id


def test_the_largest_allowed_messages_round_trip_beside_a_transcript(engine: Engine) -> None:
    seed(engine)
    messages = the_most_allowed()
    row = record(messages=messages, transcript="t" * 100_000)
    assert ingest(engine, row, now=NOW) == 1
    [stored] = stored_after(engine, 0)
    assert stored.messages is not None and json.loads(stored.messages) == messages
    assert stored.transcript == row["transcript"]


def test_blocks_are_stored_as_one_string(engine: Engine) -> None:
    seed(engine)
    blocks = [
        {"type": "text", "text": "Here is the document."},
        {"type": "text", "text": ""},
        {"type": "text", "text": "What does it say?", "cache_control": {"type": "ephemeral"}},
    ]
    row = record(messages=[{"role": "user", "content": blocks}])
    assert ingest(engine, row, now=NOW) == 1
    [stored] = stored_after(engine, 0)
    assert stored.messages is not None
    assert json.loads(stored.messages) == [
        {"role": "user", "content": "Here is the document.\n\nWhat does it say?"}
    ]


# --- over HTTP -----------------------------------------------------------------------------


async def post(client: TestClient, body: Any) -> tuple[int, Any]:
    answer = await client.post("/v1/conversations", data=json.dumps(body), headers=AUTH)
    return answer.status, await answer.json()


async def test_http_takes_messages_and_names_a_bad_one(
    engine: Engine, make_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    seed(engine)
    client = await make_client(engine)
    secret = "my card number is 4111 1111 1111 1111"
    good = record(unit_id="a", messages=[{"role": "user", "content": secret}])
    with caplog.at_level(logging.DEBUG):
        status, answer = await post(client, {"conversations": [good]})
        assert (status, answer) == (202, {"accepted": 1})
        bad = record(unit_id="b", messages=[{"role": "user", "content": secret}, {"role": "bot"}])
        status, answer = await post(client, {"conversations": [good, bad]})
    assert status == 400
    assert answer["errors"] == [
        {
            "index": 1,
            "field": "messages",
            "problem": "messages[1].role must be one of user, assistant, system, tool; got 'bot'",
        }
    ]
    [stored] = stored_after(engine, 0)
    assert stored.messages is not None and json.loads(stored.messages)[0]["content"] == secret
    assert any(entry.getMessage() == "conversations ingested" for entry in caplog.records)
    for entry in caplog.records:
        assert "4111" not in entry.getMessage()
        assert all("4111" not in repr(value) for value in vars(entry).values())


# --- the JSONL import ------------------------------------------------------------------------


def test_import_takes_messages_and_reports_a_bad_line(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(engine)
    turns = [{"role": "user", "content": "héllo 😀"}, {"role": "assistant", "content": "hi"}]
    good = write_lines(tmp_path / "good.jsonl", [record(unit_id="u1", messages=turns)])
    assert run_import(engine, good) == 0
    [stored] = stored_after(engine, 0)
    assert stored.messages is not None and json.loads(stored.messages) == turns
    lines = [record(unit_id="u2", messages=turns), record(messages=[{"role": "bot"}])]
    bad = write_lines(tmp_path / "bad.jsonl", lines)
    assert run_import(engine, bad) == 1
    err = capsys.readouterr().err
    assert (
        "line 2: messages: messages[0].role must be one of user, assistant, system, tool; "
        "got 'bot'" in err
    )
    assert last_id(engine) == stored.id  # the good line 1 was not stored either


# --- retention -------------------------------------------------------------------------------


def test_retention_erases_messages_with_transcripts(engine: Engine) -> None:
    seed(engine)
    turns = [{"role": "user", "content": "old words"}]
    old, young = NOW - timedelta(days=40), NOW - timedelta(days=1)
    rows = [
        record(unit_id="old both", messages=turns, transcript="user: old", occurred_at=old),
        record(unit_id="old messages", messages=turns, occurred_at=old),
        record(unit_id="old transcript", transcript="user: old", occurred_at=old),
        record(unit_id="old neither", occurred_at=old),
        record(unit_id="young", messages=turns, transcript="user: new", occurred_at=young),
    ]
    rows = [{**row, "occurred_at": row["occurred_at"].isoformat()} for row in rows]
    assert ingest(engine, {"conversations": rows}, now=NOW) == len(rows)
    pruned = prune_conversations(
        engine,
        now=NOW,
        conversations_before=NOW - timedelta(days=3650),
        transcripts_before=NOW - timedelta(days=30),
    )
    assert (pruned.conversations, pruned.transcripts) == (0, 3)
    kept = {row.unit_id: (row.messages, row.transcript) for row in stored_after(engine, 0)}
    young_messages, young_transcript = kept["young"]
    assert young_messages is not None and json.loads(young_messages) == turns
    assert young_transcript == "user: new"
    assert {unit: kept[unit] for unit in kept if unit != "young"} == {
        "old both": (None, None),
        "old messages": (None, None),
        "old transcript": (None, None),
        "old neither": (None, None),
    }
