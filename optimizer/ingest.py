"""Conversations the host application logs: validation and the all-or-nothing insert.

A record (HTTP body, batch item or JSONL line) holds exactly these fields:

    prompt, version, unit_id            required: prompt name, its version number, the unit
    experiment_id                       optional: the experiment `resolve` reported
    success (bool), rating (1..5), latency_ms, cost_usd (finite >= 0),
    input_tokens, output_tokens (whole >= 0), segment (<= 200 chars),
    tags (<= 50 strings of <= 100 chars), transcript (<= 100,000 chars),
    occurred_at (ISO 8601; default now)  optional

Every bad row is reported (index, field, problem) and nothing is stored unless every row is
good: the rows go in with one executemany inside one transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.conversations import Conversation
from models.experiments import Experiment, ExperimentArm
from models.prompts import Prompt, PromptVersion
from optimizer.errors import Conflict, InvalidInput
from optimizer.job_input import MAX_PROMPT_NAME, parse_timestamp

FIELDS = ("prompt", "version", "unit_id", "experiment_id", "success", "rating", "latency_ms",
          "input_tokens", "output_tokens", "cost_usd", "segment", "tags", "transcript",
          "occurred_at")
MAX_BATCH = 1000
MAX_UNIT_ID = 200
MAX_SEGMENT = 200
MAX_TAGS, MAX_TAG = 50, 100
MAX_TRANSCRIPT = 100_000
MAX_INT32 = 2**31 - 1
MAX_ID = 2**63 - 1
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

    def __init__(self, errors: Sequence[RowError], *, bad_rows: int, total_rows: int,
                 omitted: int) -> None:
        shown = f"; the first {len(errors)} problems are listed" if omitted else ""
        super().__init__(f"{bad_rows} of {total_rows} conversations are invalid; nothing was "
                         f"stored{shown}")
        self.errors = tuple(errors)
        self.omitted = omitted


class _Bad(Exception):
    """One field's problem, worded to follow "<field>: "."""


# --- field checks ------------------------------------------------------------------------


def _text(value: Any, max_len: int, *, min_len: int = 1) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string; got {_kind(value)}")
    if not min_len <= len(value) <= max_len or (min_len and not value.strip()):
        raise _Bad(f"must be {'a non-blank string of ' if min_len else ''}at most "
                   f"{max_len:,} characters; got {len(value):,}")
    if "\x00" in value:
        raise _Bad("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("is not valid Unicode (it holds a lone surrogate escape)") from None
    return value


def _whole(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = _kind(value) if not isinstance(value, int) or isinstance(value, bool) \
            else str(value)[:30]
        raise _Bad(f"must be {what}; got {shown}")
    return value


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"must be a number >= 0; got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise _Bad(f"must be a finite number >= 0; got {str(value)[:30]}")
    return number


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false; got {_kind(value)}")
    return value


def _tags(value: Any) -> str:
    if not isinstance(value, list):
        raise _Bad(f"must be a list of strings; got {_kind(value)}")
    if len(value) > MAX_TAGS:
        raise _Bad(f"must hold at most {MAX_TAGS} tags; got {len(value)}")
    for position, tag in enumerate(value):
        try:
            _text(tag, MAX_TAG)
        except _Bad as exc:
            raise _Bad(f"tag {position} {exc}") from None
    return json.dumps(value)


def _occurred_at(value: Any) -> datetime:
    try:
        return parse_timestamp(value, "occurred_at")
    except InvalidInput:
        raise _Bad("must be an ISO 8601 date-time such as 2026-11-22T09:00:00Z; got "
                   f"{str(value)[:60]!r}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# Optional fields: column name -> check. None (or absent) stores NULL.
_OPTIONAL: dict[str, Callable[[Any], Any]] = {
    "success": _bool,
    "rating": lambda v: _whole(v, 1, 5, "1..5 (a whole number)"),
    "latency_ms": _amount,
    "cost_usd": _amount,
    "input_tokens": lambda v: _whole(v, 0, MAX_INT32, f"a whole number 0..{MAX_INT32}"),
    "output_tokens": lambda v: _whole(v, 0, MAX_INT32, f"a whole number 0..{MAX_INT32}"),
    "segment": lambda v: _text(v, MAX_SEGMENT),
    "tags": _tags,
    "transcript": lambda v: _text(v, MAX_TRANSCRIPT, min_len=0),
}
_REQUIRED: dict[str, Callable[[Any], Any]] = {
    "prompt": lambda v: _text(v, MAX_PROMPT_NAME),
    "version": lambda v: _whole(v, 1, MAX_INT32, "the prompt's version number (a whole "
                                                 "number >= 1)"),
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
        return None, [RowError(index, None, f"must be a JSON object; got {_kind(raw)}")]
    errors = [RowError(index, name, f"unknown field; allowed: {', '.join(FIELDS)}")
              for name in raw if name not in FIELDS]
    found: dict[str, Any] = {}
    for name, check in (*_REQUIRED.items(), *_OPTIONAL.items(),
                        ("experiment_id", lambda v: _whole(v, 1, MAX_ID, "a positive id")),
                        ("occurred_at", _occurred_at)):
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
    required = {name: found.pop(name) for name in ("prompt", "version")}
    return Draft(index, required["prompt"], required["version"],
                 found.pop("experiment_id"), found), []


# --- references --------------------------------------------------------------------------


class References:
    """Prompt names, version numbers and experiments looked up in bulk and remembered,
    so a large import asks the database once per distinct name, not once per row."""

    def __init__(self) -> None:
        self.prompts: dict[str, int | None] = {}
        self.versions: dict[tuple[int, int], int | None] = {}
        self.experiments: dict[int, int | None] = {}  # id -> prompt_id
        self.arms: dict[int, dict[int, int]] = {}  # experiment id -> {version_id: arm_id}

    def load(self, conn: Connection, drafts: Sequence[Draft]) -> None:
        names = {d.prompt for d in drafts} - self.prompts.keys()
        if names:
            found = {name: pid for name, pid in conn.execute(
                select(Prompt.name, Prompt.id).where(Prompt.name.in_(sorted(names))))}
            self.prompts.update({name: found.get(name) for name in names})
        pairs = {(pid, d.version) for d in drafts
                 if (pid := self.prompts[d.prompt]) is not None} - self.versions.keys()
        if pairs:
            rows = conn.execute(
                select(PromptVersion.prompt_id, PromptVersion.version, PromptVersion.id)
                .where(tuple_(PromptVersion.prompt_id, PromptVersion.version).in_(sorted(pairs))))
            found_v = {(p, v): vid for p, v, vid in rows}
            self.versions.update({pair: found_v.get(pair) for pair in pairs})
        ids = {d.experiment_id for d in drafts if d.experiment_id is not None}
        ids -= self.experiments.keys()
        if ids:
            found_e = {eid: pid for eid, pid in conn.execute(
                select(Experiment.id, Experiment.prompt_id)
                .where(Experiment.id.in_(sorted(ids))))}
            self.experiments.update({eid: found_e.get(eid) for eid in ids})
            for arm_id, experiment_id, version_id in conn.execute(
                    select(ExperimentArm.id, ExperimentArm.experiment_id,
                           ExperimentArm.version_id)
                    .where(ExperimentArm.experiment_id.in_(sorted(ids)))):
                self.arms.setdefault(experiment_id, {})[version_id] = arm_id

    def row_for(self, draft: Draft) -> tuple[dict[str, Any] | None, list[RowError]]:
        prompt_id = self.prompts.get(draft.prompt)
        if prompt_id is None:
            return None, [RowError(draft.index, "prompt", f"no prompt named {draft.prompt!r}")]
        version_id = self.versions.get((prompt_id, draft.version))
        if version_id is None:
            return None, [RowError(draft.index, "version",
                                   f"prompt {draft.prompt!r} has no version {draft.version}")]
        arm_id = None
        if draft.experiment_id is not None:
            problem = self._experiment_problem(draft, prompt_id, version_id)
            if problem:
                return None, [RowError(draft.index, "experiment_id", problem)]
            arm_id = self.arms[draft.experiment_id][version_id]
        return {**draft.values, "prompt_id": prompt_id, "version_id": version_id,
                "experiment_id": draft.experiment_id, "arm_id": arm_id}, []

    def _experiment_problem(self, draft: Draft, prompt_id: int, version_id: int) -> str:
        experiment_id = draft.experiment_id
        assert experiment_id is not None
        owner = self.experiments.get(experiment_id)
        if owner is None:
            return f"experiment {experiment_id} does not exist"
        if owner != prompt_id:
            return f"experiment {experiment_id} tests another prompt, not {draft.prompt!r}"
        if version_id not in self.arms.get(experiment_id, {}):
            return (f"version {draft.version} is not an arm of experiment {experiment_id}; "
                    "send the version and experiment_id that resolve returned")
        return ""


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
            raise RowsInvalid(errors, bad_rows=self.bad_rows,
                              total_rows=self.total_rows, omitted=self.omitted)
        return self.accepted

    def _note(self, errors: list[RowError]) -> None:
        if not errors:
            return
        self.bad_rows += 1
        room = MAX_KEPT_ERRORS - len(self.errors)
        self.errors.extend(errors[:max(room, 0)])
        self.omitted += max(len(errors) - max(room, 0), 0)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        try:
            self.conn.execute(insert(Conversation), rows)
        except IntegrityError:
            # A prompt, version or experiment was deleted between the lookup and the insert.
            raise Conflict("a prompt, version or experiment changed while the conversations "
                           "were being stored; nothing was stored, send them again") from None
        self.accepted += len(rows)


def records_of(body: Any) -> list[Any]:
    """One record, or {"conversations": [...]} of 1..MAX_BATCH records."""
    if isinstance(body, dict) and "conversations" in body:
        for name in body:
            if name != "conversations":
                raise InvalidInput(f"unknown field {name!r} beside 'conversations'; send "
                                   "either one record or {\"conversations\": [...]}",
                                   field=name)
        batch = body["conversations"]
        if not isinstance(batch, list) or not batch:
            raise InvalidInput(f"conversations must be a list of 1 to {MAX_BATCH} records",
                               field="conversations")
        if len(batch) > MAX_BATCH:
            raise InvalidInput(f"conversations holds {len(batch)} records; at most "
                               f"{MAX_BATCH} per request, split the batch",
                               field="conversations")
        return batch
    if not isinstance(body, dict):
        raise InvalidInput(f"request body must be a JSON object: one conversation or "
                           f"{{\"conversations\": [...]}}; got {_kind(body)}")
    return [body]


def ingest(engine: Engine, body: Any, *, now: datetime) -> int:
    """Store every record in `body` or none; returns how many were stored."""
    records = records_of(body)
    with engine.begin() as conn:
        ingestion = Ingestion(conn, now)
        ingestion.add(enumerate(records))
        return ingestion.finish()
