"""What `prompt-worker demo` prints: the changes in the database after each job (insights,
variants with their true success rate, experiments), the replay step's verdicts, and the
closing summary. The true success rates come from the simulated world; the optimizer never
reads them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.experiments import Experiment, ExperimentArm
from models.insights import PatternInsight
from models.prompts import PromptVersion
from optimizer import db
from optimizer.demo.world import START, expected_success_rate
from optimizer.replay.gate import HALF

MAX_REASON_CHARS = 300
MAX_NOTES_CHARS = 120
NOT_LIVE = {True: "passed, held back", False: "rejected"}
HELD_OR_REJECTED = {True: "held back", False: "rejected"}


@dataclass
class DemoSummary:
    provider: str
    insights: list[str] = field(default_factory=list)
    variants: list[int] = field(default_factory=list)
    replayed: dict[str, list[int]] = field(
        default_factory=lambda: {"live": [], "held back": [], "rejected": []}
    )
    experiments: list[dict[str, Any]] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)
    active_version: int = 1
    success_before: float = 0.0
    success_after: float = 0.0
    expected_before: float = 0.0
    expected_after: float = 0.0


def printer(out: TextIO) -> Callable[[datetime, str], None]:
    def say(at: datetime, text: str) -> None:
        elapsed = at - START
        stamp = f"day {elapsed.days} {elapsed.seconds // 3600:02d}:{elapsed.seconds // 60 % 60:02d}"
        print(f"[{stamp}] {text}", file=out, flush=True)

    return say


def day_of(at: datetime) -> float:
    return (at - START).total_seconds() / 86400.0


@dataclass
class Reporter:
    """Prints what each job changed, once."""

    engine: Engine
    out: TextIO
    summary: DemoSummary
    insights: set[int] = field(default_factory=set)
    versions: set[int] = field(default_factory=set)
    experiments: dict[int, str] = field(default_factory=dict)

    def say(self, at: datetime, text: str) -> None:
        printer(self.out)(at, text)

    def job_done(self, now: datetime, job_type: str, result: dict[str, Any]) -> None:
        """The job's own lines (the replay's verdicts), then what it changed."""
        if job_type == "variant_generation":
            self.changes(now)  # the variants before what happens to them
            self.say(now, f"generation: {result.get('experiment_creation_note')}")
        if job_type == "candidate_replay":
            for line in replay_lines(result):
                self.say(now, line)
            self._count_verdicts(result)
        self.changes(now)

    def _count_verdicts(self, result: dict[str, Any]) -> None:
        for candidate in result.get("candidates", []):
            kind = "live" if candidate["live"] else HELD_OR_REJECTED[bool(candidate["passed"])]
            self.summary.replayed[kind].append(int(candidate["version"]))

    def changes(self, now: datetime, *, quiet: bool = False) -> None:
        with db.session_factory(self.engine)() as session:
            self._insights(session, now, quiet)
            self._versions(session, now, quiet)
            self._experiments(session, now, quiet)

    def _insights(self, session: Session, now: datetime, quiet: bool) -> None:
        query = select(PatternInsight).where(PatternInsight.is_actionable.is_(True))
        for insight in session.scalars(query.order_by(PatternInsight.id)):
            if insight.id not in self.insights:
                self.insights.add(insight.id)
                self.summary.insights.append(insight.title)
                if not quiet:
                    self.say(now, f"insight: {insight.title}")

    def _versions(self, session: Session, now: datetime, quiet: bool) -> None:
        for version in session.scalars(select(PromptVersion).order_by(PromptVersion.id)):
            if version.id in self.versions:
                continue
            self.versions.add(version.id)
            if quiet:
                continue
            self.summary.variants.append(version.version)
            notes = " ".join((version.change_notes or "").split())
            true = expected_success_rate(version.content, day_of(now))
            self.say(
                now,
                f"variant v{version.version} generated ({version.source}, true success rate "
                f"{true:.1%}): {_cut(notes, MAX_NOTES_CHARS)}",
            )

    def _experiments(self, session: Session, now: datetime, quiet: bool) -> None:
        for experiment in session.scalars(select(Experiment).order_by(Experiment.id)):
            before = self.experiments.get(experiment.id)
            if before != experiment.status:
                self.experiments[experiment.id] = experiment.status
                if not quiet:
                    self._say_experiment(session, experiment, before, now)

    def _say_experiment(
        self, session: Session, experiment: Experiment, before: str | None, now: datetime
    ) -> None:
        summary = self.summary
        if before is None:
            arms = _arms(session, experiment.id)
            self.say(now, f"experiment {experiment.id} started ({experiment.status}): {arms}")
            summary.experiments.append({"id": experiment.id, "status": experiment.status})
            if experiment.status == "running":
                return
        reason = _cut(" ".join((experiment.decision_reason or "").split()), MAX_REASON_CHARS)
        self.say(now, f"experiment {experiment.id} {experiment.status}: {reason}")
        winner = _number(session, experiment.winner_version_id)
        for entry in summary.experiments:
            if entry["id"] == experiment.id:
                entry.update(status=experiment.status, reason=reason, winner=winner)


def replay_lines(result: dict[str, Any]) -> list[str]:
    """The replay step in a few lines: what was replayed, then per candidate its win
    rates with their intervals and the verdict (with the reason when rejected), then what
    goes live."""
    candidates = result.get("candidates") or []
    if not candidates:
        return [f"replay: {result.get('message', 'nothing replayed')}"]
    versions = ", ".join(f"v{c['version']}" for c in candidates)
    skipped = max(sum(part["count"] for part in c["unusable"].values()) for c in candidates)
    unusable = f"; {skipped} conversation(s) skipped: no usable user turn" if skipped else ""
    lines = [
        f"replay: {versions} against v{result['control_version']} on {candidates[0]['scope']}, "
        f"each answer pair judged in both orders ({result['llm_calls']} LLM calls{unusable})"
    ]
    lines += [f"  {_candidate_line(c)}" for c in candidates]
    lines.append(f"  -> {result.get('experiment_creation_note')}")
    return lines


def _candidate_line(candidate: dict[str, Any]) -> str:
    verdict = "passed, live" if candidate["live"] else NOT_LIVE[bool(candidate["passed"])]
    figures = f"failing {_rate(candidate['failing'])}; held-out {_rate(candidate['holdout'])}"
    line = f"v{candidate['version']} {verdict}: {figures}"
    if not candidate["passed"]:
        line += f" -- {_why(candidate)}"
    return line


def _rate(rate: dict[str, Any]) -> str:
    if rate.get("rate") is None:
        return "not judged"
    return (
        f"{rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}] "
        f"(won {rate['wins']}, tied {rate['ties']}, lost {rate['losses']})"
    )


def _why(candidate: dict[str, Any]) -> str:
    """The part of the gate's reason that rejected the candidate."""
    body = str(candidate["reason"]).removeprefix("rejected by replay: ")
    failing, _, holdout = body.partition("; held-out sample: ")
    low = candidate["failing"].get("low")
    return failing if low is None or low <= HALF else f"held-out sample: {holdout}"


def _arms(session: Session, experiment_id: int) -> str:
    rows = session.execute(
        select(PromptVersion.version, ExperimentArm.is_control)
        .join(ExperimentArm, ExperimentArm.version_id == PromptVersion.id)
        .where(ExperimentArm.experiment_id == experiment_id)
        .order_by(ExperimentArm.id)
    ).all()
    control = [f"v{n} (control)" for n, is_control in rows if is_control]
    return " vs ".join(control + [f"v{n}" for n, is_control in rows if not is_control])


def _number(session: Session, version_id: int | None) -> int | None:
    if version_id is None:
        return None
    number: int | None = session.scalar(
        select(PromptVersion.version).where(PromptVersion.id == version_id)
    )
    return number


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_summary(summary: DemoSummary, database: Path, seconds: float, out: TextIO) -> None:
    replayed = summary.replayed
    lines = [
        "",
        "== summary",
        f"LLM:                 {summary.provider}"
        + (
            " (deterministic offline generator, no Claude calls)"
            if summary.provider == "offline"
            else ""
        ),
        f"actionable insights: {len(summary.insights)}"
        + "".join(f"\n  - {title}" for title in summary.insights),
        f"variants generated:  {_versions(summary.variants)}",
        f"replay verdicts:     live {_versions(replayed['live'])}; passed but held back "
        f"{_versions(replayed['held back'])}; rejected {_versions(replayed['rejected'])}",
        f"experiments:         {len(summary.experiments)}"
        + "".join(
            f"\n  - experiment {e['id']}: {e['status']}"
            + (f", winner v{e['winner']}" if e.get("winner") else "")
            for e in summary.experiments
        ),
        f"active version:      v{summary.active_version}",
        f"success rate before: {summary.success_before:.1%} (v1, first simulated day; "
        f"true {summary.expected_before:.1%})",
        f"success rate after:  {summary.success_after:.1%} (v{summary.active_version}, last "
        f"simulated day; true {summary.expected_after:.1%})",
        f"failed jobs:         {len(summary.failed_jobs)}",
        f"database:            {database}",
        f"took {seconds:.1f} s",
    ]
    print("\n".join(lines), file=out, flush=True)


def _versions(numbers: list[int]) -> str:
    return ", ".join(f"v{n}" for n in numbers) or "none"
