"""Conversations the host application logs: validation and the all-or-nothing insert.

A record (HTTP body, batch item or JSONL line) holds exactly these fields:

    prompt, version, unit_id            required: prompt name, its version number, the unit
    experiment_id                       optional: the experiment `resolve` reported
    each metric's name                  optional: true/false (a proportion) or a number in
                                        the metric's bounds (see optimizer.stats.metrics)
    input_tokens, output_tokens (whole, 0..bound), segment (<= 200 chars),
    tags (<= 50 strings of <= 100 chars), transcript (<= 100,000 chars),
    occurred_at (ISO 8601, at most FUTURE_TOLERANCE ahead; default now)  optional

A row with an experiment_id also gets `assigned_arm_id`: the arm whose slice holds the unit
(pick_arm over every arm, stopped ones included, exactly as resolve computes it). While the
experiment runs, the row's version must be what resolve serves that unit: its arm's version,
or for a stopped arm's slice the control's version or (logged late) the stopped arm's own.

Every bad row is reported (index, field, problem) and nothing is stored unless every row is
good: the rows go in with one executemany inside one transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.assignment import pick_arm
from optimizer.clock import iso
from optimizer.errors import Conflict, InvalidInput
from optimizer.prompt_text import MAX_NAME_CHARS
from optimizer.stats import REGISTRY, Metric
from optimizer.text_input import kind_of, parse_timestamp, text_problem

FIELDS = (
    "prompt",
    "version",
    "unit_id",
    "experiment_id",
    *(m.name for m in REGISTRY),
    "input_tokens",
    "output_tokens",
    "segment",
    "tags",
    "transcript",
    "occurred_at",
)
MAX_BATCH = 1000
MAX_UNIT_ID = 200
MAX_SEGMENT = 200
MAX_TAGS, MAX_TAG = 50, 100
MAX_TRANSCRIPT = 100_000
MAX_INT32 = 2**31 - 1
MAX_ID = 2**63 - 1
MAX_KEPT_ERRORS = 100  # reported in full; the rest are counted, so memory stays bounded

# The metrics' bounds are in the registry (optimizer.stats.metrics), and the checks treat
# stored values outside them as missing: a larger value is a unit mistake or a broken
# client, and one such row would swamp every sum a check takes.
MAX_TOKENS = 10_000_000
# How far past the server's clock occurred_at may be: clocks drift a little; a time further
# ahead is a wrong clock or time zone. Far in the past is fine (imports of history).
FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class RowError:
    index: int  # position in the batch (HTTP) or line number (CLI import)
    field: str | None
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "problem": self.problem}


class RowsInvalid(InvalidInput):
    """Some rows are bad; `errors` lists (at most MAX_KEPT_ERRORS of) them."""

    def __init__(
        self, errors: Sequence[RowError], *, bad_rows: int, total_rows: int, omitted: int
    ) -> None:
        shown = f"; the first {len(errors)} problems are listed" if omitted else ""
        super().__init__(
            f"{bad_rows} of {total_rows} conversations are invalid; nothing was stored{shown}"
        )
        self.errors = tuple(errors)
        self.omitted = omitted


class _Bad(Exception):
    """One field's problem, worded to follow "<field>: "."""


# --- field checks ------------------------------------------------------------------------


def _text(value: Any, max_len: int, *, allow_blank: bool = False) -> str:
    problem = text_problem(value, max_len, allow_blank=allow_blank)
    if problem is not None:
        raise _Bad(problem)
    return str(value)


def _whole(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = (
            kind_of(value)
            if not isinstance(value, int) or isinstance(value, bool)
            else _number(value)
        )
        raise _Bad(f"must be {what}; got {shown}")
    return value


def _amount(low: float, high: float, shown_high: str) -> Callable[[Any], float]:
    rule = f"must be a finite number from {low:g} to {shown_high}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"{rule}; got {kind_of(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not low <= number <= high:  # NaN fails this too
            raise _Bad(f"{rule}; got {_number(value)}")
        return number + 0.0  # -0.0 is stored as 0.0

    return check


def _number(value: int | float) -> str:
    """A number as an error shows it. A huge integer by its size: str() of an integer past
    Python's digit limit raises, and nobody wants 400 digits echoed back."""
    if isinstance(value, int) and value.bit_length() > 99:
        return f"a whole number of about {int(value.bit_length() * math.log10(2))} digits"
    return str(value)[:30]


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false; got {kind_of(value)}")
    return value


def _tags(value: Any) -> str:
    if not isinstance(value, list):
        raise _Bad(f"must be a list of strings; got {kind_of(value)}")
    if len(value) > MAX_TAGS:
        raise _Bad(f"must hold at most {MAX_TAGS} tags; got {len(value)}")
    for position, tag in enumerate(value):
        try:
            _text(tag, MAX_TAG)
        except _Bad as exc:
            raise _Bad(f"tag {position} {exc}") from None
    return json.dumps(value)


def _occurred_at(value: Any, now: datetime) -> datetime:
    try:
        when = parse_timestamp(value, "occurred_at")
    except InvalidInput:
        raise _Bad(
            f"must be an ISO 8601 date-time such as 2026-11-22T09:00:00Z; got {str(value)[:60]!r}"
        ) from None
    if when > now + FUTURE_TOLERANCE:
        minutes = FUTURE_TOLERANCE.total_seconds() / 60
        raise _Bad(
            f"is {iso(when)}, more than {minutes:g} minutes after the server's time "
            f"{iso(now)}; send when the conversation happened, in UTC or with its "
            "offset"
        )
    return when


def _metric_check(m: Metric) -> Callable[[Any], Any]:
    """What a record may hold for the metric: true/false for a proportion, else a number
    within its bounds (a whole one where the metric says so)."""
    if m.kind == "proportion":
        return _bool
    low, high = m.bounds
    if m.whole:
        what = f"{low:g}..{high:g} (a whole number)"
        return lambda v: _whole(v, int(low), int(high), what)
    shown_high = f"{high:,.0f}" if high.is_integer() else f"{high:,}"
    return _amount(low, high, f"{shown_high} {m.bound_note}".rstrip())


# Optional fields: field name -> check. None (or absent) stores NULL.
_OPTIONAL: dict[str, Callable[[Any], Any]] = {
    **{m.name: _metric_check(m) for m in REGISTRY},
    "input_tokens": lambda v: _whole(v, 0, MAX_TOKENS, f"a whole number from 0 to {MAX_TOKENS:,}"),
    "output_tokens": lambda v: _whole(v, 0, MAX_TOKENS, f"a whole number from 0 to {MAX_TOKENS:,}"),
    "segment": lambda v: _text(v, MAX_SEGMENT),
    "tags": _tags,
    "transcript": lambda v: _text(v, MAX_TRANSCRIPT, allow_blank=True),
}
# Metrics whose record field and column are named differently (none so far).
_RENAMED = {m.name: m.column for m in REGISTRY if m.name != m.column}
_REQUIRED: dict[str, Callable[[Any], Any]] = {
    "prompt": lambda v: _text(v, MAX_NAME_CHARS),
    "version": lambda v: _whole(
        v, 1, MAX_INT32, "the prompt's version number (a whole number >= 1)"
    ),
    "unit_id": lambda v: _text(v, MAX_UNIT_ID),
}


@dataclass
class Draft:
    """A record whose fields are all valid; its names still need looking up."""

    index: int
    prompt: str
    version: int
    experiment_id: int | None
    values: dict[str, Any] = field(default_factory=dict)


def check_record(raw: Any, index: int, now: datetime) -> tuple[Draft | None, list[RowError]]:
    """Field-level checks that need no database."""
    if not isinstance(raw, dict):
        return None, [RowError(index, None, f"must be a JSON object; got {kind_of(raw)}")]
    errors = [
        RowError(index, name, f"unknown field; allowed: {', '.join(FIELDS)}")
        for name in raw
        if name not in FIELDS
    ]
    found: dict[str, Any] = {}
    for name, check in (
        *_REQUIRED.items(),
        *_OPTIONAL.items(),
        ("experiment_id", lambda v: _whole(v, 1, MAX_ID, "a positive id")),
        ("occurred_at", lambda v: _occurred_at(v, now)),
    ):
        value = raw.get(name)
        if value is None:
            if name in _REQUIRED:
                errors.append(RowError(index, name, "is required"))
            found[name] = now if name == "occurred_at" else None
            continue
        try:
            found[name] = check(value)
        except _Bad as exc:
            errors.append(RowError(index, name, str(exc)))
    if errors:
        return None, errors
    for name, column in _RENAMED.items():
        found[column] = found.pop(name)
    required = {name: found.pop(name) for name in ("prompt", "version")}
    return Draft(
        index, required["prompt"], required["version"], found.pop("experiment_id"), found
    ), []


# --- references --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmRef:
    id: int
    version_id: int
    version: int  # the version's number, for messages
    is_control: bool
    weight: float
    active: bool


@dataclass
class ExperimentRef:
    prompt_id: int
    running: bool
    by_version: dict[int, ArmRef] = field(default_factory=dict)  # version_id -> arm
    by_id: dict[int, ArmRef] = field(default_factory=dict)
    slices: list[tuple[int, float]] = field(default_factory=list)  # (arm id, weight), all arms

    def add(self, arm: ArmRef) -> None:
        self.by_version[arm.version_id] = self.by_id[arm.id] = arm
        self.slices.append((arm.id, arm.weight))

    def control(self) -> ArmRef | None:
        return next((arm for arm in self.by_id.values() if arm.is_control), None)


class References:
    """Prompt names, version numbers and experiments looked up in bulk and remembered,
    so a large import asks the database once per distinct name, not once per row."""

    def __init__(self) -> None:
        self.prompts: dict[str, int | None] = {}
        self.versions: dict[tuple[int, int], int | None] = {}
        self.experiments: dict[int, ExperimentRef | None] = {}

    def load(self, conn: Connection, drafts: Sequence[Draft]) -> None:
        names = {d.prompt for d in drafts} - self.prompts.keys()
        if names:
            found = {
                name: pid
                for name, pid in conn.execute(
                    select(Prompt.name, Prompt.id).where(Prompt.name.in_(sorted(names)))
                )
            }
            self.prompts.update({name: found.get(name) for name in names})
        pairs = {
            (pid, d.version) for d in drafts if (pid := self.prompts[d.prompt]) is not None
        } - self.versions.keys()
        if pairs:
            rows = conn.execute(
                select(PromptVersion.prompt_id, PromptVersion.version, PromptVersion.id).where(
                    tuple_(PromptVersion.prompt_id, PromptVersion.version).in_(sorted(pairs))
                )
            )
            found_v = {(p, v): vid for p, v, vid in rows}
            self.versions.update({pair: found_v.get(pair) for pair in pairs})
        ids = {d.experiment_id for d in drafts if d.experiment_id is not None}
        ids -= self.experiments.keys()
        if ids:
            self.experiments.update(_load_experiments(conn, ids))

    def row_for(self, draft: Draft) -> tuple[dict[str, Any] | None, list[RowError]]:
        prompt_id = self.prompts.get(draft.prompt)
        if prompt_id is None:
            return None, [RowError(draft.index, "prompt", f"no prompt named {draft.prompt!r}")]
        version_id = self.versions.get((prompt_id, draft.version))
        if version_id is None:
            return None, [
                RowError(
                    draft.index,
                    "version",
                    f"prompt {draft.prompt!r} has no version {draft.version}",
                )
            ]
        arm_id = assigned_arm_id = None
        if draft.experiment_id is not None:
            experiment = self.experiments.get(draft.experiment_id)
            problem = _experiment_problem(draft, experiment, prompt_id, version_id)
            if problem or experiment is None:
                return None, [RowError(draft.index, "experiment_id", problem)]
            served = experiment.by_version[version_id]
            assigned = experiment.by_id[
                pick_arm(draft.experiment_id, draft.values["unit_id"], experiment.slices)
            ]
            if experiment.running and not _may_serve(assigned, served):
                return None, [
                    RowError(draft.index, "version", _wrong_arm(draft, experiment, assigned))
                ]
            arm_id, assigned_arm_id = served.id, assigned.id
        return {
            **draft.values,
            "prompt_id": prompt_id,
            "version_id": version_id,
            "experiment_id": draft.experiment_id,
            "arm_id": arm_id,
            "assigned_arm_id": assigned_arm_id,
        }, []


def _load_experiments(conn: Connection, ids: set[int]) -> dict[int, ExperimentRef | None]:
    """The experiments with every arm, in one statement (so one snapshot on PostgreSQL)."""
    found: dict[int, ExperimentRef] = {}
    rows = conn.execute(
        select(
            Experiment.id,
            Experiment.prompt_id,
            Experiment.status,
            ExperimentArm.id.label("arm_id"),
            ExperimentArm.version_id,
            PromptVersion.version,
            ExperimentArm.is_control,
            ExperimentArm.weight,
            ExperimentArm.status.label("arm_status"),
        )
        .outerjoin(ExperimentArm, ExperimentArm.experiment_id == Experiment.id)
        .outerjoin(PromptVersion, PromptVersion.id == ExperimentArm.version_id)
        .where(Experiment.id.in_(sorted(ids)))
    )
    for row in rows:
        experiment = found.setdefault(row.id, ExperimentRef(row.prompt_id, row.status == "running"))
        if row.arm_id is not None and row.version is not None:
            experiment.add(
                ArmRef(
                    row.arm_id,
                    row.version_id,
                    row.version,
                    bool(row.is_control),
                    float(row.weight),
                    row.arm_status == "active",
                )
            )
    return {eid: found.get(eid) for eid in ids}


def _experiment_problem(
    draft: Draft, experiment: ExperimentRef | None, prompt_id: int, version_id: int
) -> str:
    if experiment is None:
        return f"experiment {draft.experiment_id} does not exist"
    if experiment.prompt_id != prompt_id:
        return f"experiment {draft.experiment_id} tests another prompt, not {draft.prompt!r}"
    if version_id not in experiment.by_version:
        return (
            f"version {draft.version} is not an arm of experiment {draft.experiment_id}; "
            "send the version and experiment_id that resolve returned"
        )
    return ""


def _may_serve(assigned: ArmRef, served: ArmRef) -> bool:
    """What resolve serves the unit: its arm's version; once that arm stopped, control's. A
    stopped arm's own version is still accepted: logged late, from before the stop."""
    return served.id == assigned.id or (not assigned.active and served.is_control)


def _wrong_arm(draft: Draft, experiment: ExperimentRef, assigned: ArmRef) -> str:
    control = experiment.control()
    stopped = ""
    if not assigned.active and control is not None:
        stopped = f", stopped: its units now get the control, version {control.version}"
    return (
        f"unit {draft.values['unit_id']!r} is assigned to version {assigned.version} "
        f"(arm {assigned.id}{stopped}) of experiment {draft.experiment_id}, not version "
        f"{draft.version}; send the version and experiment_id that resolve returned"
    )


# --- the batch ---------------------------------------------------------------------------


class Ingestion:
    """Rows checked and inserted chunk by chunk inside the caller's transaction. Once any
    row is bad, nothing more is inserted; `finish` raises RowsInvalid, and the caller's
    transaction rolls back what earlier chunks wrote."""

    def __init__(self, conn: Connection, now: datetime) -> None:
        self.conn = conn
        self.now = now
        self.refs = References()
        self.errors: list[RowError] = []
        self.omitted = 0
        self.bad_rows = 0
        self.total_rows = 0
        self.accepted = 0

    def add(self, records: Iterable[tuple[int, Any]]) -> None:
        drafts: list[Draft] = []
        for index, raw in records:
            self.total_rows += 1
            draft, errors = check_record(raw, index, self.now)
            self._note(errors)
            if draft is not None:
                drafts.append(draft)
        if not drafts:
            return
        self.refs.load(self.conn, drafts)
        rows = []
        for draft in drafts:
            row, errors = self.refs.row_for(draft)
            self._note(errors)
            if row is not None:
                rows.append(row)
        if rows and not self.bad_rows:
            self._insert(rows)

    def reject(self, index: int, problem: str) -> None:
        """A record that could not even be read (bad JSON on an import line)."""
        self.total_rows += 1
        self._note([RowError(index, None, problem)])

    def finish(self) -> int:
        if self.bad_rows:
            errors = sorted(self.errors, key=lambda error: error.index)
            raise RowsInvalid(
                errors, bad_rows=self.bad_rows, total_rows=self.total_rows, omitted=self.omitted
            )
        return self.accepted

    def _note(self, errors: list[RowError]) -> None:
        if not errors:
            return
        self.bad_rows += 1
        room = MAX_KEPT_ERRORS - len(self.errors)
        self.errors.extend(errors[: max(room, 0)])
        self.omitted += max(len(errors) - max(room, 0), 0)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        try:
            self.conn.execute(insert(Conversation), rows)
        except IntegrityError:
            # A prompt, version or experiment was deleted between the lookup and the insert.
            raise Conflict(
                "a prompt, version or experiment changed while the conversations "
                "were being stored; nothing was stored, send them again"
            ) from None
        self.accepted += len(rows)


def records_of(body: Any) -> list[Any]:
    """One record, or {"conversations": [...]} of 1..MAX_BATCH records."""
    if isinstance(body, dict) and "conversations" in body:
        for name in body:
            if name != "conversations":
                raise InvalidInput(
                    f"unknown field {name!r} beside 'conversations'; send "
                    'either one record or {"conversations": [...]}',
                    field=name,
                )
        batch = body["conversations"]
        if not isinstance(batch, list) or not batch:
            raise InvalidInput(
                f"conversations must be a list of 1 to {MAX_BATCH} records", field="conversations"
            )
        if len(batch) > MAX_BATCH:
            raise InvalidInput(
                f"conversations holds {len(batch)} records; at most "
                f"{MAX_BATCH} per request, split the batch",
                field="conversations",
            )
        return batch
    if not isinstance(body, dict):
        raise InvalidInput(
            f"request body must be a JSON object: one conversation or "
            f'{{"conversations": [...]}}; got {kind_of(body)}'
        )
    return [body]


def ingest(engine: Engine, body: Any, *, now: datetime) -> int:
    """Store every record in `body` or none; returns how many were stored."""
    records = records_of(body)
    with engine.begin() as conn:
        ingestion = Ingestion(conn, now)
        ingestion.add(enumerate(records))
        return ingestion.finish()
