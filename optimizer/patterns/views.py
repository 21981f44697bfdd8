"""Insights as the admin API (GET /insights) and `prompt-worker insights list` show them,
with the filters validated once for both."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.insights import PatternInsight
from models.prompts import Prompt, PromptVersion
from optimizer.clock import iso
from optimizer.errors import InvalidInput, NotFound
from optimizer.patterns.describe import facets_of
from optimizer.prompt_text import validate_name
from optimizer.prompts import decode_insight_ids
from optimizer.text_input import parse_whole

KINDS = ("segment", "regression", "theme")
DEFAULT_LIMIT, MAX_LIMIT = 100, 500


@dataclass(frozen=True)
class InsightView:
    id: int
    prompt: str
    version: int | None
    kind: str
    title: str
    detail: str | None
    evidence: dict[str, Any]
    is_actionable: bool
    effect_size: float | None
    occurrences: int
    first_seen_at: datetime
    last_seen_at: datetime

    @property
    def facets(self) -> list[Any]:
        """The findings a group holds (evidence "facets"); none for a theme or a row from
        before grouping."""
        return list(facets_of(self.evidence))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "version": self.version,
            "kind": self.kind,
            "title": self.title,
            "detail": self.detail,
            "evidence": self.evidence,
            "is_actionable": self.is_actionable,
            "effect_size": self.effect_size,
            "occurrences": self.occurrences,
            "first_seen_at": iso(self.first_seen_at),
            "last_seen_at": iso(self.last_seen_at),
        }


def parse_prompt(value: Any) -> str:
    try:
        return validate_name(value)
    except InvalidInput as exc:
        raise InvalidInput(
            str(exc).replace("name must", "prompt must", 1), field="prompt"
        ) from None


def parse_kind(value: Any) -> str:
    if value not in KINDS:
        raise InvalidInput(
            f"kind must be one of {', '.join(KINDS)}; got {str(value)[:40]!r}", field="kind"
        )
    return str(value)


def parse_actionable(value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise InvalidInput(
            f"actionable must be true or false; got {value[:40]!r}", field="actionable"
        )
    return text == "true"


def parse_limit(value: str) -> int:
    return parse_whole(value, "limit", 1, MAX_LIMIT)


def _evidence(raw: str | None) -> dict[str, Any]:
    """The stored JSON object; a row edited by hand into something else is shown as text
    rather than failing the whole list."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {"unreadable": (raw or "")[:2000]}
    return value if isinstance(value, dict) else {"unreadable": (raw or "")[:2000]}


def list_insights(
    session: Session,
    *,
    prompt: str | None = None,
    actionable: bool | None = None,
    kind: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[InsightView]:
    """Newest last_seen_at first. An unknown prompt is NotFound, not an empty list."""
    i = PatternInsight
    query = (
        select(i, Prompt.name, PromptVersion.version)
        .join(Prompt, Prompt.id == i.prompt_id)
        .outerjoin(PromptVersion, PromptVersion.id == i.version_id)
    )
    if prompt is not None:
        name = parse_prompt(prompt)
        if session.scalar(select(Prompt.id).where(Prompt.name == name)) is None:
            raise NotFound(f"no prompt named {name!r}")
        query = query.where(Prompt.name == name)
    if actionable is not None:
        query = query.where(i.is_actionable.is_(actionable))
    if kind is not None:
        query = query.where(i.kind == parse_kind(kind))
    rows = session.execute(query.order_by(i.last_seen_at.desc(), i.id.desc()).limit(limit))
    return [
        InsightView(
            id=row.id,
            prompt=name_,
            version=version,
            kind=row.kind,
            title=row.title,
            detail=row.detail,
            evidence=_evidence(row.evidence),
            is_actionable=bool(row.is_actionable),
            effect_size=row.effect_size,
            occurrences=int(row.occurrences),
            first_seen_at=row.first_seen_at,
            last_seen_at=row.last_seen_at,
        )
        for row, name_, version in rows
    ]


def generated_from(
    session: Session, insight_ids: Collection[int]
) -> dict[int, list[tuple[str, int]]]:
    """Per insight id asked for, the versions of its prompt (name, number) whose recorded
    `insight_ids` hold it, in number order; an empty list for none. One query over the
    versions of those prompts that record any, read without their texts."""
    wanted = set(insight_ids)
    found: dict[int, list[tuple[str, int]]] = {i: [] for i in wanted}
    if not wanted:
        return found
    rows = session.execute(
        select(PatternInsight.id, Prompt.name, PromptVersion.version, PromptVersion.insight_ids)
        .join(PromptVersion, PromptVersion.prompt_id == PatternInsight.prompt_id)
        .join(Prompt, Prompt.id == PatternInsight.prompt_id)
        .where(PatternInsight.id.in_(wanted), PromptVersion.insight_ids.is_not(None))
        .order_by(PatternInsight.id, PromptVersion.version)
    )
    for insight_id, name, number, raw in rows:
        if insight_id in decode_insight_ids(raw):
            found[insight_id].append((name, number))
    return found
