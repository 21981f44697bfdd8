"""`prompt-worker experiments approve|reject|promote` and `prompt-worker prompts settings` on
real SQLite and PostgreSQL: the same effects as the admin API, recorded as the CLI's actor;
bad input refused in one line naming the field, nothing written; usage mistakes are
argparse's (exit status 2)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from optimizer import cli, prompts
from optimizer.db import session_factory
from optimizer.webhooks import sign
from tests.support.approvals import (
    APPROVE,
    WEBHOOK_SECRET,
    counts,
    experiment_row,
    monitor,
    start,
    winning,
)
from tests.support.cli import Outcome
from tests.support.experiments import arm_ids, seed_prompt, version_statuses

Run = Callable[..., Outcome]


@pytest.fixture
def run(engine: Engine, monkeypatch, capsys) -> Run:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.delenv("PROMOTION_MODE", raising=False)

    def call(*argv: str) -> Outcome:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return call


def assert_user_error(result: Outcome, *needles: str) -> None:
    assert result.code == 1, result
    assert result.out == "" and "Traceback" not in result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    for needle in needles:
        assert needle in result.err, result.err


def last_activation(engine: Engine, name: str = "support-bot") -> dict[str, object]:
    with session_factory(engine)() as session:
        return prompts.activation_history(session, name)[-1]


# --- experiments approve, reject, promote --------------------------------------------------


async def test_approve_from_the_shell(run: Run, engine: Engine) -> None:
    experiment_id = winning(engine)
    await monitor(engine, APPROVE)
    status = run("status")
    assert status.code == 0 and "WAITING FOR APPROVAL of version 2" in status.out
    approved = run("experiments", "approve", str(experiment_id), "--reason", "clearer – ✓")
    assert approved.code == 0, approved.err
    shown = approved.json()
    assert (shown["status"], shown["winner_version"]) == ("completed", 2)
    assert version_statuses(engine) == {1: "retired", 2: "active", 3: "candidate"}
    activation = last_activation(engine)
    assert activation["actor"] == "admin (CLI)"
    assert activation["reason"] == f"approved in experiment {experiment_id}: clearer – ✓"
    again = run("experiments", "approve", str(experiment_id), "--reason", "again")
    assert_user_error(again, f"experiment {experiment_id} is completed, not awaiting approval")


async def test_reject_from_the_shell(run: Run, engine: Engine) -> None:
    experiment_id = winning(engine)
    await monitor(engine, APPROVE)
    rejected = run("experiments", "reject", str(experiment_id), "--reason", "off-brand")
    assert rejected.code == 0, rejected.err
    assert rejected.json()["decision_reason"].startswith(
        "Version 2 rejected by admin (CLI): off-brand; control version 1 stays active."
    )
    assert version_statuses(engine) == {1: "active", 2: "retired", 3: "candidate"}


@pytest.mark.parametrize("by", ["--arm", "--version"])
def test_promote_from_the_shell(run: Run, engine: Engine, by: str) -> None:
    seed_prompt(engine)
    experiment_id = start(engine, variants=(2, 3))
    third = arm_ids(engine, experiment_id)[2]
    which = str(third) if by == "--arm" else "3"
    promoted = run("experiments", "promote", str(experiment_id), by, which, "--reason", "r")
    assert promoted.code == 0, promoted.err
    assert promoted.json()["winner_version"] == 3
    assert version_statuses(engine) == {1: "retired", 2: "retired", 3: "active"}
    assert last_activation(engine)["actor"] == "admin (CLI)"


class HookServer(ThreadingHTTPServer):
    """A webhook receiver on a thread (the CLI runs its own event loop), keeping each body
    whose signature checks out."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Hook)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Hook(BaseHTTPRequestHandler):
    server: HookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers["X-Prompt-Worker-Signature"] == sign(WEBHOOK_SECRET, body):
            self.server.bodies.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hook(monkeypatch) -> Iterator[HookServer]:
    server = HookServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("WEBHOOK_URL", server.url)
    monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK_SECRET)
    yield server
    server.shutdown()
    server.server_close()


def test_the_shells_actions_send_the_webhook_before_it_exits(
    run: Run, engine: Engine, hook: HookServer
) -> None:
    seed_prompt(engine)
    promoted = start(engine, variants=(2, 3))
    assert run("experiments", "promote", str(promoted), "--version", "3", "--reason", "é").code == 0
    seed_prompt(engine, "other-bot")
    stopped = start(engine, "other-bot")
    assert run("experiments", "stop", str(stopped)).code == 0
    refused = run("experiments", "approve", str(stopped), "--reason", "late")
    assert refused.code == 1  # nothing happened, nothing sent
    assert "warning" not in refused.err
    assert [(b["event"], b["data"]["action"]) for b in hook.bodies] == [
        ("experiment.action", "promote"),
        ("experiment.action", "stop"),
    ]
    assert hook.bodies[0]["data"] == {
        "experiment_id": promoted,
        "prompt": "support-bot",
        "action": "promote",
        "actor": "admin (CLI)",
        "reason": "é",
        "status": "completed",
        "winner_version": 3,
    }


def test_an_unreachable_receiver_does_not_fail_the_command(
    run: Run, engine: Engine, monkeypatch
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("WEBHOOK_URL", f"http://127.0.0.1:{port}/hook")
    monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK_SECRET)
    seed_prompt(engine)
    experiment_id = start(engine)
    stopped = run("experiments", "stop", str(experiment_id), "--reason", "r")
    assert stopped.code == 0 and stopped.json()["status"] == "stopped"
    assert stopped.err == (
        "warning: the experiment.action webhook was not delivered to WEBHOOK_URL (the change "
        "itself is saved)\n"
    )
    assert experiment_row(engine, experiment_id).status == "stopped"


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (("approve", "{id}", "--reason", "r"), ("is running, not awaiting approval",)),
        (("reject", "{id}", "--reason", "r"), ("is running, not awaiting approval",)),
        (("approve", "{id}", "--reason", "  "), ("reason is blank",)),
        (("approve", "{id}", "--reason", ""), ("reason must not be empty",)),
        (("approve", "{id}", "--reason", "x" * 2001), ("reason is 2,001 characters",)),
        (("approve", "0", "--reason", "r"), ("id must be a positive whole number",)),
        (("approve", "987654", "--reason", "r"), ("no experiment with id 987654",)),
        (("promote", "{id}", "--arm", "abc", "--reason", "r"), ("arm must be",)),
        (("promote", "{id}", "--version", "9", "--reason", "r"), ("has no version 9",)),
        (("promote", "{id}", "--version", "1", "--reason", "r"), ("is the control",)),
        (("promote", "{id}", "--arm", "987654", "--reason", "r"), ("has no arm 987654",)),
        (("promote", "{id}", "--version", "2", "--reason", "\x00"), ("NUL",)),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    run: Run, engine: Engine, argv: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    seed_prompt(engine)
    experiment_id = start(engine, variants=(2, 3))
    before = counts(engine)
    result = run("experiments", *(a.replace("{id}", str(experiment_id)) for a in argv))
    assert_user_error(result, *needles)
    assert counts(engine) == before
    assert experiment_row(engine, experiment_id).status == "running"


@pytest.mark.parametrize(
    "argv",
    [
        ("approve", "1"),  # no --reason
        ("promote", "1", "--reason", "r"),  # neither --arm nor --version
        ("promote", "1", "--arm", "2", "--version", "2", "--reason", "r"),  # both
    ],
)
def test_usage_mistakes_are_argparses(run: Run, argv: tuple[str, ...], capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        run("experiments", *argv)
    assert caught.value.code == 2


# --- prompts settings -----------------------------------------------------------------------


def test_settings_from_the_shell(run: Run, engine: Engine, tmp_path: Path, monkeypatch) -> None:
    seed_prompt(engine)
    shown = run("prompts", "settings", "support-bot")
    assert shown.code == 0 and shown.json() == {
        "prompt": "support-bot",
        "promotion_mode": None,
        "effective_promotion_mode": "auto",
        "judge_rubric": None,
    }
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Réponses courtes.\n<script>alert(1)</script>\n", encoding="utf-8")
    changed = run(
        "prompts",
        "settings",
        "support-bot",
        "--promotion-mode",
        "approve",
        "--judge-rubric-file",
        str(rubric),
    )
    assert changed.code == 0, changed.err
    assert changed.json()["promotion_mode"] == "approve"
    assert changed.json()["judge_rubric"] == rubric.read_text(encoding="utf-8")
    # Only the option given changes; the service's setting shows through "inherit".
    monkeypatch.setenv("PROMOTION_MODE", "approve")
    inherit = run("prompts", "settings", "support-bot", "--promotion-mode", "inherit")
    assert inherit.json()["promotion_mode"] is None
    assert inherit.json()["effective_promotion_mode"] == "approve"
    assert inherit.json()["judge_rubric"] == changed.json()["judge_rubric"]
    removed = run("prompts", "settings", "support-bot", "--no-judge-rubric")
    assert removed.json()["judge_rubric"] is None
    document = run("prompts", "show", "support-bot").json()
    assert document["settings"] == removed.json()


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (("--promotion-mode", "manual"), ("promotion_mode must be", "got 'manual'")),
        (("--judge-rubric-file", "/no/such/file"), ("cannot read /no/such/file",)),
        (("--judge-rubric-file", "{blank}"), ("judge_rubric is blank",)),
        (("--judge-rubric-file", "{latin1}"), ("is not UTF-8 text",)),
    ],
)
def test_bad_settings_from_the_shell(
    run: Run, engine: Engine, tmp_path: Path, argv: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    seed_prompt(engine)
    blank, latin1 = tmp_path / "blank.txt", tmp_path / "latin1.txt"
    blank.write_text(" \n\t\n", encoding="utf-8")
    latin1.write_bytes("café".encode("latin-1"))
    files = {"{blank}": str(blank), "{latin1}": str(latin1)}
    before = counts(engine)
    result = run("prompts", "settings", "support-bot", *(files.get(a, a) for a in argv))
    assert_user_error(result, *needles)
    assert counts(engine) == before
    assert run("prompts", "settings", "support-bot").json()["promotion_mode"] is None


def test_settings_of_an_unknown_prompt(run: Run, engine: Engine) -> None:
    assert_user_error(run("prompts", "settings", "ghost"), "no prompt named 'ghost'")
    with pytest.raises(SystemExit) as caught:
        run("prompts", "settings", "x", "--judge-rubric-file", "f", "--no-judge-rubric")
    assert caught.value.code == 2
