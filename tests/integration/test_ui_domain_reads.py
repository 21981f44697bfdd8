"""The reads the dashboard adds to the domain, on SQLite and PostgreSQL: version details
without texts, recent decisions, the versions generated from insights, and keyset pages of
experiments and jobs. Each runs a fixed number of statements whatever the data size, and
rows edited by hand (bad JSON, NULLs) read without failing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Engine

from models.experiments import Experiment, ExperimentAnalysis
from models.insights import PatternInsight
from models.llm_calls import LlmCall
from models.prompts import Prompt, PromptVersion
from optimizer import prompts
from optimizer.db import session_factory
from optimizer.errors import InvalidInput, NotFound
from optimizer.experiments import store
from optimizer.patterns import views
from optimizer.prompt_text import content_hash
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from tests.support.ui_seed import seed_small

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
LONG = "Réponds en français, sois bref. 你好 ☕\n" * 2_000  # 70k characters
NOTES = "<script>alert('notes')</script> — «tone» ✓"


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements run on `engine` inside the block."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        seen.append(sql)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _reading(sql: list[str]) -> list[str]:
    """Statements but the transaction's own BEGIN (SQLite's engine issues one)."""
    return [s for s in sql if not s.strip().upper().startswith("BEGIN")]


# --- version_details -----------------------------------------------------------------------


def _three_versions(engine: Engine) -> int:
    """bot: v1 by hand (no notes), v2 generated (long Unicode text, model, insights, LLM
    call, parent v1), v3 offline with v2 as parent. The LLM call's id."""
    with session_factory(engine).begin() as session:
        call_id = session.execute(
            insert(LlmCall)
            .values(purpose="variant_generation", requested_model="sonnet", model="m", outcome="ok")
            .returning(LlmCall.id)
        ).scalar_one()
        prompts.create_prompt(session, "bot", "v1: be kind", actor="alice", now=T0)
        prompts.add_version(
            session,
            "bot",
            LONG,
            change_notes=NOTES,
            source="llm",
            model="claude-sonnet-4-5",
            insight_ids=[3, 5],
            llm_call_id=call_id,
            now=T0 + timedelta(minutes=1),
        )
        prompts.add_version(
            session, "bot", "v3", source="offline", parent_version=2, now=T0 + timedelta(minutes=2)
        )
    return call_id


def test_version_details_hold_every_column_but_the_text(engine: Engine) -> None:
    call_id = _three_versions(engine)
    with session_factory(engine)() as session:
        details = prompts.version_details(session, "bot")
        full = prompts.get_prompt(session, "bot").versions
    assert [d.number for d in details] == [1, 2, 3]
    assert [d.id for d in details] == [v.id for v in full]
    assert [d.status for d in details] == ["active", "candidate", "candidate"]
    assert [d.source for d in details] == ["manual", "llm", "offline"]
    assert [d.parent for d in details] == [None, 1, 2]
    assert [d.model for d in details] == [None, "claude-sonnet-4-5", None]
    assert [d.insight_ids for d in details] == [(), (3, 5), ()]
    assert [d.llm_call_id for d in details] == [None, call_id, None]
    assert [d.change_notes for d in details] == [None, NOTES, None]
    assert [d.created_at for d in details] == [T0 + timedelta(minutes=m) for m in range(3)]
    # Characters, not bytes, on both databases; the hash is the text's.
    assert [d.content_chars for d in details] == [len(v.content) for v in full]
    assert details[1].content_chars == len(LONG)
    assert [d.content_hash for d in details] == [content_hash(v.content) for v in full]


@pytest.mark.parametrize(
    ("stored", "decoded"),
    [
        (None, ()),
        ("", ()),
        ("not json at all", ()),
        ('{"ids": [1, 2]}', ()),
        ('"7"', ()),
        ("null", ()),
        ('[7, "8", true, 2.5, null, [9], 10]', (7, 10)),
        ("[" * 100_000, ()),  # too deep for the parser
        ("[]", ()),
    ],
)
def test_version_details_read_insight_ids_edited_by_hand(
    engine: Engine, stored: str | None, decoded: tuple[int, ...]
) -> None:
    _three_versions(engine)
    with session_factory(engine).begin() as session:
        session.execute(
            update(PromptVersion)
            .where(PromptVersion.version == 2)
            .values(insight_ids=stored, model=None, llm_call_id=None, change_notes=None)
        )
    with session_factory(engine)() as session:
        second = prompts.version_details(session, "bot")[1]
    assert second.insight_ids == decoded
    assert (second.model, second.llm_call_id, second.change_notes) == (None, None, None)


def test_version_details_parent_removed_reads_as_none(engine: Engine) -> None:
    _three_versions(engine)
    with session_factory(engine).begin() as session:
        session.execute(
            update(PromptVersion).where(PromptVersion.version == 3).values(parent_version_id=None)
        )
    with session_factory(engine)() as session:
        assert [d.parent for d in prompts.version_details(session, "bot")] == [None, 1, None]


def test_version_details_of_unknown_or_bad_names(engine: Engine) -> None:
    _three_versions(engine)
    with session_factory(engine)() as session:
        with pytest.raises(NotFound, match="no prompt named 'other'"):
            prompts.version_details(session, "other")
        with pytest.raises(InvalidInput) as bad:
            prompts.version_details(session, "<script>")
    assert bad.value.field == "name"


def test_version_details_two_statements_and_no_text_whatever_the_count(engine: Engine) -> None:
    _three_versions(engine)
    with session_factory(engine)() as session, statements(engine) as few:
        assert len(prompts.version_details(session, "bot")) == 3
    with session_factory(engine).begin() as session:
        prompt_id = session.scalar(select(Prompt.id).where(Prompt.name == "bot"))
        session.execute(
            insert(PromptVersion),
            [
                {
                    "prompt_id": prompt_id,
                    "version": n,
                    "content": LONG + str(n),
                    "content_hash": content_hash(LONG + str(n)),
                    "status": "candidate",
                }
                for n in range(4, 64)
            ],
        )
    with session_factory(engine)() as session, statements(engine) as many:
        assert len(prompts.version_details(session, "bot")) == 63
    assert len(_reading(few)) == len(_reading(many)) == 2
    # The text is only ever measured, never selected.
    for sql in many:
        for before in re.findall(r"(\S*)ai_prompt_versions\.content\b(?!_)", sql):
            assert before.endswith("length("), sql


# --- recent_decisions ----------------------------------------------------------------------


def test_recent_decisions_newest_first_without_continue(engine: Engine) -> None:
    seeded = seed_small(engine, T0)
    with session_factory(engine)() as session, statements(engine) as sql:
        found = store.recent_decisions(session)
    assert len(_reading(sql)) == 1
    with session_factory(engine)() as session:
        expected = session.execute(
            select(ExperimentAnalysis, Prompt.name)
            .join(Experiment, Experiment.id == ExperimentAnalysis.experiment_id)
            .join(Prompt, Prompt.id == Experiment.prompt_id)
            .where(ExperimentAnalysis.decision != "continue")
            .order_by(ExperimentAnalysis.id.desc())
        ).all()
    assert [(d.id, d.experiment_id, d.prompt, d.decision) for d in found] == [
        (a.id, a.experiment_id, name, a.decision) for a, name in expected
    ]
    assert [(d.reason, d.srm_detected, d.checked_at) for d in found] == [
        (a.reason, a.srm_detected, a.checked_at) for a, _ in expected
    ]
    # The running experiment's stop is the newest; the paused one's SRM before it.
    assert [d.decision for d in found][:2] == ["stop_arms", "pause_srm"]
    assert found[0].experiment_id == seeded.running_experiment_id
    assert found[0].prompt == seeded.prompt_names[0]
    assert found[1].srm_detected is True
    assert "continue" not in {d.decision for d in found}


def test_recent_decisions_limit_and_one_statement_at_any_size(engine: Engine) -> None:
    seeded = seed_small(engine, T0)
    with session_factory(engine).begin() as session:
        session.execute(
            insert(ExperimentAnalysis),
            [
                {
                    "experiment_id": seeded.running_experiment_id,
                    "decision": ("continue", "inconclusive")[k % 2],
                    "reason": f"hand-written row {k} <b>bold</b>",
                    "statistics": "not json",
                    "checked_at": T0 + timedelta(minutes=k),
                }
                for k in range(300)
            ],
        )
    with session_factory(engine)() as session, statements(engine) as sql:
        found = store.recent_decisions(session, limit=5)
    assert len(_reading(sql)) == 1
    assert [d.reason for d in found] == [
        f"hand-written row {k} <b>bold</b>" for k in (299, 297, 295, 293, 291)
    ]
    assert all(d.decision == "inconclusive" and d.srm_detected is False for d in found)


def test_recent_decisions_of_an_empty_database(engine: Engine) -> None:
    with session_factory(engine)() as session:
        assert store.recent_decisions(session) == []


# --- generated_from ------------------------------------------------------------------------


def _insight_ids(engine: Engine) -> dict[str, list[int]]:
    with session_factory(engine)() as session:
        rows = session.execute(
            select(Prompt.name, PatternInsight.id)
            .join(Prompt, Prompt.id == PatternInsight.prompt_id)
            .order_by(PatternInsight.id)
        ).all()
    out: dict[str, list[int]] = {}
    for name, insight_id in rows:
        out.setdefault(name, []).append(insight_id)
    return out


def test_generated_from_matches_every_version_detail(engine: Engine) -> None:
    seeded = seed_small(engine, T0)
    by_prompt = _insight_ids(engine)
    every = [i for ids in by_prompt.values() for i in ids]
    with session_factory(engine)() as session, statements(engine) as sql:
        found = views.generated_from(session, every)
    assert len(_reading(sql)) == 1
    expected: dict[int, list[tuple[str, int]]] = {i: [] for i in every}
    with session_factory(engine)() as session:
        for name in seeded.prompt_names:
            for d in prompts.version_details(session, name):
                for i in d.insight_ids:
                    expected[i].append((name, d.number))
    assert found == expected
    assert any(found.values()) and not all(found.values())  # the seed has both kinds


def test_generated_from_ignores_bad_json_and_other_prompts(engine: Engine) -> None:
    seeded = seed_small(engine, T0)
    by_prompt = _insight_ids(engine)
    first, last = seeded.prompt_names[0], seeded.prompt_names[-1]
    mine, foreign = by_prompt[first][0], by_prompt[last][0]
    with session_factory(engine).begin() as session:
        ids = dict(
            session.execute(
                select(PromptVersion.version, PromptVersion.id)
                .join(Prompt, Prompt.id == PromptVersion.prompt_id)
                .where(Prompt.name == first)
            ).all()
        )
        edits = {1: f"[{mine}", 2: f'{{"id": {mine}}}', 3: f"[{mine}, {foreign}, true]", 4: None}
        for number, raw in edits.items():
            session.execute(
                update(PromptVersion).where(PromptVersion.id == ids[number]).values(insight_ids=raw)
            )
    with session_factory(engine)() as session:
        found = views.generated_from(session, [mine, foreign, 10**9])
    assert found[mine] == [(first, 3)]
    # A version of another prompt naming this insight (an edit by hand) is not its answer.
    assert (first, 3) not in found[foreign]
    assert all(name == last for name, _ in found[foreign])
    assert found[10**9] == []


def test_generated_from_nothing_asked_runs_nothing(engine: Engine) -> None:
    with session_factory(engine)() as session, statements(engine) as sql:
        assert views.generated_from(session, []) == {}
    assert _reading(sql) == []


# --- keyset pages --------------------------------------------------------------------------


def test_list_experiments_pages_by_id(engine: Engine) -> None:
    seed_small(engine, T0)
    with session_factory(engine)() as session:
        everything = [e.id for e in store.list_experiments(session)]
        pages: list[int] = []
        before: int | None = None
        while True:
            page = store.list_experiments(session, limit=3, before_id=before)
            if not page:
                break
            pages += [e.id for e in page]
            before = page[-1].id
        assert pages == everything == sorted(everything, reverse=True)
        assert len(everything) == 4
        assert [e.id for e in store.list_experiments(session, before_id=everything[1])] == (
            everything[2:]
        )
        finished = [e.id for e in store.list_experiments(session, status="completed")]
        assert [
            e.id for e in store.list_experiments(session, status="completed", before_id=finished[0])
        ] == finished[1:]
        assert store.list_experiments(session, before_id=min(everything)) == []


def test_list_experiments_page_statements_do_not_grow(engine: Engine) -> None:
    seed_small(engine, T0)
    with session_factory(engine)() as session:
        newest = store.list_experiments(session, limit=1)[0].id
        with statements(engine) as one:
            store.list_experiments(session, limit=1, before_id=newest)
        with statements(engine) as three:
            assert len(store.list_experiments(session, limit=3, before_id=newest + 1)) == 3
    assert len(_reading(one)) == len(_reading(three))


def test_list_jobs_pages_by_id(engine: Engine) -> None:
    seeded = seed_small(engine, T0)
    for k in range(5):
        queue.enqueue(
            engine, NewJob("pattern_analysis", {"prompt": f"p{k}"}), max_attempts=3, now=T0
        )
    everything = [j.id for j in queue.list_jobs(engine, limit=500)]
    pages: list[int] = []
    before: int | None = None
    while page := queue.list_jobs(engine, limit=4, before_id=before):
        pages += [j.id for j in page]
        before = page[-1].id
    assert pages == everything == sorted(everything, reverse=True)
    pending = [j.id for j in queue.list_jobs(engine, status="pending")]
    assert seeded.pending_job_id in pending
    assert [j.id for j in queue.list_jobs(engine, status="pending", before_id=pending[0])] == (
        pending[1:]
    )
    typed = [
        j.id for j in queue.list_jobs(engine, job_type="pattern_analysis", before_id=everything[0])
    ]
    assert typed and everything[0] not in typed
    assert queue.list_jobs(engine, before_id=min(everything)) == []
    assert queue.list_jobs(engine, before_id=None) == queue.list_jobs(engine)
    with statements(engine) as small:
        queue.list_jobs(engine, limit=1, before_id=everything[0])
    with statements(engine) as large:
        queue.list_jobs(engine, limit=500, before_id=everything[0])
    assert len(_reading(small)) == len(_reading(large)) == 1
