"""`prompt-worker demo`: the planted bad segment is found, variants are generated, replayed and
judged (the verdicts printed), the best tested live and promoted, and the success rate goes
up, all through the real handlers and queue."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.conversations import Conversation
from models.evaluations import CandidateEvaluation
from models.experiments import Experiment
from models.llm_calls import LlmCall
from models.prompts import PromptVersion
from optimizer import db
from optimizer.cli import main
from optimizer.config import Settings
from optimizer.demo.probe import probe_anthropic
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.procs import REPO, free_port


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "LLM_PROVIDER", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def run_demo(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["demo", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_demo_finds_the_bad_segment_and_promotes_a_fix(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "demo.db"
    # 1.5 simulated days: the experiment can end after its 24 h minimum runtime.
    code, out, err = run_demo(capsys, "--days", "1.5", "--database", str(database))

    assert code == 0, err
    assert "LLM:                 offline (deterministic offline generator" in out
    assert re.search(r"insight: segment 'billing': success rate", out)
    assert re.search(r"variant v2 generated \(offline", out)
    winner = re.search(r"experiment 1: completed, winner v(\d+)", out)
    assert winner is not None
    before = float(re.search(r"success rate before: ([\d.]+)%", out).group(1))  # type: ignore[union-attr]
    after = float(re.search(r"success rate after:  ([\d.]+)%", out).group(1))  # type: ignore[union-attr]
    assert after > before + 5
    assert "failed jobs:         0" in out

    # The replay step, before the experiment: what was replayed, each candidate's verdict
    # with its win rates and intervals, the reason of each rejection, what went live.
    replay = re.search(r"replay: ((?:v\d+, )*v\d+) against v1 on segment 'billing'", out)
    assert replay is not None and "judged in both orders" in out
    replayed = set(re.findall(r"v(\d+)", replay.group(1)))
    verdicts = dict(VERDICT.findall(out))
    assert set(verdicts) == replayed
    assert "passed, live" in verdicts.values()
    for line in out.splitlines():
        if re.search(r"\] +v\d+ rejected: ", line):
            assert " -- " in line and ("not above one half" in line or "loses" in line)
    live = re.search(r"-> experiment_creation job \d+ queued for versions ([\d, ]+)", out)
    assert live is not None
    assert winner.group(1) in {v.strip() for v in live.group(1).split(",")}
    assert out.index("-> experiment_creation") < out.index("experiment 1 started")
    assert re.search(r"replay verdicts:     live v\d+", out)

    # What it printed is what the database holds.
    engine = db.create_db_engine(f"sqlite:///{database}")
    try:
        with db.session_factory(engine)() as session:
            active = session.scalars(
                select(PromptVersion).where(PromptVersion.status == "active")
            ).one()
            experiment = session.scalars(select(Experiment)).one()
            sources = set(
                session.scalars(select(PromptVersion.source).where(PromptVersion.version > 1))
            )
            providers = set(session.scalars(select(LlmCall.provider)))
            rejected = {
                v.version: v.status_reason
                for v in session.scalars(
                    select(PromptVersion).where(PromptVersion.status == "rejected")
                )
            }
            replayed_forms = session.execute(
                select(Conversation.messages.is_not(None), func.count())
                .join(CandidateEvaluation, CandidateEvaluation.conversation_id == Conversation.id)
                .group_by(Conversation.messages.is_not(None))
            ).all()
            logged_forms = session.execute(
                select(
                    Conversation.messages.is_not(None), Conversation.transcript.is_not(None)
                ).distinct()
            ).all()
    finally:
        engine.dispose()
    assert active.version == int(winner.group(1)) and "billing" in active.content.lower()
    assert experiment.status == "completed" and experiment.winner_version_id == active.id
    assert sources == {"offline"} and providers == {"offline"}
    assert {str(v) for v in rejected} == {v for v, why in verdicts.items() if why == "rejected"}
    assert all((why or "").startswith("rejected by replay: ") for why in rejected.values())
    # Conversations were logged with structured messages and with text transcripts, and
    # replay used both.
    assert set(logged_forms) == {(True, False), (False, True)}
    assert {bool(has_messages) for has_messages, _ in replayed_forms} == {True, False}


VERDICT = re.compile(r"\] +v(\d+) (passed, live|passed, held back|rejected): failing ")


def test_demo_repeats_exactly_with_the_same_seed(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = []
    for name in ("a.db", "b.db"):
        code, out, _ = run_demo(capsys, "--days", "0.25", "--database", str(tmp_path / name))
        assert code == 0
        outputs.append(
            [line for line in out.splitlines() if not line.startswith(("database:", "took "))]
        )
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--days", "0"], "--days must be more than 0"),
        (["--days", "15"], "at most 14"),
        (["--per-tick", "0"], "--per-tick must be between 1 and 1000"),
        (["--database", "/no/such/folder/demo.db"], "does not exist"),
    ],
)
def test_demo_refuses_bad_arguments(
    offline: None, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run_demo(capsys, *argv)
    assert code != 0 and fragment in err and "Traceback" not in err


def test_demo_will_not_overwrite_a_database(
    offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "prod.db"
    existing.write_bytes(b"precious")
    code, _, err = run_demo(capsys, "--database", str(existing))
    assert code != 0 and "already exists" in err
    assert existing.read_bytes() == b"precious"


# --- with ANTHROPIC_API_KEY set and the API failing: one line, the offline hint, soon ------

DEMO_KEY = "sk-ant-demo-test-key-0123456789"
# A bound the issue sets on the demo ("under 60 seconds in every case"); here it only keeps
# a hung demo from hanging the suite. Speed itself is not asserted.
HANG_GUARD_SECONDS = 60


async def run_demo_process(tmp_path: Path, base_url: str, *argv: str) -> tuple[int, str]:
    """`prompt-worker demo` in its own process, with a key and the API at `base_url`.
    Returns the exit status and everything it printed (stdout then stderr)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LLM_PROVIDER", "DATABASE_URL", "ANTHROPIC_AUTH_TOKEN")
    }
    env.update(ANTHROPIC_API_KEY=DEMO_KEY, ANTHROPIC_BASE_URL=base_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "optimizer",
        "demo",
        "--database",
        str(tmp_path / "demo.db"),
        *argv,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"demo still running after {HANG_GUARD_SECONDS} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def assert_one_line_stop(code: int, printed: str, *fragments: str) -> None:
    assert code == 1, printed
    assert "Traceback" not in printed and DEMO_KEY not in printed
    errors = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, printed
    [line] = errors
    for fragment in fragments:
        assert fragment in line, line
    assert "LLM_PROVIDER=offline" in line  # how to run it without the API
    assert len(printed.splitlines()) <= 8, printed


async def test_demo_stops_at_once_when_the_api_is_unreachable(tmp_path: Path) -> None:
    port = free_port()  # closed: nothing listens there
    code, printed = await run_demo_process(tmp_path, f"http://127.0.0.1:{port}")
    assert_one_line_stop(
        code, printed, f"cannot reach the Anthropic API at http://127.0.0.1:{port}"
    )
    assert not (tmp_path / "demo.db").exists()


async def test_demo_stops_at_once_when_the_key_is_rejected(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        fake.script(*[Reply.error(401, message="invalid x-api-key")] * 20)
        code, printed = await run_demo_process(tmp_path, fake.base_url)
    assert_one_line_stop(code, printed, "rejected ANTHROPIC_API_KEY (HTTP 401)")
    assert len(fake.requests) == 1  # one probe, no retries
    assert not (tmp_path / "demo.db").exists()


async def test_demo_stops_at_the_first_failed_call_after_a_good_start(tmp_path: Path) -> None:
    """The key works for the first request, then is refused: the demo stops there instead
    of failing every hour for the rest of the simulation."""
    async with FakeAnthropic() as fake:
        fake.script(Reply(), *[Reply.error(401, message="key revoked")] * 20)
        code, printed = await run_demo_process(tmp_path, fake.base_url, "--days", "0.5")
    assert_one_line_stop(code, printed, "rejected ANTHROPIC_API_KEY")
    assert len(fake.requests) == 2  # the probe, then the first real call


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield int(sock.getsockname()[1])
    sock.close()


async def test_probe_gives_up_on_an_api_that_never_answers(silent_port: int) -> None:
    settings = Settings(anthropic_api_key=DEMO_KEY)
    problem = await probe_anthropic(
        settings, base_url=f"http://127.0.0.1:{silent_port}", timeout=0.5
    )
    assert problem == (
        f"the Anthropic API at http://127.0.0.1:{silent_port} did not answer within 0.5 s"
    )


@pytest.mark.parametrize(
    "status, fragment",
    [
        (403, "may not use the Messages API or model claude-sonnet-5-5 (HTTP 403)"),
        (404, "answered HTTP 404: check that model claude-sonnet-5-5 (LLM_MODEL_SONNET) exists"),
        (429, "rate limiting this key (HTTP 429)"),
        (500, "answered HTTP 500"),
        (529, "overloaded (HTTP 529)"),
    ],
)
async def test_probe_names_each_refusal_in_one_line(status: int, fragment: str) -> None:
    settings = Settings(anthropic_api_key=DEMO_KEY)
    async with FakeAnthropic() as fake:
        fake.script(Reply.error(status))
        problem = await probe_anthropic(settings, base_url=fake.base_url)
        assert problem is not None and fragment in problem and "\n" not in problem
        assert len(fake.requests) == 1 and fake.requests[0].body["max_tokens"] == 1
        fake.script(Reply())
        assert await probe_anthropic(settings, base_url=fake.base_url) is None
