"""Replay evaluations as people read them, on SQLite and PostgreSQL: the per-version summary
(win rates rebuilt from counts grouped in SQL equal win_rate() over the stored scores, one
query for many versions, the newest control's figures), keyset pages of evaluations
(complete, newest first, never overlapping), rows edited by hand read without a crash, and
GET /prompts/{name}/versions/{version}/evaluations (its document, 404s and 400s naming the
parameter). Hypothesis stores hostile rows and shows them through the API, the dashboard
and the CLI's text: never a 5xx, never a NaN, never a traceback."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, select, update
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.evaluations import SAMPLES, VERDICTS, CandidateEvaluation
from models.prompts import PromptVersion
from optimizer import evaluations
from optimizer.cli.evaluations import format_replay
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.errors import InvalidInput, NotFound
from optimizer.stats.win_rate import win_rate
from tests.integration.test_openapi import check_answer
from tests.support.evaluations import (
    SCRIPT,
    ReplayWorld,
    conversations,
    evaluation_row,
    insert_evaluations,
    realistic_rows,
    replay_world,
)
from tests.support.http_client import ADMIN_TOKEN, ClientMaker, build_app, start_client
from tests.support.ui_client import assert_html_page, logged_in

A = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PATH = "/prompts/{name}/versions/{version}/evaluations"
REJECTION = "replay: failing 31.2% (90% interval 12.0%-58.1%) is not above one half ✗"


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements run on `engine` inside the block, BEGIN left out."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if not sql.startswith("BEGIN"):  # SQLite's explicit BEGIN is not a query
            seen.append(sql)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _stored(engine: Engine, **where: Any) -> list[CandidateEvaluation]:
    with session_factory(engine)() as session:
        query = select(CandidateEvaluation).order_by(CandidateEvaluation.id.desc())
        for name, value in where.items():
            query = query.where(getattr(CandidateEvaluation, name) == value)
        return list(session.scalars(query))


def _reject(engine: Engine, version_id: int, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(PromptVersion)
            .where(PromptVersion.id == version_id)
            .values(status="rejected", status_reason=reason)
        )


# --- the summary -------------------------------------------------------------------------------


def test_summaries_are_the_win_rates_of_the_stored_scores_in_one_query(engine: Engine) -> None:
    world = replay_world(engine)
    rng = random.Random(15)
    ids = conversations(engine, world, 40)
    now = utcnow()
    # v2 was replayed first against v3 (an earlier control), then against v1, now active.
    old = realistic_rows(world, 6, rng, start=now - timedelta(days=3))
    for row in old:
        row["control_version_id"] = world.other_id
    insert_evaluations(engine, old)
    insert_evaluations(
        engine, realistic_rows(world, 37, rng, conversation_ids=ids, start=now - timedelta(days=1))
    )
    _reject(engine, world.candidate_id, REJECTION)

    version_ids = [world.control_id, world.candidate_id, world.other_id, 10**12]
    with session_factory(engine)() as session, statements(engine) as seen:
        found = evaluations.summaries(session, version_ids)
    assert len(seen) == 1, seen
    assert list(found) == sorted(version_ids[:3])  # the unknown id is left out

    summary = found[world.candidate_id]
    rows = _stored(
        engine, candidate_version_id=world.candidate_id, control_version_id=world.control_id
    )
    assert (summary.version, summary.status, summary.status_reason) == (2, "rejected", REJECTION)
    assert summary.control_version == 1 and summary.evaluations == len(rows) == 37
    for sample in SAMPLES:
        expected = win_rate([r.score for r in rows if r.sample == sample])
        assert getattr(summary, sample) == expected
    assert summary.input_tokens == sum(r.input_tokens for r in rows)
    assert summary.output_tokens == sum(r.output_tokens for r in rows)
    assert summary.cost_usd == pytest.approx(sum(r.cost_usd for r in rows))
    assert summary.replayed_at == max(r.created_at for r in rows)
    assert summary.replayed

    for vid, number in ((world.control_id, 1), (world.other_id, 3)):
        never = found[vid]
        assert never.version == number and not never.replayed
        assert never.control_version is None and never.cost_usd == 0
        assert never.failing.error == never.holdout.error == "empty"
        assert never.to_dict()["failing"]["rate"] is None
    assert evaluations.summaries(session_factory(engine)(), []) == {}


def test_a_summary_document_holds_no_nan_even_from_a_nan_cost(engine: Engine) -> None:
    world = replay_world(engine)
    bad_cost = math.nan if engine.dialect.name == "postgresql" else math.inf
    insert_evaluations(
        engine, [evaluation_row(world), evaluation_row(world, cost_usd=bad_cost, score=0.25)]
    )
    with session_factory(engine)() as session:
        summary, page = evaluations.replay_of(session, world.prompt, 2)
    document = evaluations.page_document(world.prompt, summary, page)
    text = json.dumps(document, allow_nan=False)  # raises on NaN or infinity
    assert summary.cost_usd is None and page.evaluations[0].cost_usd is None
    # A score no judge gives (0.25, edited by hand) counts as neither win nor loss.
    assert (summary.failing.wins, summary.failing.ties, summary.failing.losses) == (1, 1, 0)
    assert "NaN" not in text


# --- pages of evaluations ----------------------------------------------------------------------


def test_keyset_pages_are_complete_newest_first_and_never_overlap(engine: Engine) -> None:
    world = replay_world(engine)
    ids = conversations(engine, world, 30)
    rng = random.Random(7)
    insert_evaluations(engine, realistic_rows(world, 45, rng, conversation_ids=ids))
    other = realistic_rows(world, 5, rng)
    for row in other:
        row["candidate_version_id"] = world.other_id
    insert_evaluations(engine, other)
    stored = _stored(engine, candidate_version_id=world.candidate_id)

    @settings(max_examples=25, deadline=None, database=None)
    @given(st.integers(1, 50), st.sampled_from([None, *SAMPLES]))
    def walk(limit: int, sample: str | None) -> None:
        expected = [r.id for r in stored if sample is None or r.sample == sample]
        seen: list[int] = []
        before: int | None = None
        with session_factory(engine)() as session:
            for _ in range(len(stored) + 2):
                page = evaluations.list_evaluations(
                    session, world.prompt, 2, sample=sample, before_id=before, limit=limit
                )
                got = [view.id for view in page.evaluations]
                assert len(got) <= limit and not set(got) & set(seen)
                seen += got
                if page.next_before is None:
                    break
                assert page.next_before == got[-1]
                before = page.next_before
        assert seen == expected  # all of them, newest first, each once
        assert all(view.sample == sample for view in page.evaluations if sample)

    walk()


def test_an_evaluation_shows_every_stored_column(engine: Engine) -> None:
    world = replay_world(engine)
    (conversation,) = conversations(engine, world, 1)
    long_answer = "Réponse détaillée — " * 2_000
    (eid,) = insert_evaluations(
        engine,
        [
            evaluation_row(
                world,
                conversation_id=conversation,
                sample="holdout",
                segment="日本語 <b>",
                verdicts=("candidate", "control"),
                candidate_answer=json.dumps([long_answer, SCRIPT]),
                control_answer=json.dumps(["ご注文の返金"], ensure_ascii=False),
                reason_control_first=None,
                input_tokens=9_001,
                output_tokens=77,
                cost_usd=0.0421,
            )
        ],
    )
    with session_factory(engine)() as session:
        page = evaluations.list_evaluations(session, world.prompt, 2)
    (view,) = page.evaluations
    assert view.to_dict() | {"created_at": None} == {
        "id": eid,
        "sample": "holdout",
        "segment": "日本語 <b>",
        "conversation_id": conversation,
        "control_version": 1,
        "candidate_answers": [long_answer, SCRIPT],
        "control_answers": ["ご注文の返金"],
        "verdict_candidate_first": "candidate",
        "verdict_control_first": "control",
        "reason_candidate_first": evaluation_row(world)["reason_candidate_first"],
        "reason_control_first": None,
        "score": 0.5,
        "input_tokens": 9_001,
        "output_tokens": 77,
        "cost_usd": 0.0421,
        "job_id": None,
        "created_at": None,
    }
    assert view.flipped and page.next_before is None


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ('["a", "b"]', ("a", "b")),
        ("plain text, not JSON", ("plain text, not JSON",)),
        ('"one string"', ("one string",)),
        ('[1, null, ["nested"], {"k": "v"}]', ("1", "null", '["nested"]', '{"k": "v"}')),
        ('{"answer": "x"}', ('{"answer": "x"}',)),
        ("null", ()),
        ("", ()),
        ("[]", ()),
        ('["lone \\ud800 surrogate", "nul \\u0000"]', ("lone \ufffd surrogate", "nul \ufffd")),
        ("[" * 50_000 + "]" * 50_000, ("[" * 50_000 + "]" * 50_000,)),
        ("[NaN, Infinity]", ("NaN", "Infinity")),
    ],
)
def test_answers_edited_by_hand_are_shown_as_well_as_they_can_be(
    stored: str, shown: tuple[str, ...]
) -> None:
    assert evaluations.decode_answers(stored) == shown


def test_a_conversation_deleted_by_retention_leaves_its_evaluation(engine: Engine) -> None:
    world = replay_world(engine)
    ids = conversations(engine, world, 2)
    insert_evaluations(engine, [evaluation_row(world, conversation_id=c) for c in ids])
    with engine.begin() as conn:
        conn.execute(delete(Conversation).where(Conversation.id == ids[0]))
    with session_factory(engine)() as session:
        page = evaluations.list_evaluations(session, world.prompt, 2)
    assert [v.conversation_id for v in page.evaluations] == [ids[1], None]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample": "bogus"}, "sample"),
        ({"sample": "Failing"}, "sample"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": True}, "limit"),
        ({"before_id": 0}, "before"),
        ({"before_id": 2**63}, "before"),
    ],
)
def test_bad_parameters_name_their_field(
    engine: Engine, kwargs: dict[str, Any], field: str
) -> None:
    replay_world(engine)
    with session_factory(engine)() as session, pytest.raises(InvalidInput) as caught:
        evaluations.list_evaluations(session, "support-bot", 2, **kwargs)
    assert caught.value.field == field and field in str(caught.value)


def test_unknown_prompts_and_versions_are_not_found(engine: Engine) -> None:
    replay_world(engine)
    with session_factory(engine)() as session:
        with pytest.raises(NotFound, match="no prompt named 'ghost'"):
            evaluations.list_evaluations(session, "ghost", 1)
        with pytest.raises(NotFound, match="has no version 9"):
            evaluations.replay_of(session, "support-bot", 9)


# --- the API -----------------------------------------------------------------------------------


async def _get(client: TestClient, target: str, status: int = 200) -> Any:
    resp = await client.get(target, headers=A)
    body = await resp.text()
    assert resp.status == status, body
    return json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in {target}"))


async def test_the_api_answers_the_summary_and_a_page(
    engine: Engine, make_client: ClientMaker
) -> None:
    world = replay_world(engine)
    ids = conversations(engine, world, 12)
    insert_evaluations(engine, realistic_rows(world, 12, random.Random(2), conversation_ids=ids))
    _reject(engine, world.candidate_id, REJECTION)
    client = await make_client(engine)
    doc = await _get(client, "/openapi.json")

    first = await _get(client, "/prompts/support-bot/versions/2/evaluations?limit=5")
    check_answer(doc, "GET", PATH, 200, first)
    with session_factory(engine)() as session:
        summary, page = evaluations.replay_of(session, "support-bot", 2, limit=5)
    assert first == json.loads(json.dumps(evaluations.page_document("support-bot", summary, page)))
    assert first["summary"]["status_reason"] == REJECTION
    assert len(first["evaluations"]) == 5 and first["next_before"] == first["evaluations"][-1]["id"]

    rest = await _get(
        client, f"/prompts/support-bot/versions/2/evaluations?before={first['next_before']}"
    )
    assert rest["next_before"] is None
    all_ids = [e["id"] for e in first["evaluations"] + rest["evaluations"]]
    assert all_ids == [r.id for r in _stored(engine)]

    holdout = await _get(client, "/prompts/support-bot/versions/2/evaluations?sample=holdout")
    assert {e["sample"] for e in holdout["evaluations"]} <= {"holdout"}
    assert holdout["summary"] == first["summary"]  # the summary is the whole version's

    never = await _get(client, "/prompts/support-bot/versions/3/evaluations")
    check_answer(doc, "GET", PATH, 200, never)
    assert never["evaluations"] == [] and never["summary"]["evaluations"] == 0
    assert never["summary"]["failing"]["error"] == "empty"

    # GET /prompts/{name} shows each version's status reason.
    shown = await _get(client, "/prompts/support-bot")
    check_answer(doc, "GET", "/prompts/{name}", 200, shown)
    assert [v["status_reason"] for v in shown["versions"]] == [None, REJECTION, None]


@pytest.mark.parametrize(
    ("target", "status", "field"),
    [
        ("/prompts/ghost/versions/1/evaluations", 404, None),
        ("/prompts/support-bot/versions/9/evaluations", 404, None),
        ("/prompts/support-bot/versions/abc/evaluations", 400, "version"),
        ("/prompts/support-bot/versions/0/evaluations", 400, "version"),
        ("/prompts/support-bot/versions/99999999999/evaluations", 400, "version"),
        ("/prompts/bad%20name/versions/1/evaluations", 400, "name"),
        ("/prompts/support-bot/versions/2/evaluations?sample=both", 400, "sample"),
        ("/prompts/support-bot/versions/2/evaluations?sample=", 400, "sample"),
        ("/prompts/support-bot/versions/2/evaluations?before=x", 400, "before"),
        ("/prompts/support-bot/versions/2/evaluations?before=0", 400, "before"),
        ("/prompts/support-bot/versions/2/evaluations?limit=0", 400, "limit"),
        ("/prompts/support-bot/versions/2/evaluations?limit=501", 400, "limit"),
        ("/prompts/support-bot/versions/2/evaluations?limit=%00", 400, "limit"),
        ("/prompts/support-bot/versions/2/evaluations?colour=red", 400, "colour"),
    ],
)
async def test_the_api_refuses_what_it_cannot_answer(
    engine: Engine, make_client: ClientMaker, target: str, status: int, field: str | None
) -> None:
    replay_world(engine)
    client = await make_client(engine)
    answer = await _get(client, target, status)
    check_answer(await _get(client, "/openapi.json"), "GET", PATH, status, answer)
    assert answer["field"] == field
    if field:
        assert field in answer["error"]


async def test_the_api_needs_the_admin_token(engine: Engine, make_client: ClientMaker) -> None:
    replay_world(engine)
    client = await make_client(engine)
    resp = await client.get("/prompts/support-bot/versions/2/evaluations")
    assert resp.status == 401


# --- hostile rows never break a surface ----------------------------------------------------------


def _texts(dialect: str) -> st.SearchStrategy[str]:
    # What a database column can hold: no lone surrogate anywhere, no NUL on PostgreSQL.
    banned = ("Cs",)
    chars = st.characters(
        exclude_categories=banned, exclude_characters="\x00" * (dialect != "sqlite")
    )
    return st.one_of(
        st.text(chars, max_size=60),
        st.sampled_from([SCRIPT, "\x1b[2K\r\n", "\u202eevil", "—" * 3_000, "x" * 20_000]),
    )


def _answers(dialect: str) -> st.SearchStrategy[str]:
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids),
        max_leaves=8,
    )
    return st.one_of(
        st.lists(st.text(max_size=80), max_size=4).map(json.dumps),  # surrogates escaped
        json_values.map(json.dumps),
        _texts(dialect),
        st.sampled_from(["[" * 20_000, '["unterminated', '"\\ud800"', "null", ""]),
    )


def _hostile_rows(world: ReplayWorld, dialect: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    costs = st.floats(allow_nan=dialect == "postgresql", allow_infinity=True)
    row = st.fixed_dictionaries(
        {
            "candidate_version_id": st.sampled_from([world.candidate_id, world.other_id]),
            "sample": st.sampled_from(SAMPLES),
            "segment": st.none() | _texts(dialect).map(lambda s: s[:200]),
            "candidate_answer": _answers(dialect),
            "control_answer": _answers(dialect),
            "verdict_candidate_first": st.sampled_from(VERDICTS),
            "verdict_control_first": st.sampled_from(VERDICTS),
            "reason_candidate_first": st.none() | _texts(dialect),
            "reason_control_first": st.none() | _texts(dialect),
            "score": st.sampled_from([0.0, 0.5, 1.0, 0.25, 5e-324, 0.999999]),
            "input_tokens": st.integers(-(2**31), 2**31 - 1),
            "output_tokens": st.integers(-(2**31), 2**31 - 1),
            "cost_usd": costs,
        }
    )
    return st.lists(row.map(lambda r: evaluation_row(world, **r)), min_size=1, max_size=4)


class Surfaces:
    """A logged-in client on the real app, driven from a synchronous hypothesis test."""

    def __init__(self, engine: Engine) -> None:
        self.loop = asyncio.new_event_loop()
        self.client: TestClient = self.loop.run_until_complete(start_client(build_app(engine)))
        self.loop.run_until_complete(logged_in(self.client, ADMIN_TOKEN))

    def get(self, target: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        async def go() -> tuple[int, str, Any]:
            resp = await self.client.get(target, headers=headers)
            return resp.status, await resp.text(), resp.headers

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


def test_hostile_stored_rows_never_break_the_api_the_dashboard_or_the_cli(engine: Engine) -> None:
    world = replay_world(engine)
    surfaces = Surfaces(engine)
    _, text, _ = surfaces.get("/openapi.json")
    doc = json.loads(text)

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def show(data: st.DataObject) -> None:
        rows = data.draw(_hostile_rows(world, engine.dialect.name))
        with engine.begin() as conn:
            conn.execute(delete(CandidateEvaluation))
        insert_evaluations(engine, rows)
        for version in (2, 3):
            target = f"/prompts/support-bot/versions/{version}/evaluations?limit=3"
            status, body, _ = surfaces.get(target, A)
            note(f"{target} -> {status} {body[:300]}")
            assert status == 200, body[:500]
            answer = json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} answered"))
            check_answer(doc, "GET", PATH, 200, answer)
            status, page, headers = surfaces.get(f"/ui/prompts/support-bot/versions/{version}")
            assert status == 200, page[:500]
            assert_html_page(page, headers)
            assert "<script>alert" not in page
        status, page, _ = surfaces.get("/ui/prompts/support-bot")
        assert status == 200, page[:500]
        with session_factory(engine)() as session:
            summary, listed = evaluations.replay_of(session, "support-bot", 2)
        printed = format_replay("support-bot", summary, listed, sample=None, limit=50)
        assert not any(ord(c) < 32 and c != "\n" for c in printed), printed[:300]

    try:
        show()
    finally:
        surfaces.close()
