"""Databases for the dashboard's tests and benchmark, written with bulk Core inserts.

`seed_world` fills a database (migrating it first) with prompts and their versions,
finished and live experiments, the checks of the running one, insights, LLM calls and
jobs; the shortcuts give the sizes the tests use. The rows hold what the service itself
would write:

- each prompt has exactly one active version. The running experiment's control arm is that
  version and its variant arms are the versions under test (`testing`, or `rejected` once
  stopped), so a service started on the file serves them from its routing snapshot;
- the running experiment's checks hold `analyze(...).to_dict(caps=, sums=)` JSON as
  `experiments.monitor.check_experiment` stores it, from simulated unit sums that grow
  check by check (the lifts wander, then settle). Three quarters of the way through, the
  worse variant is stopped (`stop_arms`): its arm and version are marked so, and its slice
  keeps counting units, as a real stop does;
- the live experiments' checks are backed by their conversations, stored as ingest stores
  them: each simulated unit's conversations, with a unit id the assignment puts in its
  arm's slice, and once an arm is stopped its slice's new units served control (arm_id the
  control, assigned_arm_id the stopped arm). The rollup then holds them all, as the last
  check leaves it. So the arms' units and conversations the pages show
  (store.get_experiment) are the latest check's, and a new check sees the same sums;
  except that control's conversations also count those it served a stopped arm's units
  (served_and_units), which a check leaves out of every arm's metrics. Finished
  experiments keep their last check but no conversations: the large seed's ten would add
  60,000 rows and double its time, so their arms show no units;
- with the extras, each prompt's newest version and its newest rejected one below the
  active version have been replayed (REPLAYED evaluations each, as the replay job stores
  them, their conversations since pruned): the newest against the active version, mostly
  won; the rejected one against its predecessor, mostly lost, with the figures as its
  status reason;
- texts are realistic: Unicode, a `<script>` in change notes and titles, a long multi-line
  job error, optional columns left empty.

Nothing goes through the HTTP API (thousands of versions would take minutes on two cores).
Everything is written in one transaction, then the rollup in a second one (its pass reads
committed rows only).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.engine import Connection, Engine

from models.conversations import Conversation
from models.evaluations import CandidateEvaluation
from models.experiments import Experiment, ExperimentAnalysis, ExperimentArm
from models.insights import PatternInsight
from models.jobs import OptimizationJob
from models.llm_calls import LlmCall
from models.prompts import Prompt, PromptActivation, PromptVersion
from optimizer.assignment import pick_arm
from optimizer.db import migrate, session_factory
from optimizer.evaluations import rate_text
from optimizer.experiments.monitor import _sums as monitor_sums  # the stored layout itself
from optimizer.experiments.rollup import roll_up
from optimizer.experiments.validation import guardrails_to_json
from optimizer.stats import (
    DEFAULT_GUARDRAILS,
    AnalysisSettings,
    ArmData,
    Comparison,
    RatioSums,
    analyze,
)
from optimizer.stats import (
    ExperimentAnalysis as Analysis,
)
from optimizer.stats.metrics import NAMES
from optimizer.stats.win_rate import pair_score, win_rate

TOPICS = (
    "support-bot",
    "checkout.assistant",
    "onboarding_guide",
    "refund-helper",
    "kb-search",
    "sales.qualifier",
    "returns_agent",
    "billing-faq",
    "travel.concierge",
    "hr-policy-bot",
)
TONES = ("warm", "concise", "formal", "playful")
CHECK_EVERY = timedelta(minutes=15)  # the default monitoring_cron
CAPS = {"cost_usd": 0.05, "latency_ms": 4000.0}
SETTINGS = AnalysisSettings(primary_metric="success", confidence=0.9, guardrails=DEFAULT_GUARDRAILS)
MIN_RUNTIME_HOURS = 24.0
SEGMENTS = ("web", "mobile", "api")
SEGMENT_WEIGHTS = (0.5, 0.35, 0.15)
WORKER = "worker-7f3c:4242"
SCRIPT = "<script>alert('seed')</script>"
FINISHED_WITH_CHECK = 10  # the newest finished experiments keep their last check
UNITS_PER_FINISHED_ARM = 2500
UNIT_PREFIXES = ("user-", "session:", "kundin-ä")  # unit ids as applications send them
INGEST_DELAY = timedelta(seconds=2)
REPLAYED = 14  # evaluations per replayed version: the default failing and held-out samples
FAILING_SHARE = 8


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


@dataclass(frozen=True)
class Seeded:
    prompt_names: tuple[str, ...]
    multi_version_prompt: str | None  # >= 2 versions and no live experiment: rollback works
    checked_experiment_id: int | None
    checks: int
    running_experiment_id: int | None
    pending_job_id: int | None
    running_job_id: int | None
    failed_job_id: int | None


# --- shortcuts ---------------------------------------------------------------------------


def seed_empty(engine: Engine, now: datetime) -> Seeded:
    """Migrated, nothing in it."""
    return seed_world(engine, now, prompts=0, versions=0, experiments=0, checks=0)


def seed_one_version(engine: Engine, now: datetime) -> Seeded:
    """One prompt with one active version, nothing else."""
    return seed_world(engine, now, prompts=1, versions=1, experiments=0, checks=0, extras=False)


def seed_small(engine: Engine, now: datetime) -> Seeded:
    return seed_world(engine, now, prompts=3, versions=4, experiments=4, checks=12)


def seed_large(engine: Engine, now: datetime) -> Seeded:
    return seed_world(engine, now, prompts=100, versions=50, experiments=1000, checks=200)


# --- the world ---------------------------------------------------------------------------


@dataclass
class _Prompt:
    name: str
    created_at: datetime
    versions: int
    live: str | None  # "running", "paused" or None
    id: int = 0
    version_ids: dict[int, int] = field(default_factory=dict)
    insight_ids: list[int] = field(default_factory=list)

    @property
    def active(self) -> int:
        """The active version's number: two newer ones remain to test."""
        return max(self.versions - 2, 1)


@dataclass(frozen=True)
class _Jobs:
    pending: int | None = None
    running: int | None = None
    failed: int | None = None
    monitoring: tuple[int, ...] = ()  # one completed job per check of the running experiment


def seed_world(
    engine: Engine,
    now: datetime,
    *,
    prompts: int,
    versions: int,
    experiments: int,
    checks: int,
    extras: bool = True,
) -> Seeded:
    """`prompts` x `versions`; `experiments` in all: one running on the first prompt (three
    arms, `checks` checks), one paused on the second when there are 3+ prompts and 4+
    experiments, the rest finished and spread over the prompts. `extras`: insights, LLM
    calls and jobs (one pending in the future, one running with progress, one failed, one
    done, and a completed monitoring job per check)."""
    if experiments and versions < 4:
        raise ValueError("experiments need prompts with at least 4 versions")
    if checks and not experiments:
        raise ValueError("checks need an experiment to belong to")
    migrate(engine)
    if prompts == 0:
        return Seeded((), None, None, 0, None, None, None, None)
    rng = random.Random(14)  # the same world every time
    world = _plan(now, prompts, versions, experiments)
    with engine.begin() as conn:
        _write_prompts(conn, world, now, extras)
        if extras:
            _evaluations(conn, world)
        running, logged = (
            _experiments(conn, world, now, experiments, checks, rng) if experiments else (None, [])
        )
        jobs = _jobs(conn, world, now, running) if extras else _Jobs()
        if running is not None:
            _store_checks(conn, running, jobs.monitoring)
    _roll_up(engine, logged)
    return Seeded(
        prompt_names=tuple(p.name for p in world),
        multi_version_prompt=next(
            (p.name for p in reversed(world) if p.versions >= 2 and p.live is None), None
        ),
        checked_experiment_id=running.id if running is not None and checks else None,
        checks=checks,
        running_experiment_id=running.id if running is not None else None,
        pending_job_id=jobs.pending,
        running_job_id=jobs.running,
        failed_job_id=jobs.failed,
    )


def _insert(conn: Connection, model: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """One executemany; the new ids in the order of `rows`."""
    if not rows:
        return []
    table = _table(model)
    stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return [int(row[0]) for row in conn.execute(stmt, list(rows))]


def _plan(now: datetime, count: int, versions: int, experiments: int) -> list[_Prompt]:
    names = [
        TOPICS[i % len(TOPICS)] + (f"-{i // len(TOPICS) + 1}" if i >= len(TOPICS) else "")
        for i in range(count)
    ]
    world = [
        _Prompt(name, now - timedelta(days=400) + timedelta(minutes=i), versions, None)
        for i, name in enumerate(names)
    ]
    if experiments:
        world[0].live = "running"
    if experiments >= 4 and count >= 3:
        world[1].live = "paused"
    return world


def _write_prompts(conn: Connection, world: list[_Prompt], now: datetime, extras: bool) -> None:
    ids = _insert(conn, Prompt, [{"name": p.name, "created_at": p.created_at} for p in world])
    for prompt, id_ in zip(world, ids, strict=True):
        prompt.id = id_
    calls = _llm_calls(conn, world) if extras else {}
    if extras:
        _insights(conn, world, now)
    _versions(conn, world, calls)
    if extras:
        _link_insights(conn, world)
    _activations(conn, world)


# --- versions ----------------------------------------------------------------------------


def _version_time(prompt: _Prompt, number: int) -> datetime:
    return prompt.created_at + timedelta(days=360 * (number - 1) / prompt.versions)


def _status(prompt: _Prompt, number: int) -> str:
    if number == prompt.active:
        return "active"
    if number > prompt.active:
        # A live experiment tests every newer version (the running one stops the last).
        return "testing" if prompt.live else "candidate"
    return "rejected" if number % 3 == 0 else "retired"


def _source(number: int) -> str:
    """v1 is written by hand; after it the generator (llm), people and the offline
    generator take turns."""
    return "manual" if number == 1 else ("llm", "manual", "offline", "llm")[number % 4]


def content(name: str, number: int) -> str:
    """Version `number`'s text: a shared body with a few lines reworded per version and one
    lesson added per version, so neighbours differ by a handful of lines."""
    title = name.replace("-", " ").replace("_", " ").replace(".", " ").title()
    lines = [
        f"You are {title}, the assistant of Café Lumière’s customers (version {number}).",
        "",
        "Rules:",
        f"1. Keep a {TONES[number % 4]} tone; answer in the customer’s language — «bonjour», "
        "“hello”, 你好 or hola.",
        "2. Never promise a refund above 200 € without a human's approval.",
        f"3. Quote at most {2 + number % 3} help-centre articles, each with its link.",
        "4. When unsure, ask one clarifying question instead of guessing.",
        "5. Prices are shown as 12,50 € in Europe and $12.50 elsewhere.",
        "",
        "Lessons from earlier versions:",
        *(f"- ({k}) {_lesson(k)}" for k in range(1, number + 1)),
        "",
        "Sign off with “— the Café Lumière team ☕”.",
    ]
    return "\n".join(lines)


def _lesson(k: int) -> str:
    lessons = (
        "Mobile users skim: lead with the answer, details after.",
        "Refund questions peak on Mondays; mention the 14-day window early.",
        "Do not paste order numbers back in full; show the last four digits.",
        "Customers writing in Japanese (日本語) prefer polite forms (です/ます).",
        "Escalate threats or self-harm to a human at once.",
        "Avoid the word 'unfortunately' more than once per answer.",
    )
    return lessons[k % len(lessons)] + (f" (seen {k * 37} times)" if k % 5 == 0 else "")


def _model(number: int) -> str:
    return "claude-sonnet-4-5" if number % 4 == 0 else "claude-opus-4-1"


def _notes(number: int, source: str) -> str | None:
    if number == 1:
        return "First version, written by hand."
    if number == 3:
        return f"Escapes? {SCRIPT} — pasted from a ticket; «à vérifier» ✓"
    if number % 5 in (0, 2):
        return None  # optional, and often left out
    if source == "llm":
        return f"Generated: shorter openings, lesson {number} added (Δ success ≈ +2 pts)."
    return f"Tone changed to {TONES[number % 4]}; wording tidied."


def _version_row(prompt: _Prompt, number: int, calls: dict[tuple[int, int], int]) -> dict[str, Any]:
    source = _source(number)
    text = content(prompt.name, number)
    generated = source == "llm"
    # A version written from scratch (every other manual one) has no parent.
    orphan = number == 1 or (source == "manual" and number % 2 == 1)
    answers = prompt.insight_ids[: 1 + number % 3] if generated and number % 8 else []
    return {
        "prompt_id": prompt.id,
        "version": number,
        "content": text,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "status": _status(prompt, number),
        "change_notes": _notes(number, source),
        "parent_version_id": None if orphan else prompt.version_ids[number - 1],
        "source": source,
        "model": _model(number) if generated else None,
        "insight_ids": json.dumps(answers) if answers else None,
        "llm_call_id": calls.get((prompt.id, number)),
        "created_at": _version_time(prompt, number),
    }


def _versions(conn: Connection, world: list[_Prompt], calls: dict[tuple[int, int], int]) -> None:
    """One executemany per version number: a parent's id is known before its child's."""
    for number in range(1, world[0].versions + 1):
        ids = _insert(conn, PromptVersion, [_version_row(p, number, calls) for p in world])
        for prompt, id_ in zip(world, ids, strict=True):
            prompt.version_ids[number] = id_


def _llm_calls(conn: Connection, world: list[_Prompt]) -> dict[tuple[int, int], int]:
    """The call behind each generated version, but every eighth (not recorded)."""
    keys = [
        (p.id, n, _version_time(p, n))
        for p in world
        for n in range(2, p.versions + 1)
        if _source(n) == "llm" and n % 8
    ]
    rows = [
        {
            "purpose": "variant_generation",
            "requested_model": _model(n).split("-")[1],
            "model": _model(n),
            "provider": "anthropic",
            "input_tokens": 3_000 + 17 * n,
            "output_tokens": 900 + n,
            "cost_usd": round(0.0123 + 0.0001 * n, 6),
            "latency_ms": 8_000.0 + 10 * n,
            "outcome": "ok",
            "created_at": at - timedelta(seconds=30),
        }
        for _, n, at in keys
    ]
    ids = _insert(conn, LlmCall, rows)
    return {(pid, n): id_ for (pid, n, _), id_ in zip(keys, ids, strict=True)}


def _activations(conn: Connection, world: list[_Prompt]) -> None:
    rows = []
    for p in world:
        rows.append(
            {
                "prompt_id": p.id,
                "from_version_id": None,
                "to_version_id": p.version_ids[1],
                "actor": "alice@example.com",
                "reason": "created",
                "created_at": p.created_at,
            }
        )
        if p.active > 1:
            rows.append(
                {
                    "prompt_id": p.id,
                    "from_version_id": p.version_ids[1],
                    "to_version_id": p.version_ids[p.active],
                    "actor": "bob@example.com",
                    "reason": f"rolled forward after review ✓ (ticket #{p.id * 7})",
                    "created_at": _version_time(p, p.active) + timedelta(hours=1),
                }
            )
    _insert(conn, PromptActivation, rows)


# --- replay evaluations ------------------------------------------------------------------

_ANSWERS = (
    "Your refund of 12,50 € is on its way — allow 3–5 working days. ✓",
    "Je comprends : le remboursement arrive sous 14 jours. «Merci»",
    "ご注文の返金は5営業日以内に処理されます。",
    "I can't promise a refund above 200 € without a colleague's approval; I've asked one.",
    f"Please paste the order number. {SCRIPT}",
)
_REASONS = (
    "Answer A gives the refund window the customer asked for; B only apologises.",
    "B is shorter and keeps the 200 € rule; A promises too much.",
    "Both answers are correct and equally clear.",
    None,  # the judge's reply had no reason
)
_VERDICTS = {  # (candidate shown first, control shown first), by how the candidate does
    True: (("candidate", "candidate"),) * 5 + (("tie", "tie"), ("candidate", "control")),
    False: (("control", "control"),) * 4 + (("tie", "tie"), ("control", "candidate")),
}


def _replayed(p: _Prompt) -> list[tuple[int, int, bool]]:
    """(version, control, better) of the prompt's replayed versions."""
    found = []
    if p.versions > p.active:
        found.append((p.versions, p.active, True))
    rejected = [n for n in range(2, p.active) if _status(p, n) == "rejected"]
    if rejected:
        found.append((rejected[-1], rejected[-1] - 1, False))
    return found


def _evaluation_rows(p: _Prompt, number: int, control: int, better: bool) -> list[dict[str, Any]]:
    rng = random.Random(p.id * 1000 + number)
    at = _version_time(p, number) + timedelta(minutes=5)
    rows = []
    for i in range(REPLAYED):
        first, second = rng.choice(_VERDICTS[better])
        turns = 1 + i % 2
        rows.append(
            {
                "prompt_id": p.id,
                "candidate_version_id": p.version_ids[number],
                "control_version_id": p.version_ids[control],
                "sample": "failing" if i < FAILING_SHARE else "holdout",
                "segment": SEGMENTS[i % len(SEGMENTS)] if i < FAILING_SHARE else None,
                "candidate_answer": json.dumps(
                    [rng.choice(_ANSWERS) for _ in range(turns)], ensure_ascii=False
                ),
                "control_answer": json.dumps([rng.choice(_ANSWERS) for _ in range(turns)]),
                "verdict_candidate_first": first,
                "verdict_control_first": second,
                "reason_candidate_first": rng.choice(_REASONS),
                "reason_control_first": rng.choice(_REASONS),
                "score": pair_score(first, second),
                "input_tokens": 2_000 + 37 * i,
                "output_tokens": 300 + 11 * i,
                "cost_usd": round(0.011 + 0.0007 * i, 6),
                "created_at": at + timedelta(seconds=20 * i),
            }
        )
    return rows


def _evaluations(conn: Connection, world: list[_Prompt]) -> None:
    rows: list[dict[str, Any]] = []
    reasons = []
    for p in world:
        for number, control, better in _replayed(p):
            mine = _evaluation_rows(p, number, control, better)
            rows += mine
            if not better:
                failing = win_rate([r["score"] for r in mine if r["sample"] == "failing"])
                holdout = win_rate([r["score"] for r in mine if r["sample"] == "holdout"])
                reasons.append(
                    {
                        "b_id": p.version_ids[number],
                        "b_reason": f"rejected by replay against v{control}: failing "
                        f"{rate_text(failing)} (not above one half); holdout {rate_text(holdout)}",
                    }
                )
    _insert(conn, CandidateEvaluation, rows)
    if reasons:
        table = _table(PromptVersion)
        stmt = update(table).where(table.c.id == bindparam("b_id"))
        conn.execute(stmt.values(status_reason=bindparam("b_reason")), reasons)


# --- insights ----------------------------------------------------------------------------


def _insight_rows(p: _Prompt, now: datetime) -> list[dict[str, Any]]:
    seen = now - timedelta(hours=2 + p.id % 24)
    segment = {"segment": "mobile", "metric": "success", "n": 412, "rate": 0.214, "rest": 0.296}
    return [
        {
            "prompt_id": p.id,
            "kind": "segment",
            "fingerprint": "segment:mobile:success",
            "title": "Mobile users succeed less often (−8.2 pts)",
            "detail": "On mobile, 21.4% of conversations succeed against 29.6% elsewhere; "
            "answers there run 40% longer.",
            "evidence": json.dumps(segment),
            "is_actionable": True,
            "effect_size": -0.082,
            "occurrences": 5,
            "first_seen_at": seen - timedelta(days=6),
            "last_seen_at": seen,
        },
        {
            "prompt_id": p.id,
            "kind": "regression",
            "fingerprint": "regression:rating",
            "title": f"Ratings fell after the last version {SCRIPT}",
            "detail": None,
            "evidence": json.dumps({"metric": "rating", "before": 4.31, "after": 4.02}),
            "is_actionable": p.id % 2 == 0,
            "effect_size": None,
            "occurrences": 1,
            "first_seen_at": seen - timedelta(hours=3),
            "last_seen_at": seen - timedelta(hours=3),
        },
        {
            "prompt_id": p.id,
            "kind": "theme",
            "fingerprint": "theme:delivery-times",
            "title": "Customers ask about delivery times (配送) without an order number",
            "detail": "A recurring theme in failed conversations:\n- “where is my parcel”\n"
            "- “¿cuándo llega?”",
            "evidence": json.dumps({"examples": ["where is my parcel", "¿cuándo llega?"]}),
            "is_actionable": False,
            "effect_size": None,
            "occurrences": 12,
            "first_seen_at": seen - timedelta(days=30),
            "last_seen_at": seen - timedelta(minutes=30),
        },
    ]


def _insights(conn: Connection, world: list[_Prompt], now: datetime) -> None:
    """Written before the versions, which record the ids of the insights they answer; the
    version an insight was seen on is filled in after them (`_link_insights`)."""
    ids = iter(_insert(conn, PatternInsight, [r for p in world for r in _insight_rows(p, now)]))
    for p in world:
        p.insight_ids = [next(ids) for _ in range(3)]


def _link_insights(conn: Connection, world: list[_Prompt]) -> None:
    """Seen on the active version, except the theme, which keeps none."""
    table = _table(PatternInsight)
    rows = [
        {"b_id": insight_id, "b_version": p.version_ids[p.active]}
        for p in world
        for insight_id in p.insight_ids[:2]
    ]
    stmt = update(table).where(table.c.id == bindparam("b_id"))
    conn.execute(stmt.values(version_id=bindparam("b_version")), rows)


# --- simulated checks --------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    """How one arm's conversations turn out."""

    success: float
    rating: float
    cost_usd: float
    latency_ms: float


CONTROL = _Profile(0.30, 4.1, 0.012, 1200.0)
BETTER = _Profile(0.325, 4.15, 0.0125, 1230.0)
WORSE = _Profile(0.25, 3.9, 0.012, 1300.0)


class _Visit(NamedTuple):
    """One unit's conversations (one, or two for a returning user), as they are logged:
    cost and latency before any cap, a rating only where the user gave one. (A tuple:
    the large seed makes 80,000 of them.)"""

    at: datetime  # the first conversation; a second comes halfway to the next check
    until: datetime  # the check that counts them
    segment: str
    success: tuple[bool, ...]
    rating: tuple[int | None, ...]
    cost_usd: tuple[float, ...]
    latency_ms: tuple[float, ...]
    routed: bool  # in a stopped arm's slice, so served control


def _draw(rng: random.Random, p: _Profile, at: datetime, until: datetime) -> _Visit:
    k = 2 if rng.random() < 0.25 else 1  # a quarter of the users come back
    success = tuple(rng.random() < p.success for _ in range(k))
    segment = rng.choices(SEGMENTS, SEGMENT_WEIGHTS)[0]
    stars = [min(5, max(1, round(rng.gauss(p.rating, 0.9)))) for _ in range(k)]
    rating = tuple(s if rng.random() < 0.35 else None for s in stars)
    cost = tuple(rng.lognormvariate(0, 0.5) * p.cost_usd for _ in range(k))
    latency = tuple(rng.lognormvariate(0, 0.4) * p.latency_ms for _ in range(k))
    return _Visit(at, until, segment, success, rating, cost, latency, routed=False)


class _Arm:
    """One arm's unit sums as they grow: per metric [units, y, m, yy, mm, ym]; and every
    unit's conversations (`visits`), which the seed stores as ingest would."""

    def __init__(
        self,
        arm_id: int,
        version_id: int,
        version: int,
        is_control: bool,
        profile: _Profile,
        *,
        logged: bool,
    ) -> None:
        self.arm_id, self.version_id, self.version = arm_id, version_id, version
        self.is_control, self.profile, self.active = is_control, profile, True
        self.units = self.conversations = 0
        self.sums = {name: [0.0] * 6 for name in NAMES}
        self.strata = {segment: [0.0] * 6 for segment in SEGMENTS}
        self.logged = logged  # keeps its `visits` (see the module's docstring)
        self.visits: list[_Visit] = []
        # The control traffic of units routed away from this arm once stopped: drawn from
        # a stream of its own, so the stop leaves every check's figures as they were.
        self._routed = random.Random(-arm_id)

    def add_units(self, rng: random.Random, n: int, since: datetime, until: datetime) -> None:
        """`n` new units in the slice, first seen evenly over [since, until). A stopped
        arm's units are served control: they count for its slice's units (the
        sample-ratio test) but not in its metrics or conversations."""
        self.units += n
        for j in range(n):
            at = since + (until - since) * (j + 0.5) / n
            if self.active:
                visit = self._unit(_draw(rng, self.profile, at, until))
            elif self.logged:
                visit = _draw(self._routed, CONTROL, at, until)._replace(routed=True)
            else:
                continue
            if self.logged:
                self.visits.append(visit)

    def _unit(self, visit: _Visit) -> _Visit:
        """Adds the unit's conversations to the sums, capped as the check caps them."""
        k = len(visit.success)
        self.conversations += k
        wins = sum(visit.success)
        _add(self.sums["success"], wins, k)
        _add(self.strata[visit.segment], wins, k)
        rated = [r for r in visit.rating if r is not None]
        if rated:
            _add(self.sums["rating"], sum(rated), len(rated))
        cost = sum(min(c, CAPS["cost_usd"]) for c in visit.cost_usd)
        _add(self.sums["cost_usd"], cost, k)
        wait = sum(min(w, CAPS["latency_ms"]) for w in visit.latency_ms)
        _add(self.sums["latency_ms"], wait, k)
        return visit

    def data(self) -> ArmData:
        return ArmData(
            arm_id=self.arm_id,
            version=self.version,
            is_control=self.is_control,
            weight=1.0,
            active=self.active,
            units=self.units,
            conversations=self.conversations,
            metrics={name: _ratio(s) for name, s in self.sums.items()},
            strata={segment: _ratio(s) for segment, s in self.strata.items()},
        )


def _add(sums: list[float], y: float, m: int) -> None:
    for i, value in enumerate((1, y, m, y * y, m * m, y * m)):
        sums[i] += value


def _ratio(s: list[float]) -> RatioSums:
    return RatioSums(int(s[0]), s[1], s[2], s[3], s[4], s[5])


@dataclass(frozen=True)
class _Check:
    checked_at: datetime
    decision: str
    reason: str
    statistics: str
    srm_detected: bool


def _statistics(arms: Sequence[_Arm]) -> tuple[Analysis, str]:
    data = [arm.data() for arm in arms]
    analysis = analyze(data, SETTINGS, CAPS)
    stored = analysis.to_dict(caps=CAPS, sums=monitor_sums(data))
    return analysis, json.dumps(stored, allow_nan=False)


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:+.1f}%"


def _describe(c: Comparison, arms: Sequence[_Arm]) -> str:
    version = next(a.version for a in arms if a.arm_id == c.arm_id)
    control = next(a.version for a in arms if a.is_control)
    if c.error is not None or c.relative is None:
        return f"v{version} vs control v{control}: not estimable yet ({c.error})"
    return (
        f"v{version} {c.metric} {c.mean_arm:.1%} vs control v{control} {c.mean_control:.1%} "
        f"({_pct(c.relative)}, always-valid interval {_pct(c.relative_low)} to "
        f"{_pct(c.relative_high)})"
    )


def _running_checks(
    arms: Sequence[_Arm], checks: int, started: datetime, rng: random.Random
) -> list[_Check]:
    """`checks` checks 15 minutes apart; the worse arm (the last) is stopped at the check
    three quarters of the way through."""
    per_check = max(40, 6000 // max(checks, 1))
    stop_at = (3 * checks + 3) // 4 if checks >= 2 else 0
    out = []
    for k in range(1, checks + 1):
        at = started + k * CHECK_EVERY
        for arm in arms:
            n = per_check + rng.randint(-per_check // 10, per_check // 10)
            arm.add_units(rng, n, at - CHECK_EVERY, at)
        analysis, stored = _statistics(arms)
        hours = (at - started).total_seconds() / 3600
        said = "; ".join(_describe(c, arms) for c in analysis.comparisons)
        if k == stop_at:
            worse = next(c for c in analysis.comparisons if c.arm_id == arms[-1].arm_id)
            decision, reason = (
                "stop_arms",
                (
                    f"Stop v{arms[-1].version} (worse than control on success: "
                    f"{_describe(worse, arms)}), {hours:.1f} h in; its traffic returns to "
                    f"control v{arms[0].version}."
                ),
            )
            arms[-1].active = False
        else:
            wait = f"{hours:.1f} h of the minimum 24 h; " if hours < MIN_RUNTIME_HOURS else ""
            decision, reason = "continue", f"Continue: {wait}{said}."
        out.append(_Check(at, decision, reason, stored, bool(analysis.srm.detected)))
    return out


def _one_check(
    arms: Sequence[_Arm], units: Sequence[int], started: datetime, at: datetime
) -> tuple[Analysis, str]:
    """A check at `at` of an experiment seen once: `units` new units per arm since it
    started, then the analysis."""
    rng = random.Random(arms[0].arm_id)
    for arm, n in zip(arms, units, strict=True):
        arm.add_units(rng, n, started, at)
    return _statistics(arms)


# --- experiments -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    row: dict[str, Any]
    versions: tuple[int, ...]  # version numbers, control first


@dataclass
class _Running:
    id: int
    prompt: str
    arms: list[_Arm]
    checks: list[_Check]


def _experiment_row(p: _Prompt, status: str, started: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "prompt_id": p.id,
        "status": status,
        "primary_metric": "success",
        "guardrails": guardrails_to_json(DEFAULT_GUARDRAILS),
        "confidence": SETTINGS.confidence,
        "min_conversations_per_arm": 100,
        "min_runtime_hours": MIN_RUNTIME_HOURS,
        "max_runtime_hours": 336.0,
        "winner_version_id": None,
        "decision_reason": None,
        "metric_caps": None,
        "created_by": "admin",
        "started_at": started,
        "ended_at": None,
        **extra,
    }


def _finished(world: list[_Prompt], now: datetime, count: int) -> list[_Planned]:
    """Oldest first, round the prompts from the last one. Each tested a version against the
    one before it (both long retired) and ended one of three ways."""
    planned = []
    tested: dict[int, int] = {}
    for j in range(count):
        p = world[len(world) - 1 - j % len(world)]
        k = tested[p.id] = tested.get(p.id, -1) + 1
        control = 1 + k % (p.active - 1)
        started = now - timedelta(days=3) - (count - j) * timedelta(hours=8)
        way = j % 3
        reason = (
            f"Promote v{control + 1} over v{control}: success +{3 + j % 4}.{j % 10}% "
            "(always-valid 90% interval above zero); guardrails within tolerance.",
            f"stopped by admin: wrong audience — «campagne» over; control version {control} "
            "stays active",
            f"Maximum runtime 336 h reached without a winner; control version {control} "
            "stays active.",
        )[way]
        row = _experiment_row(
            p,
            "stopped" if way == 1 else "completed",
            started,
            ended_at=started + timedelta(hours=30 + j % 7),
            winner_version_id=p.version_ids[control + 1] if way == 0 else None,
            decision_reason=reason,
        )
        planned.append(_Planned(row, (control, control + 1)))
    return planned


def _live(world: list[_Prompt], now: datetime, checks: int) -> list[_Planned]:
    """The paused experiment (if any), then the running one: both test every version newer
    than the active one."""
    planned = []
    for p in world:
        tested = tuple(range(p.active, p.versions + 1))
        if p.live == "paused":
            reason = (
                "Sample ratio mismatch: the arms' traffic does not match their weights. "
                "Paused; everyone gets the active version meanwhile."
            )
            row = _experiment_row(
                p,
                "paused",
                now - timedelta(hours=30),
                decision_reason=reason,
                metric_caps=json.dumps(CAPS),
            )
            planned.append(_Planned(row, tested))
    running = world[0]
    started = now - timedelta(minutes=5) - checks * CHECK_EVERY
    row = _experiment_row(running, "running", started, metric_caps=json.dumps(CAPS))
    planned.append(_Planned(row, tuple(range(running.active, running.versions + 1))))
    return planned


def _experiments(
    conn: Connection,
    world: list[_Prompt],
    now: datetime,
    count: int,
    checks: int,
    rng: random.Random,
) -> tuple[_Running, list[int]]:
    """Finished ones first (oldest), then the paused one, then the running one (newest).
    Also the ids of those given conversations: the live ones with a check."""
    live = _live(world, now, checks)
    planned = _finished(world, now, count - len(live)) + live
    ids = _insert(conn, Experiment, [p.row for p in planned])
    arms = _write_arms(conn, world, ids, planned)
    finished = [(i, p.row) for i, p in zip(ids, planned, strict=True) if p.row["ended_at"]]
    stored = [(i, _finished_check(arms[i], row)) for i, row in finished[-FINISHED_WITH_CHECK:]]
    if len(live) == 2:
        at = now - timedelta(hours=3)
        stored.append((ids[-2], _paused_check(arms[ids[-2]], live[0].row["started_at"], at)))
    _insert(conn, ExperimentAnalysis, [_analysis_row(i, c, None) for i, c in stored])
    running = _Running(ids[-1], world[0].name, arms[ids[-1]], [])
    running.checks = _running_checks(running.arms, checks, live[-1].row["started_at"], rng)
    if any(c.decision == "stop_arms" for c in running.checks):
        _stop_arm(conn, world[0], running)
    logged = [(i, p.row["prompt_id"], arms[i]) for i, p in zip(ids, planned, strict=True)]
    logged = [(i, prompt_id, a) for i, prompt_id, a in logged if any(arm.visits for arm in a)]
    _insert_conversations(conn, logged)
    return running, [i for i, _, _ in logged]


def _write_arms(
    conn: Connection, world: list[_Prompt], ids: list[int], planned: list[_Planned]
) -> dict[int, list[_Arm]]:
    by_prompt = {p.id: p for p in world}
    rows = [
        {
            "experiment_id": experiment_id,
            "version_id": by_prompt[plan.row["prompt_id"]].version_ids[number],
            "is_control": i == 0,
            "weight": 1.0,
            "status": "active",
        }
        for experiment_id, plan in zip(ids, planned, strict=True)
        for i, number in enumerate(plan.versions)
    ]
    arm_ids = iter(_insert(conn, ExperimentArm, rows))
    profiles = (CONTROL, BETTER, WORSE)
    return {
        experiment_id: [
            _Arm(
                next(arm_ids),
                by_prompt[plan.row["prompt_id"]].version_ids[number],
                number,
                i == 0,
                profiles[i],
                logged=plan.row["ended_at"] is None,
            )
            for i, number in enumerate(plan.versions)
        ]
        for experiment_id, plan in zip(ids, planned, strict=True)
    }


def _finished_check(arms: list[_Arm], row: dict[str, Any]) -> _Check:
    """The last check before the end: promote, inconclusive, or (stopped by hand) continue."""
    promoted = row["winner_version_id"] is not None
    arms[1].profile = _Profile(0.345, 4.2, 0.012, 1190.0) if promoted else CONTROL
    stopped = row["status"] == "stopped"
    decision = "promote" if promoted else "continue" if stopped else "inconclusive"
    reason = "Continue: no winner yet." if stopped else row["decision_reason"]
    at = row["ended_at"] - (timedelta(minutes=20) if stopped else timedelta(0))
    analysis, stored = _one_check(arms, [UNITS_PER_FINISHED_ARM] * len(arms), row["started_at"], at)
    return _Check(at, decision, reason, stored, bool(analysis.srm.detected))


def _paused_check(arms: list[_Arm], started: datetime, at: datetime) -> _Check:
    """Control's slice got far more units than its weight gives it: SRM, paused."""
    analysis, stored = _one_check(arms, [2600] + [2000] * (len(arms) - 1), started, at)
    counts = ", ".join(f"v{a.version}: {a.units}" for a in arms)
    share = f"{100 / len(arms):.1f}%"
    reason = (
        f"Sample ratio mismatch after {(at - started).total_seconds() / 3600:.1f} h: units "
        f"{counts} against configured shares {', '.join([share] * len(arms))}; results "
        "cannot be trusted until the assignment is fixed."
    )
    return _Check(at, "pause_srm", reason, stored, bool(analysis.srm.detected))


def _stop_arm(conn: Connection, prompt: _Prompt, running: _Running) -> None:
    """The worse arm, stopped at its check, and its version rejected (as `stop_arms` does)."""
    check = next(c for c in running.checks if c.decision == "stop_arms")
    arm = running.arms[-1]
    arms, versions = _table(ExperimentArm), _table(PromptVersion)
    conn.execute(
        update(arms)
        .where(arms.c.id == arm.arm_id)
        .values(status="stopped", stopped_reason=check.reason, stopped_at=check.checked_at)
    )
    conn.execute(
        update(versions)
        .where(versions.c.id == prompt.version_ids[arm.version])
        .values(status="rejected")
    )


# --- conversations -----------------------------------------------------------------------


def _unit_ids(experiment_id: int, arms: Sequence[_Arm]) -> dict[int, list[str]]:
    """Per arm, as many unit ids as its slice has units: ids that the assignment (pick_arm
    over every arm, as resolve and ingest compute it) puts in that slice."""
    slices = [(a.arm_id, 1.0) for a in arms]
    missing = {a.arm_id: len(a.visits) for a in arms}
    found: dict[int, list[str]] = {a.arm_id: [] for a in arms}
    n = 0
    while any(missing.values()):
        unit = f"{UNIT_PREFIXES[n % len(UNIT_PREFIXES)]}{n}"
        arm = pick_arm(experiment_id, unit, slices)
        if missing[arm]:
            found[arm].append(unit)
            missing[arm] -= 1
        n += 1
    return found


def _conversation_rows(
    experiment_id: int, prompt_id: int, arms: Sequence[_Arm]
) -> list[dict[str, Any]]:
    """The experiment's conversations as ingest stores them: the arm served (control for a
    stopped arm's routed units) and its version, the unit's slice in assigned_arm_id."""
    control = next(a for a in arms if a.is_control)
    units = _unit_ids(experiment_id, arms)
    rows: list[dict[str, Any]] = []
    for arm in arms:
        for unit, visit in zip(units[arm.arm_id], arm.visits, strict=True):
            # A stopped arm's units, served control since: get_experiment counts these
            # conversations as control's (what it served) and the units in the stopped
            # arm's slice, as the check does (its own metrics leave them out).
            served = control if visit.routed else arm
            for i, success in enumerate(visit.success):
                at = visit.at if i == 0 else visit.at + (visit.until - visit.at) / 2
                rows.append(
                    {
                        "prompt_id": prompt_id,
                        "version_id": served.version_id,
                        "experiment_id": experiment_id,
                        "arm_id": served.arm_id,
                        "assigned_arm_id": arm.arm_id,
                        "unit_id": unit,
                        "success": success,
                        "rating": visit.rating[i],
                        "cost_usd": visit.cost_usd[i],
                        "latency_ms": visit.latency_ms[i],
                        "segment": visit.segment,
                        "occurred_at": at,
                        "ingested_at": at + INGEST_DELAY,
                    }
                )
    rows.sort(key=lambda row: row["occurred_at"])  # stored in the order they came
    return rows


def _insert_conversations(
    conn: Connection, experiments: Sequence[tuple[int, int, Sequence[_Arm]]]
) -> None:
    """The conversations of (experiment id, prompt id, arms), in one executemany."""
    rows = [r for i, prompt_id, arms in experiments for r in _conversation_rows(i, prompt_id, arms)]
    if rows:
        conn.execute(insert(_table(Conversation)), rows)


def _roll_up(engine: Engine, experiment_ids: Sequence[int]) -> None:
    """Each check rolls its experiment's new conversations up (optimizer.experiments.rollup),
    so after the last one the rollup holds them all; the rollup itself does it here. After
    the rows are committed: on PostgreSQL a pass reads only finished transactions' rows."""
    if not experiment_ids:
        return
    with session_factory(engine).begin() as session:
        for experiment_id in experiment_ids:
            roll_up(session, experiment_id, CAPS)


def _analysis_row(experiment_id: int, check: _Check, job_id: int | None) -> dict[str, Any]:
    return {
        "experiment_id": experiment_id,
        "job_id": job_id,
        "decision": check.decision,
        "reason": check.reason,
        "srm_detected": check.srm_detected,
        "statistics": check.statistics,
        "checked_at": check.checked_at,
    }


def _store_checks(conn: Connection, running: _Running, job_ids: Sequence[int]) -> None:
    """The running experiment's checks, each with the monitoring job that ran it (when the
    seed has jobs), whose result then names it as the job's handler returns it."""
    jobs: Sequence[int | None] = job_ids or [None] * len(running.checks)
    ids = _insert(
        conn,
        ExperimentAnalysis,
        [_analysis_row(running.id, c, j) for c, j in zip(running.checks, jobs, strict=True)],
    )
    if not job_ids:
        return
    table = _table(OptimizationJob)
    rows = [
        {"b_id": job_id, "b_result": json.dumps(_monitoring_result(running, check, analysis_id))}
        for job_id, check, analysis_id in zip(job_ids, running.checks, ids, strict=True)
    ]
    conn.execute(
        update(table).where(table.c.id == bindparam("b_id")).values(result=bindparam("b_result")),
        rows,
    )


def _monitoring_result(running: _Running, check: _Check, analysis_id: int) -> dict[str, Any]:
    stopped = [running.arms[-1].version] if check.decision == "stop_arms" else []
    outcome = {
        "experiment_id": running.id,
        "prompt": running.prompt,
        "decision": check.decision,
        "reason": check.reason,
        "status": "running",
        "winner_version": None,
        "stopped_versions": stopped,
        "srm_detected": check.srm_detected,
        "analysis_id": analysis_id,
    }
    return {
        "experiments_checked": 1,
        "decisions": [outcome],
        "errors": [],
        "message": f"checked 1 experiment(s): 1 {check.decision}",
    }


# --- jobs --------------------------------------------------------------------------------

LONG_ERROR = "\n".join(
    [
        "variant generation failed after 3 attempts: the model's answer was not valid JSON "
        "(expected a list of 3 variants, got text starting with “Here are your variants:”)",
        "Traceback (most recent call last):",
        '  File "/app/optimizer/jobs/variant_generation.py", line 212, in generate',
        "    variants = parse_variants(answer.text, expected=payload.n)",
        '  File "/app/optimizer/variants/parse.py", line 88, in parse_variants',
        '    raise InvalidAnswer(f"not JSON: {excerpt!r}")',
        f"optimizer.variants.parse.InvalidAnswer: not JSON: 'Here are your variants: {SCRIPT}'",
        "",
        "The answer, first 1,500 characters:",
        *(
            f"  {k:>3} | Variant {k}: «Bonjour» — keep it short ☕; lesson {k} applies to "
            "mobile users first, then everyone else."
            for k in range(1, 16)
        ),
    ]
)


def _job(kind: str, status: str, created: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "priority": 0,
        "payload": json.dumps({"scope": "all"}),
        "result": None,
        "error": None,
        "attempts": 1 if status != "pending" else 0,
        "max_attempts": 3,
        "dedupe_key": None,
        "run_after": created,
        "locked_by": None,
        "lease_expires_at": None,
        "cancel_requested": False,
        "progress": 100 if status == "completed" else 0,
        "current_step": None,
        "created_at": created,
        "started_at": None if status == "pending" else created + timedelta(seconds=1),
        "finished_at": None,
        **extra,
    }


def _jobs(conn: Connection, world: list[_Prompt], now: datetime, running: _Running | None) -> _Jobs:
    """Oldest first: a completed monitoring job per check, a done pattern analysis, a
    failed variant generation, a running pattern analysis (a lease far in the future, so
    no reaper takes it), and a variant generation pending until tomorrow."""
    checks = running.checks if running is not None else []
    rows = [
        _job(
            "experiment_monitoring",
            "completed",
            c.checked_at - timedelta(seconds=2),
            dedupe_key=f"experiment_monitoring:all:{c.checked_at.isoformat(timespec='seconds')}",
            current_step="checked 1 of 1 experiments",
            finished_at=c.checked_at + timedelta(seconds=1),
        )
        for c in checks
    ]
    target = world[-1].name
    rows += [
        _job(
            "pattern_analysis",
            "completed",
            now - timedelta(hours=1),
            result=json.dumps({"insights": 3, "message": "3 insights (1 new) for 3 prompts"}),
            current_step="done",
            finished_at=now - timedelta(minutes=58),
        ),
        _job(
            "variant_generation",
            "failed",
            now - timedelta(minutes=50),
            payload=json.dumps({"prompt": target, "n": 3}),
            error=LONG_ERROR,
            attempts=3,
            progress=60,
            current_step="asking the model for 3 variants",
            finished_at=now - timedelta(minutes=41),
        ),
        _job(
            "pattern_analysis",
            "running",
            now - timedelta(minutes=5),
            payload=json.dumps({"prompt": world[0].name}),
            locked_by=WORKER,
            lease_expires_at=now + timedelta(days=3650),
            progress=40,
            current_step="scanning conversations: 4,000 of 10,000",
        ),
        _job(
            "variant_generation",
            "pending",
            now - timedelta(minutes=10),
            payload=json.dumps({"prompt": target, "n": 2, "model": "sonnet"}),
            priority=5,
            run_after=now + timedelta(days=1),
        ),
    ]
    ids = _insert(conn, OptimizationJob, rows)
    return _Jobs(
        pending=ids[-1], running=ids[-2], failed=ids[-3], monitoring=tuple(ids[: len(checks)])
    )
