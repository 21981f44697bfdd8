"""`prompt-worker demo`: the planted bad segment is found, a variant is generated, tested and
promoted, and the success rate goes up, all through the real handlers and queue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from models.experiments import Experiment
from models.llm_calls import LlmCall
from models.prompts import PromptVersion
from optimizer import db
from optimizer.cli import main


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
        offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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

    # What it printed is what the database holds.
    engine = db.create_db_engine(f"sqlite:///{database}")
    try:
        with db.session_factory(engine)() as session:
            active = session.scalars(select(PromptVersion).where(
                PromptVersion.status == "active")).one()
            experiment = session.scalars(select(Experiment)).one()
            sources = set(session.scalars(select(PromptVersion.source).where(
                PromptVersion.version > 1)))
            providers = set(session.scalars(select(LlmCall.provider)))
    finally:
        engine.dispose()
    assert active.version == int(winner.group(1)) and "billing" in active.content.lower()
    assert experiment.status == "completed" and experiment.winner_version_id == active.id
    assert sources == {"offline"} and providers == {"offline"}


def test_demo_repeats_exactly_with_the_same_seed(
        offline: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for name in ("a.db", "b.db"):
        code, out, _ = run_demo(capsys, "--days", "0.25", "--database", str(tmp_path / name))
        assert code == 0
        outputs.append([line for line in out.splitlines()
                        if not line.startswith(("database:", "took "))])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("argv, fragment", [
    (["--days", "0"], "--days must be more than 0"),
    (["--days", "15"], "at most 14"),
    (["--per-tick", "0"], "--per-tick must be between 1 and 1000"),
    (["--database", "/no/such/folder/demo.db"], "does not exist"),
])
def test_demo_refuses_bad_arguments(offline: None, capsys: pytest.CaptureFixture[str],
                                    argv: list[str], fragment: str) -> None:
    code, out, err = run_demo(capsys, *argv)
    assert code != 0 and fragment in err and "Traceback" not in err


def test_demo_will_not_overwrite_a_database(offline: None, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "prod.db"
    existing.write_bytes(b"precious")
    code, _, err = run_demo(capsys, "--database", str(existing))
    assert code != 0 and "already exists" in err
    assert existing.read_bytes() == b"precious"
