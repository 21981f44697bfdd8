"""`prompt-worker` in-process on real SQLite and PostgreSQL, plus one real process."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from models.jobs import OptimizationJob
from optimizer import db
from optimizer.cli import main
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import create_db_engine
from optimizer.runtime import queue
from tests.support.cli import Outcome

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE_URL = "postgresql+psycopg://nobody@127.0.0.1:1/x"

Cli = Callable[..., Outcome]


@pytest.fixture
def cli(monkeypatch, capsys) -> Cli:
    for name in ("MAX_ATTEMPTS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


@pytest.fixture
def use_db(monkeypatch, db_url) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    return db_url


@pytest.fixture
def migrated(cli, use_db) -> Iterator[Engine]:
    """The CLI's own migrate, then an engine for asserting what it wrote."""
    assert cli("migrate").code == 0
    engine = create_db_engine(use_db)
    yield engine
    engine.dispose()


def count_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(OptimizationJob)).scalar_one())


def assert_user_error(result: Outcome, *needles: str) -> None:
    assert result.code == 1
    assert result.out == ""
    assert "Traceback" not in result.err
    assert result.err.startswith("error: ") and result.err.endswith("\n")
    assert result.err.count("\n") == 1, result.err
    for needle in needles:
        assert needle in result.err


# --- migrate -----------------------------------------------------------------------------


def test_migrate_is_idempotent(cli, use_db):
    first = cli("migrate")
    second = cli("migrate")
    head = db.head_revision()
    assert (first.code, second.code) == (0, 0)
    assert first.out == second.out
    assert first.out.endswith(f" is at schema revision {head} (the latest)\n")
    engine = create_db_engine(use_db)
    try:
        assert db.current_revision(engine) == head
        assert count_jobs(engine) == 0
    finally:
        engine.dispose()


# --- jobs add / show / list --------------------------------------------------------------


def test_add_prints_the_stored_job(cli, migrated, monkeypatch):
    monkeypatch.setenv("MAX_ATTEMPTS", "5")
    result = cli(
        "jobs",
        "add",
        "full_cycle",
        "--prompt",
        "support",
        "--payload",
        '{"n": 2}',
        "--priority",
        "7",
        "--run-at",
        "2030-01-02T03:04:05Z",
    )
    assert result.code == 0, result.err
    assert result.out.startswith('{\n  "id": ')  # indented for people
    shown = result.json()
    stored = queue.get_job(migrated, shown["id"])
    assert shown == stored.to_dict()
    assert stored.type == "full_cycle" and stored.status == "pending"
    assert json.loads(stored.payload) == {"n": 2, "prompt": "support"}
    assert (stored.priority, stored.max_attempts) == (7, 5)
    assert shown["run_after"] == "2030-01-02T03:04:05Z"


def test_add_defaults(cli, migrated):
    result = cli("jobs", "add", "pattern_analysis")
    assert result.code == 0, result.err
    stored = queue.get_job(migrated, result.json()["id"])
    assert (stored.payload, stored.priority, stored.max_attempts) == ("{}", 0, 3)
    assert stored.run_after <= utcnow()


def test_show_prints_the_job(cli, migrated):
    job_id = cli("jobs", "add", "experiment_monitoring").json()["id"]
    result = cli("jobs", "show", str(job_id))
    assert result.code == 0
    assert result.json() == queue.get_job(migrated, job_id).to_dict()


def test_list_table_and_json_with_filters(cli, migrated):
    ids = [
        cli("jobs", "add", t, "--prompt", "support").json()["id"]
        for t in ("pattern_analysis", "full_cycle", "full_cycle")
    ]
    cli("jobs", "cancel", str(ids[0]))

    table = cli("jobs", "list")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split() == [
        "ID",
        "TYPE",
        "STATUS",
        "PRIO",
        "ATTEMPTS",
        "PROGRESS",
        "CREATED",
        "ERROR",
    ]
    assert [line.split()[0] for line in lines[1:]] == [str(i) for i in reversed(ids)]
    assert "cancelled by an admin" in lines[-1] and "0/3" in lines[-1] and "0%" in lines[-1]
    # Fixed width: every row's STATUS cell starts under the header.
    at = lines[0].index("STATUS")
    assert [line[at:].split()[0] for line in lines[1:]] == ["pending", "pending", "cancelled"]

    as_json = cli("jobs", "list", "--json", "--type", "full_cycle", "--limit", "1")
    assert as_json.code == 0
    assert [j["id"] for j in as_json.json()["jobs"]] == [ids[2]]

    cancelled = cli("jobs", "list", "--json", "--status", "cancelled").json()["jobs"]
    assert [(j["id"], j["status"]) for j in cancelled] == [(ids[0], "cancelled")]


def test_list_on_an_empty_queue(cli, migrated):
    result = cli("jobs", "list")
    assert (result.code, result.out) == (0, "no jobs match\n")
    assert cli("jobs", "list", "--json").json() == {"jobs": []}


def test_list_shortens_long_errors_to_one_line(cli, migrated):
    job_id = cli("jobs", "add", "full_cycle", "--prompt", "support").json()["id"]
    with migrated.begin() as conn:
        conn.execute(
            update(OptimizationJob)
            .where(OptimizationJob.id == job_id)
            .values(status="failed", error="boom\n" + "x" * 500)
        )
    lines = cli("jobs", "list").out.splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("...") and "boom x" in lines[1] and len(lines[1]) < 160


# --- cancel / retry ----------------------------------------------------------------------


def test_cancel_a_pending_job(cli, migrated):
    job_id = cli("jobs", "add", "full_cycle", "--prompt", "support").json()["id"]
    result = cli("jobs", "cancel", str(job_id))
    assert result.code == 0
    assert result.json()["status"] == "cancelled"
    assert queue.get_job(migrated, job_id).status == "cancelled"


def test_cancel_a_running_job_asks_it_to_stop(cli, migrated):
    job_id = cli("jobs", "add", "full_cycle", "--prompt", "support").json()["id"]
    assert queue.claim(migrated, "w1", lease_seconds=60, now=utcnow()) is not None
    result = cli("jobs", "cancel", str(job_id))
    assert result.code == 0
    assert (result.json()["status"], result.json()["cancel_requested"]) == ("running", True)
    assert queue.get_job(migrated, job_id).cancel_requested is True
    assert "running (cancel requested)" in cli("jobs", "list").out


def test_retry_a_failed_job(cli, migrated):
    job_id = cli("jobs", "add", "full_cycle", "--prompt", "support").json()["id"]
    with migrated.begin() as conn:
        conn.execute(
            update(OptimizationJob)
            .where(OptimizationJob.id == job_id)
            .values(status="failed", attempts=3, error="it broke", finished_at=utcnow())
        )
    result = cli("jobs", "retry", str(job_id))
    assert result.code == 0, result.err
    stored = queue.get_job(migrated, job_id)
    assert result.json() == stored.to_dict()
    assert (stored.status, stored.attempts, stored.finished_at) == ("pending", 0, None)


def test_retry_a_cancelled_job(cli, migrated):
    job_id = cli("jobs", "add", "full_cycle", "--prompt", "support").json()["id"]
    cli("jobs", "cancel", str(job_id))
    assert cli("jobs", "retry", str(job_id)).json()["status"] == "pending"
    assert queue.get_job(migrated, job_id).status == "pending"


def test_retry_a_pending_job_is_a_conflict(cli, migrated):
    job_id = cli("jobs", "add", "full_cycle", "--prompt", "support").json()["id"]
    assert_user_error(cli("jobs", "retry", str(job_id)), f"job {job_id} is pending")
    assert queue.get_job(migrated, job_id).status == "pending"


def test_cancel_a_finished_job_is_a_conflict(cli, migrated):
    job_id = cli("jobs", "add", "full_cycle", "--prompt", "support").json()["id"]
    cli("jobs", "cancel", str(job_id))
    assert_user_error(cli("jobs", "cancel", str(job_id)), "already cancelled")


@pytest.mark.parametrize("action", ["show", "cancel", "retry"])
def test_unknown_id(cli, migrated, action):
    assert_user_error(cli("jobs", action, "424242"), "job 424242 does not exist")


@pytest.mark.parametrize("raw", ["0", "-3", "abc", "1.5", "٣", "99999999999999999999"])
def test_bad_id(cli, migrated, raw):
    assert_user_error(cli("jobs", "show", raw), "id must be a positive whole number")


# --- bad input writes nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["bogus"], "type"),
        (["full_cycle", "--payload", "not json"], "payload"),
        (["full_cycle", "--payload", "[1]"], "payload"),
        (["full_cycle", "--payload", '{"x": NaN}'], "payload"),
        (["full_cycle", "--prompt", "bot", "--priority", "high"], "priority"),
        (["full_cycle", "--prompt", "bot", "--priority", "1.5"], "priority"),
        (["full_cycle", "--prompt", "bot", "--priority", "100000"], "priority"),
        (["full_cycle", "--prompt", "bot", "--run-at", "tomorrow"], "run_at"),
        (["full_cycle", "--prompt", "  "], "prompt"),
        (["full_cycle", "--prompt", "two words"], "prompt"),
        (["variant_generation", "--prompt", "bot", "--payload", '{"n": 99}'], "payload.n"),
        (["full_cycle", "--payload", '{"n": 2}'], "payload.prompt"),
    ],
)
def test_bad_add_input_writes_nothing(cli, migrated, args, field):
    assert_user_error(cli("jobs", "add", *args), field)
    assert count_jobs(migrated) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--status", "done"], "status must be one of"),
        (["--type", "bogus"], "type must be one of"),
        (["--limit", "0"], "limit"),
        (["--limit", "501"], "limit"),
        (["--limit", "ten"], "limit"),
    ],
)
def test_bad_list_filters(cli, migrated, args, needle):
    assert_user_error(cli("jobs", "list", *args), needle)


def test_usage_errors_exit_2(cli, use_db, capsys):
    for argv in ([], ["jobs"], ["jobs", "frobnicate"], ["jobs", "add"], ["nope"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "usage: prompt-worker" in capsys.readouterr().err


# --- the database is not ready -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["jobs", "list"], ["jobs", "add", "full_cycle", "--prompt", "support"], ["jobs", "show", "1"]],
)
def test_unmigrated_database_says_run_migrate(cli, use_db, argv):
    where = db.sqlite_file(use_db)
    if where is not None:  # an existing but empty file, as older versions left behind
        sqlite3.connect(where).close()
    assert_user_error(
        cli(*argv),
        f"database {db.describe(use_db)} has no prompt-worker schema; run `prompt-worker migrate`",
    )


@pytest.mark.parametrize("url", ["mysql://x", "not a url", "postgresql://h:port/x"])
def test_bad_database_url(cli, monkeypatch, url):
    monkeypatch.setenv("DATABASE_URL", url)
    assert_user_error(cli("jobs", "list"), "DATABASE_URL")
    assert_user_error(cli("migrate"), "DATABASE_URL")


def test_unreachable_database(cli, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_URL)
    assert_user_error(cli("jobs", "list"), "cannot reach the database")
    assert_user_error(cli("migrate"), "cannot reach the database")


def test_bad_setting_is_one_line(cli, monkeypatch, sqlite_url):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("MAX_ATTEMPTS", "lots")
    assert_user_error(
        cli("jobs", "list"), "MAX_ATTEMPTS must be a whole number from 1 to 100; got 'lots'"
    )


def test_every_bad_setting_is_named_on_the_one_line(cli, monkeypatch, sqlite_url):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("WORKER_CONCURRENCY", "x")
    monkeypatch.setenv("MONITORING_CRON", "every minute")
    assert_user_error(
        cli("status"), "WORKER_CONCURRENCY", "'x'", "MONITORING_CRON", "'every minute'"
    )


# --- run ---------------------------------------------------------------------------------


def test_run_hands_settings_to_the_service(cli, monkeypatch, sqlite_url):
    seen: list[Settings] = []

    def fake_run_service(settings: Settings) -> int:
        seen.append(settings)
        return 3

    monkeypatch.setattr("optimizer.service.run_service", fake_run_service)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert cli("migrate").code == 0
    assert cli("run").code == 3
    assert [s.database_url for s in seen] == [sqlite_url]


def test_run_with_bad_settings_does_not_start(cli, monkeypatch):
    monkeypatch.setattr(
        "optimizer.service.run_service", lambda settings: pytest.fail("service started")
    )
    monkeypatch.setenv("PORT", "eighty")
    assert_user_error(cli("run"), "PORT")


# --- a real process ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["jobs", "add", "bogus"], "type must be one of"),
        (
            ["jobs", "add", "variant_generation", "--payload", '{"n": 99}'],
            "payload.prompt is required",
        ),
        (["jobs", "list"], "run `prompt-worker migrate` first to create this one"),
    ],
)
def test_real_process_reports_one_line(tmp_path, argv, needle):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "optimizer", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert needle in proc.stderr


def test_real_process_with_a_bad_setting_reports_one_line(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    assert (
        subprocess.run(
            [sys.executable, "-m", "optimizer", "migrate"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=60,
        ).returncode
        == 0
    )
    proc = subprocess.run(
        [sys.executable, "-m", "optimizer", "status"],
        cwd=REPO,
        env={**env, "WORKER_CONCURRENCY": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        1,
        "",
        "error: WORKER_CONCURRENCY must be a whole number from 1 to 64; got 'x'\n",
    )
