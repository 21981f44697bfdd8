"""Conversations the host application logs: validation and the all-or-nothing insert.

A record (HTTP body, batch item or JSONL line) is an optimizer.ingest_record
ConversationRecord: the one model that checks it and that the OpenAPI document shows. Here
its names are looked up (prompt, version, experiment) and the rows inserted.

A row with an experiment_id also gets `assigned_arm_id`: the arm whose slice holds the unit
(pick_arm over every arm, stopped ones included, exactly as resolve computes it). While the
experiment runs, the row's version must be what resolve serves that unit: its arm's version,
or for a stopped arm's slice the control's version or (logged late) the stopped arm's own.

Every bad row is reported (index, field, problem) and nothing is stored unless every row is
good: the rows go in inside one transaction, with COPY on PostgreSQL (optimizer.copy_insert)
and one executemany elsewhere. A row is built as a tuple in COLUMNS order straight from the
validated record: no ORM object and no dict per row on the way to COPY.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select, tuple_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.conversations import Conversation
from models.experiments import SPLIT_STATUSES, Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer import copy_insert, idempotency
from optimizer.assignment import pick_arm
from optimizer.errors import Conflict, InvalidInput
from optimizer.ingest_record import FIELDS as FIELDS
from optimizer.ingest_record import NOW, ConversationRecord, problems, stored_messages
from optimizer.stats import REGISTRY
from optimizer.text_input import kind_of

MAX_BATCH = 1000
MAX_KEPT_ERRORS = 100  # reported in full; the rest are counted, so memory stays bounded


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


# Metrics whose record field and column are named differently (none so far).
_RENAMED = {m.name: m.column for m in REGISTRY if m.name != m.column}
# The record's fields stored as they are, then those converted on the way (to JSON text;
# occurred_at to its default).
_LOOKED_UP = ("prompt", "version", "experiment_id")
_CONVERTED = ("tags", "messages", "occurred_at")
_PLAIN = tuple(name for name in FIELDS if name not in _LOOKED_UP + _CONVERTED)
_plain_values = attrgetter(*_PLAIN)
# The columns a row fills, in the order of its tuple. Named, never positional: a column added
# later with a server default (or the generated id) is left to the database.
COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "version_id",
    "experiment_id",
    "arm_id",
    "assigned_arm_id",
    *(_RENAMED.get(name, name) for name in _PLAIN),
    *_CONVERTED,
)
_NO_TAGS = json.dumps([])


@dataclass(slots=True)
class Draft:
    """A record whose fields are all valid; its names still need looking up."""

    index: int
    prompt: str
    version: int
    experiment_id: int | None
    unit_id: str
    values: tuple[Any, ...]  # COLUMNS after assigned_arm_id


def check_record(raw: Any, index: int, now: datetime) -> tuple[Draft | None, list[RowError]]:
    """Field-level checks that need no database: the record as ConversationRecord, or every
    bad field's problem."""
    if not isinstance(raw, dict):
        return None, [RowError(index, None, f"must be a JSON object; got {kind_of(raw)}")]
    try:
        record = ConversationRecord.model_validate(raw, context={NOW: now})
    except ValidationError as exc:
        return None, [RowError(index, name, problem) for name, problem in problems(exc).items()]
    fields = record.__dict__
    tags, occurred_at = fields["tags"], fields["occurred_at"]
    if tags is not None:
        tags = json.dumps(tags) if tags else _NO_TAGS
    values = (
        *_plain_values(record),
        tags,
        stored_messages(fields["messages"]),
        now if occurred_at is None else occurred_at,
    )
    return Draft(
        index,
        fields["prompt"],
        fields["version"],
        fields["experiment_id"],
        fields["unit_id"],
        values,
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

    def row_for(self, draft: Draft) -> tuple[tuple[Any, ...] | None, list[RowError]]:
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
                pick_arm(draft.experiment_id, draft.unit_id, experiment.slices)
            ]
            if experiment.running and not _may_serve(assigned, served):
                return None, [
                    RowError(draft.index, "version", _wrong_arm(draft, experiment, assigned))
                ]
            arm_id, assigned_arm_id = served.id, assigned.id
        return (
            prompt_id,
            version_id,
            draft.experiment_id,
            arm_id,
            assigned_arm_id,
            *draft.values,
        ), []


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
        experiment = found.setdefault(
            row.id, ExperimentRef(row.prompt_id, row.status in SPLIT_STATUSES)
        )
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
        f"unit {draft.unit_id!r} is assigned to version {assigned.version} "
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

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            if copy_insert.available(self.conn):
                copy_insert.copy_rows(self.conn, Conversation.__tablename__, COLUMNS, rows)
            else:
                self.conn.execute(
                    insert(Conversation), [dict(zip(COLUMNS, row, strict=True)) for row in rows]
                )
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


def ingest(
    engine: Engine, body: Any, *, now: datetime, key: idempotency.Claim | None = None
) -> int:
    """Store every record in `body` or none; returns how many were stored. With `key`, a
    batch already stored under it (same body, within idempotency.KEPT) is not stored again:
    its count is returned; a different body raises idempotency.KeyReused."""
    if key is not None:
        stored = idempotency.stored_answer(engine, key, now=now)
        if stored is not None:
            return stored
    records = records_of(body)
    try:
        with engine.begin() as conn:
            ingestion = Ingestion(conn, now)
            ingestion.add(enumerate(records))
            accepted = ingestion.finish()
            if key is not None:
                idempotency.remember(conn, key, accepted, now=now)
            return accepted
    except idempotency.KeyTaken:
        # A concurrent request with this key committed first (this one waited on its row):
        # this batch was rolled back, and the answer is that request's.
        assert key is not None
        stored = idempotency.stored_answer(engine, key, now=now)
        if stored is None:  # it expired in between
            raise Conflict(
                f"{idempotency.HEADER} {key.key!r} was being used by another request; "
                "nothing was stored, send the batch again"
            ) from None
        return stored
