"""Prompts and their versions: create, add a version, roll back, and record every change of
the active version (who or what, when, why).

Functions take a Session, flush and never commit: the caller owns the transaction, so a
failed call inside `session_factory(engine).begin()` writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from models.experiments import LIVE_STATUSES, Experiment
from models.prompts import Prompt, PromptActivation, PromptVersion
from optimizer.clock import iso
from optimizer.errors import Conflict, InvalidInput, NotFound
from optimizer.prompt_text import (
    MAX_CONTENT_CHARS,
    MAX_NOTES_CHARS,
    check_markup,
    content_hash,
    validate_name,
)
from optimizer.text_input import check_text, kind_of, refuse_unstorable, shown

MAX_ACTOR_CHARS = 200
MAX_REASON_CHARS = 5_000
MAX_VERSION = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
SOURCES = ("manual", "llm", "offline", "rollback")


@dataclass(frozen=True)
class VersionView:
    number: int
    status: str
    content: str
    change_notes: str | None
    parent: int | None
    source: str
    created_at: datetime
    id: int
    status_reason: str | None = None  # why it has its status (a replay rejection's figures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "status": self.status,
            "status_reason": self.status_reason,
            "content": self.content,
            "change_notes": self.change_notes,
            "parent": self.parent,
            "source": self.source,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class PromptView:
    id: int
    name: str
    active_version: int | None
    versions: tuple[VersionView, ...]
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "active_version": self.active_version,
            "created_at": iso(self.created_at),
            "versions": [v.to_dict() for v in self.versions],
        }


@dataclass(frozen=True)
class PromptSummary:
    name: str
    active_version: int | None
    versions_count: int
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "active_version": self.active_version,
            "versions_count": self.versions_count,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class VersionDetail:
    """Every column of a version but its text (`content_chars` says how long that is), for
    lists that must not load up to 100k characters per version."""

    id: int
    number: int
    status: str
    source: str
    parent: int | None  # the parent's version number
    model: str | None
    insight_ids: tuple[int, ...]
    change_notes: str | None
    content_hash: str
    content_chars: int
    llm_call_id: int | None
    created_at: datetime


# --- validation --------------------------------------------------------------------------


def validate_content(content: Any) -> str:
    if not isinstance(content, str):
        raise InvalidInput(f"content must be a string, got {kind_of(content)}", field="content")
    if not content.strip():
        raise InvalidInput("content is empty; send the prompt text", field="content")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidInput(
            f"content is {len(content)} characters; at most {MAX_CONTENT_CHARS} are allowed",
            field="content",
        )
    refuse_unstorable(content, "content")
    # Every way a version is added passes here (POST /prompts, POST /prompts/{name}/versions,
    # `prompts add`, generated candidates), so malformed markers are never stored.
    return check_markup(content)


def validate_notes(notes: Any) -> str | None:
    if notes is None:
        return None
    if not isinstance(notes, str):
        raise InvalidInput(
            f"change_notes must be a string or null, got {kind_of(notes)}", field="change_notes"
        )
    if len(notes) > MAX_NOTES_CHARS:
        raise InvalidInput(
            f"change_notes is {len(notes)} characters; at most {MAX_NOTES_CHARS} are allowed",
            field="change_notes",
        )
    refuse_unstorable(notes, "change_notes")
    return notes


def validate_version_number(value: Any, field: str = "version") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise InvalidInput(
            f"{field} must be a positive whole number (a version number); got {shown(value)}",
            field=field,
        )
    return value


# --- reading -----------------------------------------------------------------------------


def lock_prompt(session: Session, prompt_id: int) -> Prompt | None:
    """Take the prompt's lock for the rest of the transaction: its row, FOR UPDATE.

    Every change to a prompt's versions or experiments (add a version, roll back, create,
    stop or pause an experiment, carry out a monitoring decision) takes this lock first, so
    they run one after another per prompt and each sees what the previous one committed.
    On SQLite, BEGIN IMMEDIATE already serialises all writers; the statement is harmless.

    FOR NO KEY UPDATE (key_share), not FOR UPDATE: it still excludes other holders of this
    lock, but not the key-share lock a foreign-key check takes, so conversations for the
    prompt are ingested while a monitoring check or a rollback holds it."""
    return session.scalars(
        select(Prompt)
        .where(Prompt.id == prompt_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _prompt_row(session: Session, name: Any, *, lock: bool = False) -> Prompt:
    name = validate_name(name)
    prompt = session.scalars(select(Prompt).where(Prompt.name == name)).one_or_none()
    if prompt is not None and lock:
        prompt = lock_prompt(session, prompt.id)
    if prompt is None:
        raise NotFound(
            f"no prompt named {name!r}; create it with POST /prompts or "
            "`prompt-worker prompts add NAME --file F`"
        )
    return prompt


def _versions(session: Session, prompt_id: int) -> list[PromptVersion]:
    return list(
        session.scalars(
            select(PromptVersion)
            .where(PromptVersion.prompt_id == prompt_id)
            .order_by(PromptVersion.version)
            .execution_options(populate_existing=True)
        )
    )


def _views(rows: Sequence[PromptVersion]) -> tuple[VersionView, ...]:
    numbers = {row.id: row.version for row in rows}
    return tuple(
        VersionView(
            number=row.version,
            status=row.status,
            content=row.content,
            change_notes=row.change_notes,
            parent=numbers.get(row.parent_version_id)
            if row.parent_version_id is not None
            else None,
            source=row.source,
            created_at=row.created_at,
            id=row.id,
            status_reason=row.status_reason,
        )
        for row in rows
    )


def _prompt_view(session: Session, prompt: Prompt) -> PromptView:
    versions = _views(_versions(session, prompt.id))
    active = next((v.number for v in versions if v.status == "active"), None)
    return PromptView(
        id=prompt.id,
        name=prompt.name,
        active_version=active,
        versions=versions,
        created_at=prompt.created_at,
    )


def get_prompt(session: Session, name: Any) -> PromptView:
    return _prompt_view(session, _prompt_row(session, name))


def list_prompts(session: Session) -> list[PromptView]:
    prompts = session.scalars(select(Prompt).order_by(Prompt.name)).all()
    return [_prompt_view(session, prompt) for prompt in prompts]


def prompt_summaries(session: Session) -> list[PromptSummary]:
    """The list view without loading any version's text."""
    counts = (
        select(PromptVersion.prompt_id, func.count().label("n"))
        .group_by(PromptVersion.prompt_id)
        .subquery()
    )
    active = (
        select(PromptVersion.prompt_id, PromptVersion.version)
        .where(PromptVersion.status == "active")
        .subquery()
    )
    rows = session.execute(
        select(Prompt.name, Prompt.created_at, counts.c.n, active.c.version)
        .outerjoin(counts, counts.c.prompt_id == Prompt.id)
        .outerjoin(active, active.c.prompt_id == Prompt.id)
        .order_by(Prompt.name)
    )
    return [
        PromptSummary(
            name=name, active_version=version, versions_count=int(n or 0), created_at=created_at
        )
        for name, created_at, n, version in rows
    ]


def version_details(session: Session, name: Any) -> list[VersionDetail]:
    """The prompt's versions, oldest first, without their texts: one query for the prompt
    and one for the versions. NotFound for an unknown prompt."""
    prompt = _prompt_row(session, name)
    v, parent = PromptVersion, aliased(PromptVersion)
    rows = session.execute(
        select(
            v.id,
            v.version,
            v.status,
            v.source,
            parent.version,
            v.model,
            v.insight_ids,
            v.change_notes,
            v.content_hash,
            func.length(v.content),
            v.llm_call_id,
            v.created_at,
        )
        .outerjoin(parent, parent.id == v.parent_version_id)
        .where(v.prompt_id == prompt.id)
        .order_by(v.version)
    )
    return [
        VersionDetail(
            id=id_,
            number=number,
            status=status,
            source=source,
            parent=parent_number,
            model=model,
            insight_ids=decode_insight_ids(insight_ids),
            change_notes=notes,
            content_hash=digest,
            content_chars=int(chars or 0),
            llm_call_id=llm_call_id,
            created_at=created_at,
        )
        for (
            id_,
            number,
            status,
            source,
            parent_number,
            model,
            insight_ids,
            notes,
            digest,
            chars,
            llm_call_id,
            created_at,
        ) in rows
    ]


def decode_insight_ids(raw: str | None) -> tuple[int, ...]:
    """A version's stored insight ids (a JSON list). A row edited by hand into anything
    else reads as none, and entries that are not whole numbers are skipped, so one bad row
    cannot break a page."""
    try:
        value = json.loads(raw) if raw else []
    except (ValueError, RecursionError):
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(x for x in value if isinstance(x, int) and not isinstance(x, bool))


@dataclass(frozen=True)
class PromptActivity:
    """When a prompt last changed (a new version or a change of the active one) and its live
    experiment, if any: the dashboard's prompt list beside `prompt_summaries`."""

    updated_at: datetime | None
    live_experiment_id: int | None
    live_status: str | None


def prompt_activity(session: Session) -> dict[str, PromptActivity]:
    """Per prompt name, in one query whatever the number of prompts and versions."""
    versions = (
        select(PromptVersion.prompt_id, func.max(PromptVersion.created_at).label("at"))
        .group_by(PromptVersion.prompt_id)
        .subquery()
    )
    changes = (
        select(PromptActivation.prompt_id, func.max(PromptActivation.created_at).label("at"))
        .group_by(PromptActivation.prompt_id)
        .subquery()
    )
    rows = session.execute(
        select(Prompt.name, versions.c.at, changes.c.at, Experiment.id, Experiment.status)
        .outerjoin(versions, versions.c.prompt_id == Prompt.id)
        .outerjoin(changes, changes.c.prompt_id == Prompt.id)
        .outerjoin(
            Experiment,
            (Experiment.prompt_id == Prompt.id) & Experiment.status.in_(LIVE_STATUSES),
        )
        .order_by(Prompt.name, Experiment.id)
    )
    out: dict[str, PromptActivity] = {}
    for name, version_at, change_at, live_id, live_status in rows:
        moments = [t for t in (version_at, change_at) if t is not None]
        # At most one experiment per prompt is live; a second (edited by hand) adds a row,
        # and the newest wins.
        out[name] = PromptActivity(max(moments, default=None), live_id, live_status)
    return out


def version_texts(session: Session, name: Any, numbers: Sequence[int]) -> dict[int, str]:
    """The texts of the prompt's versions `numbers` (those that exist) and no others, so a
    page showing one or two versions does not load all of them. NotFound for an unknown
    prompt."""
    prompt = _prompt_row(session, name)
    rows = session.execute(
        select(PromptVersion.version, PromptVersion.content).where(
            PromptVersion.prompt_id == prompt.id, PromptVersion.version.in_(set(numbers))
        )
    )
    return {number: text for number, text in rows}


def get_version(session: Session, name: Any, number: Any) -> VersionView:
    prompt = _prompt_row(session, name)
    number = validate_version_number(number)
    for view in _views(_versions(session, prompt.id)):
        if view.number == number:
            return view
    raise NotFound(f"prompt {prompt.name!r} has no version {number}")


def prompt_document(session: Session, name: Any) -> dict[str, Any]:
    """The prompt as GET /prompts/{name} and `prompts show` print it: every version and
    every change of the active one."""
    document = get_prompt(session, name).to_dict()
    document["activations"] = activation_history(session, name)
    return document


def activation_history(session: Session, name: Any) -> list[dict[str, Any]]:
    """Every change of the prompt's active version, oldest first."""
    prompt = _prompt_row(session, name)
    numbers = {
        version_id: number
        for version_id, number in session.execute(
            select(PromptVersion.id, PromptVersion.version).where(
                PromptVersion.prompt_id == prompt.id
            )
        )
    }
    rows = session.scalars(
        select(PromptActivation)
        .where(PromptActivation.prompt_id == prompt.id)
        .order_by(PromptActivation.created_at, PromptActivation.id)
    )
    return [
        {
            "from_version": numbers.get(row.from_version_id)
            if row.from_version_id is not None
            else None,
            "to_version": numbers.get(row.to_version_id),
            "actor": row.actor,
            "reason": row.reason,
            "at": iso(row.created_at),
        }
        for row in rows
    ]


# --- writing -----------------------------------------------------------------------------


def create_prompt(
    session: Session,
    name: Any,
    content: Any,
    *,
    actor: str,
    now: datetime,
    change_notes: Any = None,
) -> PromptView:
    """A new prompt whose version 1 is active from the start."""
    name, content = validate_name(name), validate_content(content)
    notes = validate_notes(change_notes)
    actor = check_text(actor, "actor", MAX_ACTOR_CHARS)
    if session.scalars(select(Prompt.id).where(Prompt.name == name)).first() is not None:
        raise Conflict(
            f"prompt {name!r} already exists; add a version with POST /prompts/{name}/versions"
        )
    try:
        with session.begin_nested():
            prompt = Prompt(name=name, created_at=now)
            session.add(prompt)
            session.flush()
    except IntegrityError:  # created concurrently since the check above
        raise Conflict(
            f"prompt {name!r} already exists; add a version with POST /prompts/{name}/versions"
        ) from None
    version = PromptVersion(
        prompt_id=prompt.id,
        version=1,
        content=content,
        content_hash=content_hash(content),
        status="active",
        change_notes=notes,
        source="manual",
        created_at=now,
    )
    session.add(version)
    session.flush()
    session.add(
        PromptActivation(
            prompt_id=prompt.id,
            from_version_id=None,
            to_version_id=version.id,
            actor=actor,
            reason="created",
            created_at=now,
        )
    )
    session.flush()
    return _prompt_view(session, prompt)


def add_version(
    session: Session,
    name: Any,
    content: Any,
    *,
    change_notes: Any = None,
    parent_version: int | None = None,
    source: str = "manual",
    model: str | None = None,
    insight_ids: Sequence[int] | None = None,
    llm_call_id: int | None = None,
    now: datetime,
) -> VersionView:
    """A new `candidate` version numbered one past the highest so far."""
    content, notes = validate_content(content), validate_notes(change_notes)
    if source not in SOURCES:
        raise InvalidInput(
            f"source must be one of {', '.join(SOURCES)}; got {source!r}", field="source"
        )
    prompt = _prompt_row(session, name, lock=True)
    rows = _versions(session, prompt.id)
    digest = content_hash(content)
    duplicate = next((row for row in rows if row.content_hash == digest), None)
    if duplicate is not None:
        raise Conflict(
            f"prompt {prompt.name!r} version {duplicate.version} already has "
            "exactly this content; change the text or use that version"
        )
    parent = _parent_row(prompt.name, rows, parent_version)
    version = PromptVersion(
        prompt_id=prompt.id,
        version=max((row.version for row in rows), default=0) + 1,
        content=content,
        content_hash=digest,
        status="candidate",
        change_notes=notes,
        parent_version_id=parent.id if parent is not None else None,
        source=source,
        model=model,
        insight_ids=json.dumps(list(insight_ids)) if insight_ids else None,
        llm_call_id=llm_call_id,
        created_at=now,
    )
    session.add(version)
    session.flush()
    return _views([*rows, version])[-1]


def _parent_row(
    name: str, rows: Sequence[PromptVersion], parent_version: int | None
) -> PromptVersion | None:
    if parent_version is None:
        return next((row for row in rows if row.status == "active"), None)
    number = validate_version_number(parent_version, "parent_version")
    parent = next((row for row in rows if row.version == number), None)
    if parent is None:
        raise NotFound(f"prompt {name!r} has no version {number} to use as the parent")
    return parent


def set_active_version(
    session: Session, prompt_id: int, version_id: int, *, actor: str, reason: str, now: datetime
) -> None:
    """Make `version_id` the prompt's active version: the previous active one is retired
    and one PromptActivation row records the change. The caller commits."""
    actor = check_text(actor, "actor", MAX_ACTOR_CHARS)
    reason = check_text(reason, "reason", MAX_REASON_CHARS)
    prompt = lock_prompt(session, prompt_id)
    if prompt is None:
        raise NotFound(f"no prompt with id {prompt_id}")
    rows = _versions(session, prompt_id)
    target = next((row for row in rows if row.id == version_id), None)
    if target is None:
        raise NotFound(f"prompt {prompt.name!r} has no version with id {version_id}")
    if target.status == "active":
        raise Conflict(f"version {target.version} of prompt {prompt.name!r} is already active")
    previous = next((row for row in rows if row.status == "active"), None)
    if previous is not None:
        previous.status = "retired"
        # Flushed on its own: the one-active index is checked per statement, and a single
        # flush may order the two updates either way.
        session.flush()
    target.status = "active"
    session.flush()
    session.add(
        PromptActivation(
            prompt_id=prompt_id,
            from_version_id=previous.id if previous else None,
            to_version_id=target.id,
            actor=actor,
            reason=reason,
            created_at=now,
        )
    )
    session.flush()


def rollback(
    session: Session, name: Any, version: Any, *, actor: str, reason: str, now: datetime
) -> PromptView:
    """Make an earlier (or any non-active) version active again, by hand."""
    prompt = _prompt_row(session, name, lock=True)
    number = validate_version_number(version)
    reason = check_text(reason, "reason", MAX_REASON_CHARS)
    live = session.scalars(
        select(Experiment).where(
            Experiment.prompt_id == prompt.id, Experiment.status.in_(LIVE_STATUSES)
        )
    ).first()
    if live is not None:
        raise Conflict(
            f"prompt {prompt.name!r} has experiment {live.id} {live.status}; "
            f"stop it first (POST /experiments/{live.id}/stop or "
            f"`prompt-worker experiments stop {live.id}`), then roll back"
        )
    rows = _versions(session, prompt.id)
    target = next((row for row in rows if row.version == number), None)
    if target is None:
        raise NotFound(
            f"prompt {prompt.name!r} has no version {number}; versions are "
            f"{', '.join(str(row.version) for row in rows)}"
        )
    if target.status == "active":
        raise Conflict(f"version {number} of prompt {prompt.name!r} is already active")
    set_active_version(session, prompt.id, target.id, actor=actor, reason=reason, now=now)
    return _prompt_view(session, prompt)
