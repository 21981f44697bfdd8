"""`prompt-worker evaluations NAME VERSION ...` in-process on real SQLite and PostgreSQL: the
summary and each evaluation in words, answers cut to a readable length with no control
character reaching the terminal, JSON equal to the API's document, paging, and mistakes as
one `error:` line."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from models.prompts import PromptVersion
from optimizer import cli, evaluations
from optimizer.cli.evaluations import ANSWER_CHARS, one_line
from optimizer.db import session_factory
from tests.support.cli import Outcome
from tests.support.evaluations import (
    SCRIPT,
    conversations,
    evaluation_row,
    insert_evaluations,
    realistic_rows,
    replay_world,
)

REJECTION = "replay: failing 31.2% (90% interval 12.0%-58.1%) is not above one half"


@pytest.fixture
def run(engine: Engine, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))

    def call(*argv: str) -> Outcome:
        capsys.readouterr()
        code = cli.main(["evaluations", *argv])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return call


def test_the_text_shows_the_summary_then_each_evaluation(run, engine: Engine) -> None:
    world = replay_world(engine)
    (conversation,) = conversations(engine, world, 1)
    long_answer = "Réponse : " + "vérifiez la commande puis le délai. " * 40
    insert_evaluations(
        engine,
        [
            evaluation_row(world, verdicts=("control", "control"), sample="holdout"),
            evaluation_row(
                world,
                conversation_id=conversation,
                segment="日本語",
                verdicts=("candidate", "tie"),
                reason_control_first=None,
                candidate_answer=json.dumps([long_answer, f"\x1b[2Kclear\r\n{SCRIPT}"]),
                control_answer="not JSON at all",
            ),
        ],
    )
    with engine.begin() as conn:
        conn.execute(
            update(PromptVersion)
            .where(PromptVersion.id == world.candidate_id)
            .values(status="rejected", status_reason=REJECTION)
        )
    result = run("support-bot", "2")
    assert result.code == 0, result.err
    with session_factory(engine)() as session:
        summary = evaluations.replay_of(session, "support-bot", 2)[0]
    lines = result.out.splitlines()
    assert lines[:6] == [
        "support-bot v2: rejected",
        f"  reason: {REJECTION}",
        f"  judged against v1: 2 evaluations, 2,400 tokens in, 680 out, $0.0246, "
        f"last {lines[2].rsplit('last ', 1)[1]}",
        f"  failing  {evaluations.rate_text(summary.failing)}",
        f"  holdout  {evaluations.rate_text(summary.holdout)}",
        "",
    ]
    assert "failing  50.0% (90% interval" in result.out and "1 tie, 0 losses" in result.out
    newest = result.out[result.out.index("#2 ") : result.out.index("#1 ")]
    assert f"conversation {conversation}" in newest and "segment 日本語" in newest
    assert "changed with the order; score 0.5" in newest
    assert "reason (control first): (none given)" in newest
    cut = one_line(long_answer, ANSWER_CHARS)
    assert f"candidate answer 1/2: {cut}" in newest and cut.endswith("more characters)")
    assert f"candidate answer 2/2: \ufffd[2Kclear {SCRIPT}" in newest  # no escape reaches a tty
    assert "control answer 1/1: not JSON at all" in newest
    oldest = result.out[result.out.index("#1 ") :]
    assert "holdout  conversation deleted  segment billing  against v1" in oldest
    assert not any(ord(c) < 32 and c != "\n" for c in result.out)


def test_json_is_the_api_document_and_pages_continue(run, engine: Engine) -> None:
    world = replay_world(engine)
    insert_evaluations(engine, realistic_rows(world, 7, random.Random(5)))
    first = run("support-bot", "2", "--limit", "3", "--json")
    assert first.code == 0, first.err
    with session_factory(engine)() as session:
        summary, page = evaluations.replay_of(session, "support-bot", 2, limit=3)
    assert first.json() == json.loads(
        json.dumps(evaluations.page_document("support-bot", summary, page))
    )
    seen = [e["id"] for e in first.json()["evaluations"]]
    before = first.json()["next_before"]
    while before is not None:
        more = run("support-bot", "2", "--limit", "3", "--before", str(before), "--json").json()
        seen += [e["id"] for e in more["evaluations"]]
        before = more["next_before"]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 7

    text = run("support-bot", "2", "--limit", "3", "--sample", "failing")
    assert text.code == 0
    if "more: " in text.out:
        hint = text.out.splitlines()[-1]
        assert hint.startswith("more: prompt-worker evaluations support-bot 2 --before ")
        assert hint.endswith("--sample failing --limit 3")
    assert "  holdout  conversation" not in text.out


def test_a_version_never_replayed(run, engine: Engine) -> None:
    replay_world(engine)
    result = run("support-bot", "3")
    assert result.code == 0
    assert result.out.splitlines() == [
        "support-bot v3: candidate",
        "  not replayed: no evaluations are stored for this version",
    ]
    assert run("support-bot", "3", "--json").json()["evaluations"] == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("ghost", "1"), "no prompt named 'ghost'"),
        (("support-bot", "9"), "has no version 9"),
        (("support-bot", "two"), "VERSION must be a version number"),
        (("support-bot", "0"), "VERSION must be a version number"),
        (("bad name", "1"), "name"),
        (("support-bot", "2", "--sample", "both"), "sample must be one of failing, holdout"),
        (("support-bot", "2", "--limit", "0"), "limit must be"),
        (("support-bot", "2", "--limit", "501"), "limit must be"),
        (("support-bot", "2", "--before", "x"), "before must be"),
    ],
)
def test_mistakes_are_one_error_line(run, engine: Engine, argv: tuple[str, ...], needle: str):
    replay_world(engine)
    result = run(*argv)
    assert result.code == 1 and result.out == ""
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert needle in result.err and "Traceback" not in result.err
