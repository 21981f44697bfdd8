"""The SDK sends `messages` (the conversation's turns): typed, checked by log() as the service
would check their shape, stored by the real service (SQLite and PostgreSQL) as the service
normalises them; a record the service refuses for what only it checks is dropped alone."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_worker_client import Client, Message, TextBlock
from prompt_worker_client.messages import ROLES as SDK_ROLES
from prompt_worker_client.messages import messages_problem
from prompt_worker_client.protocol import encode_conversation
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from optimizer.conversation_turns import ROLES
from optimizer.ingest import check_record
from optimizer.ingest_record import MAX_MESSAGES
from tests.integration.test_ingest import seed
from tests.sdk.servers import live_service
from tests.support.http_client import INGEST_TOKEN

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SECRET = "my password is hunter2"

# Shapes an application might send, right and wrong: any JSON-ish value at each level. Text
# is storable (no NUL): the service alone checks that, as it alone checks the length.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
ANY_VALUE = st.none() | st.booleans() | st.integers() | TEXT
GOOD_BLOCK = st.fixed_dictionaries(
    {"type": st.just("text"), "text": TEXT}, optional={"cache_control": st.just({"type": "x"})}
)
GOOD = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES), "content": TEXT | st.lists(GOOD_BLOCK, max_size=3)}
)
WILD_BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image"]) | ANY_VALUE, "text": TEXT | ANY_VALUE},
    optional={"cache_control": st.just({}), "lang": st.just("en")},
)
WILD = st.fixed_dictionaries(
    {
        "role": st.sampled_from([*ROLES, "bot", "User"]) | ANY_VALUE,
        "content": TEXT | st.lists(GOOD_BLOCK | WILD_BLOCK | ANY_VALUE, max_size=3) | ANY_VALUE,
    },
    optional={"name": st.just("bob")},
)
# Right, or right but for one message, so that both answers are common.
GOOD_LISTS = st.lists(GOOD, max_size=4)
MESSAGES = (
    GOOD_LISTS
    | st.tuples(GOOD_LISTS, WILD | ANY_VALUE, st.integers(0, 4)).map(
        lambda drawn: [*drawn[0][: drawn[2]], drawn[1], *drawn[0][drawn[2] :]]
    )
    | st.sampled_from([[{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1), "user: hi", {}])
)


def test_the_sdk_knows_the_services_roles() -> None:
    assert SDK_ROLES == ROLES


@settings(max_examples=400, deadline=None)
@given(messages=MESSAGES)
def test_log_refuses_exactly_the_shapes_the_service_refuses(messages: Any) -> None:
    """Whatever log() lets through, the service takes (nothing here is too long or holds a
    NUL, what only the service checks); whatever it drops, the service would refuse."""
    record = {"prompt": "p", "version": 1, "unit_id": "u", "messages": messages}
    _, service_errors = check_record(record, 0, NOW)
    sdk_problem = messages_problem(messages)
    assert (sdk_problem is None) == (not service_errors), (sdk_problem, service_errors)
    if sdk_problem is not None:
        with pytest.raises(ValueError, match=r"^messages"):
            encode_conversation(record, NOW)


def stored_messages(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        rows = session.execute(select(Conversation.unit_id, Conversation.messages)).all()
    return {unit: None if text is None else json.loads(text) for unit, text in rows}


def test_logged_messages_are_stored_and_a_bad_one_is_dropped_alone(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    seed(engine, "plain", numbers=(1,))
    blocks: list[TextBlock] = [
        {"type": "text", "text": "Here is my invoice."},
        {"type": "text", "text": "Why was I charged twice?", "cache_control": {"type": "x"}},
    ]
    turns: dict[str, list[Message] | None] = {
        "plain": [
            {"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": "Où est mon remboursement ? 😀 <script>x</script>"},
            {"role": "assistant", "content": "It was sent on Monday."},
        ],
        "blocks": [{"role": "user", "content": blocks}, {"role": "tool", "content": "{}"}],
        "empty": [],
        "none": None,
    }
    too_long: list[Message] = [{"role": "user", "content": "x" * 100_001}]
    with (
        caplog.at_level(logging.DEBUG, logger="prompt_worker_client"),
        live_service(engine) as server,
        Client(server.url, INGEST_TOKEN, init_timeout=30, close_timeout=30) as client,
    ):
        base = {"prompt": "plain", "version": 1}
        for unit, messages in turns.items():
            client.log({**base, "unit_id": unit, "messages": messages})
        bad: list[Any] = [{"role": "user", "content": SECRET}, {"role": "bot", "content": "x"}]
        client.log({**base, "unit_id": "bad role", "messages": bad})
        client.log({**base, "unit_id": "too long", "messages": too_long})
        assert client.flush(timeout=60)
        stats = client.stats
    assert (stats.sent, stats.dropped_invalid, stats.dropped_rejected) == (4, 1, 1)
    assert stored_messages(engine) == {
        "plain": turns["plain"],
        "blocks": [
            {"role": "user", "content": "Here is my invoice.\n\nWhy was I charged twice?"},
            {"role": "tool", "content": "{}"},
        ],
        "empty": None,
        "none": None,
    }
    warnings = [entry.getMessage() for entry in caplog.records]
    assert any("messages[1].role must be one of user" in text for text in warnings)
    assert any("100,001 characters of content" in text for text in warnings)
    assert not any(SECRET in text or "x" * 100 in text for text in warnings)
