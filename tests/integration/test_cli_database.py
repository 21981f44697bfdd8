"""Which database the CLI opens: a command never creates a SQLite file as a side effect,
and a missing or unmigrated database is reported with its absolute path."""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer import cli, db
from optimizer.cli.command import build_parser

REPO = Path(__file__).resolve().parents[2]

# One valid invocation of every command that opens DATABASE_URL. Keyed by the command path
# so the coverage check below notices a new subcommand that is missing here.
ARGV: dict[tuple[str, ...], list[str]] = {
    ("jobs", "add"): ["jobs", "add", "full_cycle", "--prompt", "support"],
    ("jobs", "list"): ["jobs", "list"],
    ("jobs", "show"): ["jobs", "show", "1"],
    ("jobs", "cancel"): ["jobs", "cancel", "1"],
    ("jobs", "retry"): ["jobs", "retry", "1"],
    ("prompts", "add"): ["prompts", "add", "support", "--file", "prompt.txt"],
    ("prompts", "list"): ["prompts", "list"],
    ("prompts", "show"): ["prompts", "show", "support"],
    ("prompts", "diff"): ["prompts", "diff", "support", "1", "2"],
    ("prompts", "rollback"): ["prompts", "rollback", "support", "--to", "1"],
    ("experiments", "list"): ["experiments", "list"],
    ("experiments", "show"): ["experiments", "show", "1"],
    ("experiments", "stop"): ["experiments", "stop", "1"],
    ("experiments", "start"): ["experiments", "start", "support", "--variants", "2"],
    ("experiments", "approve"): ["experiments", "approve", "1", "--reason", "ok"],
    ("experiments", "reject"): ["experiments", "reject", "1", "--reason", "no"],
    ("experiments", "promote"): ["experiments", "promote", "1", "--version", "2", "--reason", "r"],
    ("prompts", "settings"): ["prompts", "settings", "support", "--promotion-mode", "approve"],
    ("evaluations",): ["evaluations", "support", "2"],
    ("insights", "list"): ["insights", "list"],
    ("conversations", "import"): ["conversations", "import", "rows.jsonl"],
    ("status",): ["status"],
}
# Commands allowed to create the file (migrate), that open none (demo), or that hand
# DATABASE_URL to the service (run: checked separately below).
NOT_IN_ARGV = {("migrate",), ("demo",), ("run",)}


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> set[tuple[str, ...]]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return {prefix}
    return {
        path
        for name, sub in subparsers[0].choices.items()
        for path in _command_paths(sub, (*prefix, name))
    }


def test_every_command_is_covered():
    assert _command_paths(build_parser()) == set(ARGV) | NOT_IN_ARGV


@pytest.fixture
def empty_dir(tmp_path, monkeypatch) -> Path:
    """A working directory that is not the project: no database, no alembic/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / "prompt.txt").write_text("Be helpful.\n")
    (tmp_path / "rows.jsonl").write_text('{"prompt": "support"}\n')
    return tmp_path


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("path", sorted(ARGV), ids=" ".join)
def test_a_missing_sqlite_file_is_not_created(empty_dir, capsys, path):
    before = _files(empty_dir)
    code = cli.main(ARGV[path])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == "" and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    expected = str(empty_dir / "prompt_worker.db")
    assert f"no database at {expected}" in err
    assert "DATABASE_URL" in err and "prompt-worker migrate" in err
    assert _files(empty_dir) == before  # no prompt_worker.db, no -wal, no -journal


def test_an_absolute_path_in_database_url_is_named(tmp_path, monkeypatch, capsys):
    target = tmp_path / "nested" / "pw.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{target}")
    assert cli.main(["jobs", "list"]) == 1
    assert f"no database at {target}" in capsys.readouterr().err
    assert not target.parent.exists()


def test_run_refuses_a_missing_file_without_creating_it(empty_dir, capsys, monkeypatch):
    monkeypatch.setattr(
        "optimizer.service.run_service", lambda settings: pytest.fail("service started")
    )
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert f"no database at {empty_dir / 'prompt_worker.db'}" in err
    assert "make run" in err
    assert not (empty_dir / "prompt_worker.db").exists()


def test_migrate_creates_the_file_where_it_says(empty_dir, capsys):
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr().out.endswith(
        f" is at schema revision {db.head_revision()} (the latest)\n"
    )
    assert (empty_dir / "prompt_worker.db").is_file()
    assert cli.main(["jobs", "list"]) == 0
    assert capsys.readouterr().out == "no jobs match\n"


def test_migrate_into_a_missing_folder_says_so(tmp_path, monkeypatch, capsys):
    target = tmp_path / "nowhere" / "pw.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{target}")
    assert cli.main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot create the database {target}: folder {target.parent} does not exist\n"
    )


def test_an_unmigrated_sqlite_file_is_named_in_plain_words(empty_dir, capsys):
    sqlite3.connect(empty_dir / "prompt_worker.db").close()  # an empty file, as before
    assert cli.main(["prompts", "list"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: database {empty_dir / 'prompt_worker.db'} has no prompt-worker "
        "schema; run `prompt-worker migrate`\n"
    )


@pytest.mark.postgres
def test_an_unmigrated_postgres_database_is_named_without_credentials(pg_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    assert cli.main(["experiments", "list"]) == 1
    err = capsys.readouterr().err
    assert "has no prompt-worker schema; run `prompt-worker migrate`" in err
    database = pg_url.rsplit("/", 1)[1]
    assert f"/{database} has no" in err
    assert "@" not in err  # neither user nor password


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_databases_are_not_files(url):
    assert db.sqlite_file(url) is None


def test_sqlite_file_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert db.sqlite_file("sqlite:///x.db") == tmp_path / "x.db"
    assert db.sqlite_file(f"sqlite:///{tmp_path}/y.db") == tmp_path / "y.db"
    assert db.sqlite_file("sqlite+pysqlite:///z.db") == tmp_path / "z.db"
    assert db.sqlite_file("postgresql://u:p@h/d") is None


@pytest.mark.parametrize("argv", [["prompts", "list"], ["status", "--json"]])
def test_real_process_outside_the_project(tmp_path, argv):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "optimizer", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert f"no database at {tmp_path / 'prompt_worker.db'}" in proc.stderr
    assert list(tmp_path.iterdir()) == []
