"""optimizer.prompts on real SQLite and PostgreSQL: versions, the one-active rule, the
activation record, rollback and its refusal while an experiment is live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models.experiments import Experiment
from models.prompts import Prompt, PromptActivation, PromptVersion
from optimizer import prompt_text, prompts
from optimizer.db import session_factory
from optimizer.errors import Conflict, InvalidInput, NotFound

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def create(
    engine: Engine,
    name: str = "support",
    content: str = "You are helpful.",
) -> prompts.PromptView:
    with session_factory(engine).begin() as session:
        return prompts.create_prompt(session, name, content, actor="tester", now=T0)


def add(engine: Engine, content: str, name: str = "support", **kwargs) -> prompts.VersionView:
    kwargs.setdefault("now", at(1))
    with session_factory(engine).begin() as session:
        return prompts.add_version(session, name, content, **kwargs)


def roll(
    engine: Engine,
    version: object,
    name: str = "support",
    *,
    reason: str = "bad",
    now: datetime | None = None,
) -> prompts.PromptView:
    with session_factory(engine).begin() as session:
        return prompts.rollback(
            session, name, version, actor="oncall", reason=reason, now=now or at(10)
        )


def get(engine: Engine, name: str = "support") -> prompts.PromptView:
    with session_factory(engine)() as session:
        return prompts.get_prompt(session, name)


def history(engine: Engine, name: str = "support") -> list[dict]:
    with session_factory(engine)() as session:
        return prompts.activation_history(session, name)


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_create_makes_version_one_active_and_records_it(engine: Engine) -> None:
    view = create(engine)
    assert view.name == "support" and view.active_version == 1
    assert view.created_at == T0
    (v1,) = view.versions
    assert (v1.number, v1.status, v1.content, v1.parent, v1.source) == (
        1,
        "active",
        "You are helpful.",
        None,
        "manual",
    )
    assert v1.created_at == T0
    assert history(engine) == [
        {
            "from_version": None,
            "to_version": 1,
            "actor": "tester",
            "reason": "created",
            "at": "2026-03-01T12:00:00Z",
        }
    ]


def test_content_hash_is_sha256_of_exact_text() -> None:
    import hashlib

    assert prompt_text.content_hash("a b\n") == hashlib.sha256(b"a b\n").hexdigest()
    assert prompt_text.content_hash("a b") != prompt_text.content_hash("a b\n")


def test_versions_are_numbered_and_parented_on_the_active_one(engine: Engine) -> None:
    create(engine)
    v2 = add(engine, "Be brief.", change_notes="shorter")
    v3 = add(
        engine,
        "Be very brief.",
        parent_version=2,
        source="llm",
        model="claude-x",
        insight_ids=[4, 5],
    )
    v4 = add(engine, "Be kind.")
    assert [(v.number, v.status, v.parent) for v in (v2, v3, v4)] == [
        (2, "candidate", 1),
        (3, "candidate", 2),
        (4, "candidate", 1),
    ]
    assert v2.change_notes == "shorter" and v3.source == "llm"
    view = get(engine)
    assert view.active_version == 1
    assert [v.number for v in view.versions] == [1, 2, 3, 4]
    with engine.connect() as conn:
        row = conn.execute(
            select(PromptVersion.model, PromptVersion.insight_ids).where(PromptVersion.version == 3)
        ).one()
    assert tuple(row) == ("claude-x", "[4, 5]")


def test_numbering_is_per_prompt(engine: Engine) -> None:
    create(engine, "a")
    create(engine, "b")
    add(engine, "a2", name="a")
    assert add(engine, "b2", name="b").number == 2
    assert add(engine, "a3", name="a").number == 3


def test_list_prompts_and_summaries(engine: Engine) -> None:
    create(engine, "zeta")
    create(engine, "alpha")
    add(engine, "second", name="alpha")
    with session_factory(engine)() as session:
        listed = prompts.list_prompts(session)
        summaries = prompts.prompt_summaries(session)
    assert [(p.name, p.active_version, len(p.versions)) for p in listed] == [
        ("alpha", 1, 2),
        ("zeta", 1, 1),
    ]
    assert [s.to_dict() for s in summaries] == [
        {
            "name": "alpha",
            "active_version": 1,
            "versions_count": 2,
            "created_at": "2026-03-01T12:00:00Z",
        },
        {
            "name": "zeta",
            "active_version": 1,
            "versions_count": 1,
            "created_at": "2026-03-01T12:00:00Z",
        },
    ]


def test_duplicate_name_conflicts(engine: Engine) -> None:
    create(engine)
    with pytest.raises(Conflict, match="already exists"):
        create(engine, content="other text")
    assert count(engine, Prompt) == 1 and count(engine, PromptVersion) == 1


def test_duplicate_content_conflicts_naming_the_version(engine: Engine) -> None:
    create(engine)
    add(engine, "Second.")
    with pytest.raises(Conflict, match="version 2 already has exactly this content"):
        add(engine, "Second.")
    with pytest.raises(Conflict, match="version 1 already"):
        add(engine, "You are helpful.")
    assert add(engine, "Second. ").number == 3  # whitespace is a real change


@pytest.mark.parametrize(
    ("name", "content", "field"),
    [
        ("", "x", "name"),
        ("has space", "x", "name"),
        ("é", "x", "name"),
        ("a/b", "x", "name"),
        ("x" * 201, "x", "name"),
        ("ok\n", "x", "name"),
        (5, "x", "name"),
        (None, "x", "name"),
        ("ok", "", "content"),
        ("ok", "   \n", "content"),
        ("ok", None, "content"),
        ("ok", ["x"], "content"),
        ("ok", "x" * 100_001, "content"),
        ("ok", "a\x00b", "content"),
        ("ok", "\ud800", "content"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    engine: Engine, name: object, content: object, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        create(engine, name, content)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert count(engine, Prompt) == 0


def test_limits_are_inclusive(engine: Engine) -> None:
    create(engine, "n" * 200, "c" * 100_000)
    add(engine, "other", name="n" * 200, change_notes="x" * 5000)
    with pytest.raises(InvalidInput) as caught:
        add(engine, "third", name="n" * 200, change_notes="x" * 5001)
    assert caught.value.field == "change_notes"
    with pytest.raises(InvalidInput) as caught:
        add(engine, "third", name="n" * 200, change_notes=7)
    assert caught.value.field == "change_notes"


def test_unknown_prompt_and_parent(engine: Engine) -> None:
    with pytest.raises(NotFound, match="no prompt named 'nope'"):
        add(engine, "x", name="nope")
    with pytest.raises(NotFound):
        get(engine, "nope")
    create(engine)
    with pytest.raises(NotFound, match="no version 9"):
        add(engine, "x", parent_version=9)
    with pytest.raises(InvalidInput):
        add(engine, "x", source="elsewhere")


def test_rollback_moves_the_active_version_and_records_why(engine: Engine) -> None:
    create(engine)
    add(engine, "v2")
    add(engine, "v3")
    with session_factory(engine).begin() as session:
        view = prompts.get_prompt(session, "support")
        v3 = view.versions[2]
        prompts.set_active_version(
            session, view.id, v3.id, actor="experiment 7", reason="v3 won", now=at(5)
        )
    after = roll(engine, 1, reason="v3 confuses users")
    assert after.active_version == 1
    assert [(v.number, v.status) for v in after.versions] == [
        (1, "active"),
        (2, "candidate"),
        (3, "retired"),
    ]
    assert history(engine) == [
        {
            "from_version": None,
            "to_version": 1,
            "actor": "tester",
            "reason": "created",
            "at": "2026-03-01T12:00:00Z",
        },
        {
            "from_version": 1,
            "to_version": 3,
            "actor": "experiment 7",
            "reason": "v3 won",
            "at": "2026-03-01T12:05:00Z",
        },
        {
            "from_version": 3,
            "to_version": 1,
            "actor": "oncall",
            "reason": "v3 confuses users",
            "at": "2026-03-01T12:10:00Z",
        },
    ]
    # A candidate can be rolled "forward" to by hand as well.
    assert roll(engine, 2, now=at(20)).active_version == 2
    with engine.connect() as conn:
        active = conn.execute(
            select(func.count()).select_from(PromptVersion).where(PromptVersion.status == "active")
        ).scalar_one()
    assert active == 1
    assert count(engine, PromptActivation) == 4


def test_rollback_refusals_write_nothing(engine: Engine) -> None:
    create(engine)
    add(engine, "v2")
    with pytest.raises(Conflict, match="already active"):
        roll(engine, 1)
    with pytest.raises(NotFound, match="no version 5"):
        roll(engine, 5)
    for bad in (0, -1, True, "2", 2.0, None, 2**31):
        with pytest.raises(InvalidInput) as caught:
            roll(engine, bad)
        assert caught.value.field == "version"
    with pytest.raises(InvalidInput) as caught:
        roll(engine, 2, reason="")
    assert caught.value.field == "reason"
    with pytest.raises(NotFound):
        roll(engine, 1, name="other")
    assert get(engine).active_version == 1
    assert count(engine, PromptActivation) == 1


@pytest.mark.parametrize("status", ["running", "paused"])
def test_rollback_refused_while_an_experiment_is_live(engine: Engine, status: str) -> None:
    view = create(engine)
    add(engine, "v2")
    with session_factory(engine).begin() as session:
        experiment = Experiment(prompt_id=view.id, status=status)
        session.add(experiment)
        session.flush()
        experiment_id = experiment.id
    with pytest.raises(Conflict, match=f"experiment {experiment_id} {status}; stop it first"):
        roll(engine, 2)
    assert get(engine).active_version == 1
    with session_factory(engine).begin() as session:
        session.execute(update(Experiment).values(status="stopped"))
    assert roll(engine, 2).active_version == 2


def test_database_allows_only_one_active_version(engine: Engine) -> None:
    create(engine)
    add(engine, "v2")
    with pytest.raises(IntegrityError), session_factory(engine).begin() as session:
        session.execute(
            update(PromptVersion).where(PromptVersion.version == 2).values(status="active")
        )
    roll(engine, 2)
    with pytest.raises(IntegrityError), session_factory(engine).begin() as session:
        session.execute(
            update(PromptVersion).where(PromptVersion.version == 1).values(status="active")
        )


def test_set_active_version_checks_its_arguments(engine: Engine) -> None:
    a, b = create(engine, "a"), create(engine, "b")
    with session_factory(engine).begin() as session:
        with pytest.raises(Conflict, match="already active"):
            prompts.set_active_version(
                session, a.id, a.versions[0].id, actor="x", reason="y", now=T0
            )
        with pytest.raises(NotFound):
            prompts.set_active_version(
                session, a.id, b.versions[0].id, actor="x", reason="y", now=T0
            )
        with pytest.raises(NotFound):
            prompts.set_active_version(
                session, 999, a.versions[0].id, actor="x", reason="y", now=T0
            )


def test_failed_call_inside_transaction_leaves_nothing(engine: Engine) -> None:
    create(engine)
    with pytest.raises(Conflict), session_factory(engine).begin() as session:
        prompts.add_version(session, "support", "fresh", now=T0)
        prompts.create_prompt(session, "support", "again", actor="x", now=T0)
    assert [v.number for v in get(engine).versions] == [1]
