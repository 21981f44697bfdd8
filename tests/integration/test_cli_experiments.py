"""`prompt-worker experiments start` on real SQLite and PostgreSQL: the same experiment as
POST /experiments, bad input refused in one line naming the field, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.experiments import Experiment
from optimizer import cli
from optimizer.config import Settings
from tests.support.cli import Outcome
from tests.support.experiments import seed_prompt, version_statuses

TOKEN = "admin-token-for-cli-experiments"
UNTOUCHED = {1: "active", 2: "candidate", 3: "candidate"}
# Fields of an experiment that depend on when, where and through what it was made.
INCIDENTAL = ("id", "prompt", "started_at", "created_by")


Run = Callable[..., Outcome]


@pytest.fixture
def run(engine: Engine, monkeypatch, capsys) -> Run:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    for name in ("PROMOTION_CONFIDENCE", "MIN_CONVERSATIONS_PER_ARM"):
        monkeypatch.delenv(name, raising=False)
    seed_prompt(engine)

    def call(*argv: str) -> Outcome:
        capsys.readouterr()
        code = cli.main(["experiments", *argv])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return call


def experiment_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Experiment)).scalar_one())


def assert_user_error(result: Outcome, *needles: str) -> None:
    assert result.code == 1, result
    assert result.out == ""
    assert "Traceback" not in result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    for needle in needles:
        assert needle in result.err, result.err


def test_start_prints_the_experiment_as_show_does(run, engine):
    started = run("start", "support-bot", "--variants", "2,3")
    assert started.code == 0, started.err
    experiment = started.json()
    assert experiment["status"] == "running" and experiment["created_by"] == "admin (CLI)"
    assert [(a["version"], a["is_control"], a["weight"]) for a in experiment["arms"]] == [
        (1, True, 1.0),
        (2, False, 1.0),
        (3, False, 1.0),
    ]
    assert version_statuses(engine) == {1: "active", 2: "testing", 3: "testing"}
    shown = run("show", str(experiment["id"]))
    assert shown.code == 0 and shown.out == started.out


def test_defaults_come_from_the_service_settings(run, monkeypatch):
    monkeypatch.setenv("PROMOTION_CONFIDENCE", "0.95")
    monkeypatch.setenv("MIN_CONVERSATIONS_PER_ARM", "250")
    experiment = run("start", "support-bot", "--variants", "2").json()
    assert (experiment["confidence"], experiment["min_conversations_per_arm"]) == (0.95, 250)
    assert (
        experiment["primary_metric"],
        experiment["min_runtime_hours"],
        experiment["max_runtime_hours"],
    ) == ("success", 24.0, 336.0)
    assert [g["metric"] for g in experiment["guardrails"]] == ["rating", "cost_usd", "latency_ms"]


def test_every_option(run, tmp_path):
    guardrails = tmp_path / "guardrails.json"
    guardrails.write_text('[{"metric": "cost_usd", "tolerance": 0.01, "required": true}]')
    result = run(
        "start",
        "support-bot",
        "--variants",
        " 3, 2 ",
        "--weights",
        "2,1,0.5",
        "--confidence",
        "0.97",
        "--min-conversations-per-arm",
        "50",
        "--min-runtime-hours",
        "1.5",
        "--max-runtime-hours",
        "48",
        "--primary-metric",
        "rating",
        "--guardrails",
        f"@{guardrails}",
    )
    assert result.code == 0, result.err
    experiment = result.json()
    assert [(a["version"], a["weight"]) for a in experiment["arms"]] == [
        (1, 2.0),
        (3, 1.0),
        (2, 0.5),
    ]
    assert {
        k: experiment[k]
        for k in (
            "confidence",
            "min_conversations_per_arm",
            "min_runtime_hours",
            "max_runtime_hours",
            "primary_metric",
        )
    } == {
        "confidence": 0.97,
        "min_conversations_per_arm": 50,
        "min_runtime_hours": 1.5,
        "max_runtime_hours": 48.0,
        "primary_metric": "rating",
    }
    assert experiment["guardrails"] == [
        {
            "metric": "cost_usd",
            "higher_is_better": False,
            "tolerance": 0.01,
            "required": True,
            "cap": None,
        }
    ]


async def test_the_same_experiment_as_post_experiments(engine, make_client, monkeypatch, capsys):
    """One set of defaults and checks: the CLI and the HTTP API store the same settings."""
    seed_prompt(engine, "via-http")
    seed_prompt(engine, "via-cli")
    settings = Settings(admin_token=TOKEN, promotion_confidence=0.93, min_conversations_per_arm=321)
    body = {
        "variants": [3, 2],
        "weights": [1, 2, 3],
        "min_runtime_hours": 2,
        "guardrails": [{"metric": "latency_ms", "tolerance": 50}],
    }
    client = await make_client(engine, settings)
    try:
        resp = await client.post(
            "/experiments",
            json={"prompt": "via-http", **body},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert resp.status == 201, await resp.text()
        via_http = await resp.json()
    finally:
        await client.close()

    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("PROMOTION_CONFIDENCE", "0.93")
    monkeypatch.setenv("MIN_CONVERSATIONS_PER_ARM", "321")
    capsys.readouterr()
    assert (
        cli.main(
            [
                "experiments",
                "start",
                "via-cli",
                "--variants",
                "3,2",
                "--weights",
                "1,2,3",
                "--min-runtime-hours",
                "2",
                "--guardrails",
                json.dumps(body["guardrails"]),
            ]
        )
        == 0
    )
    via_cli = json.loads(capsys.readouterr().out)

    def essentials(experiment: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in experiment.items() if k not in INCIDENTAL}
        kept["arms"] = [
            {k: v for k, v in arm.items() if k not in ("id", "version_id")}
            for arm in experiment["arms"]
        ]
        return kept

    assert essentials(via_cli) == essentials(via_http)
    assert via_cli["confidence"] == 0.93 and via_cli["min_conversations_per_arm"] == 321


HUGE = "1" * 400

BAD_STARTS = [
    (["ghost", "--variants", "2"], "prompt", "no prompt named 'ghost'"),
    (["bad name", "--variants", "2"], "prompt", "prompt name must be"),
    (["bad\udcffname", "--variants", "2"], "prompt", "prompt name must be"),
    (["support-bot", "--variants", ""], "variants", "like 2,3"),
    (["support-bot", "--variants", "2,,3"], "variants", "like 2,3"),
    (["support-bot", "--variants", "two"], "variants", "like 2,3"),
    (["support-bot", "--variants", "2.5"], "variants", "like 2,3"),
    (["support-bot", "--variants", "-2"], "variants", "like 2,3"),
    (["support-bot", "--variants", "٢"], "variants", "like 2,3"),
    (["support-bot", "--variants", HUGE], "variants", "like 2,3"),
    (["support-bot", "--variants", "2,2"], "variants", "must not repeat"),
    (["support-bot", "--variants", "9"], "variants", "has no version 9"),
    (["support-bot", "--variants", "1"], "variants", "is active"),
    (["support-bot", "--variants", "2", "--weights", "1"], "weights", "list of 2"),
    (["support-bot", "--variants", "2", "--weights", "1,0"], "weights", "at least 1e-06"),
    (["support-bot", "--variants", "2", "--weights", "1,x"], "weights", "numbers"),
    (["support-bot", "--variants", "2", "--weights", "1,nan"], "weights", "numbers"),
    (["support-bot", "--variants", "2", "--weights", f"1,{HUGE}"], "weights", "too large"),
    (["support-bot", "--variants", "2", "--confidence", "1.5"], "confidence", "to 0.9999"),
    (["support-bot", "--variants", "2", "--confidence", "0,9"], "confidence", "a number"),
    (["support-bot", "--variants", "2", "--confidence", "inf"], "confidence", "a number"),
    (["support-bot", "--variants", "2", "--confidence", "1e999"], "confidence", "too large"),
    (["support-bot", "--variants", "2", "--confidence", HUGE], "confidence", "too large"),
    (
        ["support-bot", "--variants", "2", "--min-runtime-hours", "-1"],
        "min_runtime_hours",
        "from 0 to",
    ),
    (
        ["support-bot", "--variants", "2", "--max-runtime-hours", HUGE],
        "max_runtime_hours",
        "too large",
    ),
    (
        ["support-bot", "--variants", "2", "--max-runtime-hours", "1"],
        "max_runtime_hours",
        "must not be less than",
    ),
    (
        ["support-bot", "--variants", "2", "--min-conversations-per-arm", "0"],
        "min_conversations_per_arm",
        "from 1",
    ),
    (
        ["support-bot", "--variants", "2", "--min-conversations-per-arm", "1.5"],
        "min_conversations_per_arm",
        "whole number",
    ),
    (
        ["support-bot", "--variants", "2", "--min-conversations-per-arm", HUGE],
        "min_conversations_per_arm",
        "from 1 to 1000000000",
    ),
    (
        ["support-bot", "--variants", "2", "--primary-metric", "latency_ms"],
        "primary_metric",
        "one of",
    ),
    (
        ["support-bot", "--variants", "2", "--guardrails", "not json"],
        "guardrails",
        "not valid JSON",
    ),
    (
        ["support-bot", "--variants", "2", "--guardrails", '{"metric": "rating"}'],
        "guardrails",
        "must be an array",
    ),
    (
        ["support-bot", "--variants", "2", "--guardrails", '[{"metric": "mood"}]'],
        "guardrails[0].metric",
        "one of",
    ),
    (
        [
            "support-bot",
            "--variants",
            "2",
            "--guardrails",
            '[{"metric": "rating", "tolerance": 1e999}]',
        ],
        "guardrails",
        "JSON",
    ),
    (
        [
            "support-bot",
            "--variants",
            "2",
            "--guardrails",
            '[{"metric": "rating", "tolerance": NaN}]',
        ],
        "guardrails",
        "NaN",
    ),
    (
        [
            "support-bot",
            "--variants",
            "2",
            "--guardrails",
            f'[{{"metric": "rating", "tolerance": {HUGE}}}]',
        ],
        "guardrails[0].tolerance",
        "",
    ),
    (
        ["support-bot", "--variants", "2", "--guardrails", "@/nonexistent/g.json"],
        "guardrails",
        "cannot read /nonexistent/g.json",
    ),
]


@pytest.mark.parametrize(
    ("argv", "field", "needle"),
    BAD_STARTS,
    ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD_STARTS)],
)
def test_bad_input_is_one_line_naming_the_field_and_writes_nothing(
    run, engine, argv, field, needle
):
    assert_user_error(run("start", *argv), field, needle)
    assert experiment_count(engine) == 0
    assert version_statuses(engine) == UNTOUCHED


def test_a_second_live_experiment_is_refused(run, engine):
    first = run("start", "support-bot", "--variants", "2").json()
    assert_user_error(
        run("start", "support-bot", "--variants", "3"),
        f"already has running experiment {first['id']}",
    )
    assert experiment_count(engine) == 1
    assert version_statuses(engine) == {1: "active", 2: "testing", 3: "candidate"}


def test_usage_errors_exit_2(run, engine):
    for argv in (["start"], ["start", "support-bot"], ["start", "--variants", "2"]):
        with pytest.raises(SystemExit) as caught:
            run(*argv)
        assert caught.value.code == 2
    assert experiment_count(engine) == 0


def test_guardrails_file_must_be_utf8(run, engine, tmp_path: Path):
    path = tmp_path / "g.json"
    path.write_bytes(b'[{"metric": "rating", "tolerance": 0.1}]\xff')
    assert_user_error(
        run("start", "support-bot", "--variants", "2", "--guardrails", f"@{path}"),
        "guardrails",
        "not UTF-8",
    )
    assert experiment_count(engine) == 0


# A command-line argument whose bytes are not UTF-8 reaches Python as a lone surrogate
# (surrogateescape): "\udcff" for the byte 0xff.
@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (("stop", "1", "--reason", "tired \udcff"), "reason"),
        (("list", "--prompt", "support\udcff"), "prompt"),
        (("start", "support\udcff", "--variants", "2"), "prompt"),
    ],
)
def test_arguments_that_are_not_utf8_are_a_clear_error(run, engine, argv, field):
    started = run("start", "support-bot", "--variants", "2")
    assert started.code == 0, started
    result = run(*argv)
    assert_user_error(result, field)
    shown = run("show", str(started.json()["id"])).json()
    assert shown["status"] == "running" and experiment_count(engine) == 1
