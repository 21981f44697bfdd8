"""`prompt-worker prompts ...` in-process on real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.experiments import Experiment
from models.prompts import Prompt, PromptActivation, PromptVersion
from optimizer import cli
from optimizer.db import session_factory
from tests.support.cli import Outcome


@pytest.fixture
def run(engine: Engine, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))

    def call(*argv: str) -> Outcome:
        capsys.readouterr()
        code = cli.main(["prompts", *argv])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return call


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def assert_user_error(result: Outcome, *needles: str) -> None:
    assert result.code == 1
    assert result.out == ""
    assert "Traceback" not in result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    for needle in needles:
        assert needle in result.err, result.err


def test_add_creates_then_adds_versions(run, tmp_path: Path, engine: Engine) -> None:
    created = run("add", "support", "--file", write(tmp_path, "v1.txt", "Be helpful.\n"))
    assert created.code == 0, created.err
    doc = created.json()
    assert doc["name"] == "support" and doc["active_version"] == 1
    assert doc["versions"][0]["content"] == "Be helpful.\n"
    assert doc["activations"][0]["actor"] == "cli"

    added = run(
        "add", "support", "--file", write(tmp_path, "v2.txt", "Be brief.\n"), "--notes", "shorter"
    )
    assert added.code == 0, added.err
    assert {k: added.json()[k] for k in ("number", "status", "parent", "change_notes")} == {
        "number": 2,
        "status": "candidate",
        "parent": 1,
        "change_notes": "shorter",
    }

    shown = run("show", "support")
    assert shown.code == 0
    assert [(v["number"], v["status"]) for v in shown.json()["versions"]] == [
        (1, "active"),
        (2, "candidate"),
    ]


def test_list_table_and_json(run, tmp_path: Path) -> None:
    empty = run("list")
    assert empty.code == 0 and "no prompts yet" in empty.out
    run("add", "beta", "--file", write(tmp_path, "b", "b"))
    run("add", "alpha", "--file", write(tmp_path, "a", "a"))
    run("add", "alpha", "--file", write(tmp_path, "a2", "a2"))
    table = run("list").out.splitlines()
    assert table[0].split() == ["NAME", "ACTIVE", "VERSIONS", "CREATED"]
    assert [line.split()[:3] for line in table[1:]] == [["alpha", "1", "2"], ["beta", "1", "1"]]
    listed = run("list", "--json").json()["prompts"]
    assert [(p["name"], p["active_version"], p["versions_count"]) for p in listed] == [
        ("alpha", 1, 2),
        ("beta", 1, 1),
    ]


def test_diff(run, tmp_path: Path) -> None:
    run("add", "support", "--file", write(tmp_path, "v1", "line one\nline two\nline three\n"))
    run("add", "support", "--file", write(tmp_path, "v2", "line one\nline 2\nline three\n"))
    result = run("diff", "support", "1", "2")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "--- support@v1",
        "+++ support@v2",
        "@@ -1,3 +1,3 @@",
        " line one",
        "-line two",
        "+line 2",
        " line three",
    ]
    assert run("diff", "support", "2", "2").out == ""


def test_rollback(run, tmp_path: Path, engine: Engine) -> None:
    run("add", "support", "--file", write(tmp_path, "v1", "one"))
    run("add", "support", "--file", write(tmp_path, "v2", "two"))
    result = run("rollback", "support", "--to", "2", "--reason", "v1 rambles")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["active_version"] == 2
    assert [(v["number"], v["status"]) for v in doc["versions"]] == [(1, "retired"), (2, "active")]
    assert {
        k: doc["activations"][-1][k] for k in ("from_version", "to_version", "actor", "reason")
    } == {"from_version": 1, "to_version": 2, "actor": "cli", "reason": "v1 rambles"}
    again = run("rollback", "support", "--to", "1")
    assert again.code == 0 and again.json()["activations"][-1]["reason"]


def test_user_errors_are_one_line(run, tmp_path: Path, engine: Engine) -> None:
    assert_user_error(
        run("add", "support", "--file", str(tmp_path / "missing.txt")), "cannot read", "missing.txt"
    )
    assert_user_error(run("add", "support", "--file", str(tmp_path)), "cannot read")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    assert_user_error(run("add", "support", "--file", str(latin)), "not UTF-8")
    assert_user_error(
        run("add", "support", "--file", write(tmp_path, "blank", "  \n")), "content is empty"
    )
    assert_user_error(run("add", "bad name", "--file", write(tmp_path, "ok", "ok")), "name")
    assert count(engine, Prompt) == 0

    run("add", "support", "--file", write(tmp_path, "v1", "one"))
    assert_user_error(
        run("add", "support", "--file", write(tmp_path, "dup", "one")),
        "version 1 already has exactly this content",
    )
    assert_user_error(run("show", "ghost"), "no prompt named 'ghost'")
    assert_user_error(run("diff", "support", "1", "7"), "no version 7")
    assert_user_error(run("diff", "support", "x", "1"), "A must be a version number")
    assert_user_error(run("rollback", "support", "--to", "1"), "already active")
    assert_user_error(run("rollback", "support", "--to", "0"), "to must be")
    assert_user_error(run("rollback", "support", "--to", "99999999999"), "to must be")
    assert_user_error(run("rollback", "ghost", "--to", "1"), "no prompt named")
    assert count(engine, PromptVersion) == 1 and count(engine, PromptActivation) == 1


def test_rollback_refused_while_experiment_runs(run, tmp_path: Path, engine: Engine) -> None:
    run("add", "support", "--file", write(tmp_path, "v1", "one"))
    run("add", "support", "--file", write(tmp_path, "v2", "two"))
    with session_factory(engine).begin() as session:
        prompt_id = session.scalars(select(Prompt.id)).one()
        session.add(Experiment(prompt_id=prompt_id, status="running"))
    assert_user_error(run("rollback", "support", "--to", "2"), "stop it first")
    assert count(engine, PromptActivation) == 1


def test_usage_errors_exit_2(run) -> None:
    for argv in (("add", "support"), ("rollback", "support"), ("diff", "support", "1")):
        with pytest.raises(SystemExit) as caught:
            run(*argv)
        assert caught.value.code == 2


# --- --file - reads standard input ------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def run_process(engine: Engine, argv: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    return subprocess.run(
        [sys.executable, "-m", "optimizer", "prompts", *argv],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_add_reads_standard_input(engine: Engine) -> None:
    text = "Be helpful, café ✓.\n\nSecond paragraph.\n"
    created = run_process(engine, ["add", "support", "--file", "-"], text.encode())
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["versions"][0]["content"] == text

    added = run_process(engine, ["add", "support", "--file", "-", "--notes", "piped"], b"Be brief.")
    assert added.returncode == 0, added.stderr
    assert {k: json.loads(added.stdout)[k] for k in ("number", "content", "change_notes")} == {
        "number": 2,
        "content": "Be brief.",
        "change_notes": "piped",
    }


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [
        (b"", "standard input is empty"),
        (b"caf\xe9", "standard input is not UTF-8"),
        (b" \n\t\n", "content is empty"),
    ],
)
def test_bad_standard_input_is_one_line_and_writes_nothing(
    engine: Engine, stdin: bytes, needle: str
) -> None:
    result = run_process(engine, ["add", "support", "--file", "-"], stdin)
    err = result.stderr.decode()
    assert result.returncode == 1 and result.stdout == b""
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    assert count(engine, Prompt) == 0 and count(engine, PromptVersion) == 0
