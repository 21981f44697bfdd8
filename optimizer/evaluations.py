"""Replay evaluations as people read them (the API, the CLI and the dashboard): per version,
its win rates against the active version on the failing and the held-out sample, with what
replaying it cost; and the evaluations themselves, newest first, a keyset page at a time.

Rows are read tolerantly. The replay job writes the answers as JSON lists of strings, but
a row edited by hand may hold anything there, a cost may be NaN on PostgreSQL, a score
something other than 1, 0.5 or 0: each is shown as well as it can be (text as text,
a non-finite number as none, a score that is neither a win nor a loss as a tie), so one bad
row never breaks a page.

Functions take a Session and only read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from models.evaluations import SAMPLES, CandidateEvaluation
from models.prompts import Prompt, PromptVersion
from optimizer.clock import iso
from optimizer.errors import InvalidInput, NotFound
from optimizer.prompt_text import validate_name
from optimizer.prompts import validate_version_number
from optimizer.stats.win_rate import LOSS, WIN, WinRate, win_rate_from_counts
from optimizer.text_input import MAX_ID, shown

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
# Characters no page or JSON answer can carry as they are: NUL, and the lone surrogates a
# JSON escape ("\ud800") in a hand-edited answer decodes to (UTF-8 cannot encode them).
_UNSHOWABLE = re.compile("[\x00\ud800-\udfff]")


# --- what is answered ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReplaySummary:
    """A version's replay against its control: the figures are over the evaluations against
    the control of its newest evaluation (a candidate replayed again after the active
    version changed is judged against the new one); none when it was never replayed."""

    version_id: int
    version: int
    status: str
    status_reason: str | None
    control_version: int | None
    evaluations: int
    failing: WinRate
    holdout: WinRate
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None when a stored cost is not a finite number
    replayed_at: datetime | None

    @property
    def replayed(self) -> bool:
        return self.evaluations > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "status_reason": self.status_reason,
            "control_version": self.control_version,
            "evaluations": self.evaluations,
            "failing": self.failing.to_dict(),
            "holdout": self.holdout.to_dict(),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "replayed_at": iso(self.replayed_at),
        }


@dataclass(frozen=True)
class EvaluationView:
    """One replayed conversation: both prompts' answers (one per replayed user turn) and the
    judge's verdict and reason with the candidate shown first and with the control first."""

    id: int
    sample: str
    segment: str | None
    conversation_id: int | None  # None once retention pruned the conversation
    control_version: int | None
    candidate_answers: tuple[str, ...]
    control_answers: tuple[str, ...]
    verdict_candidate_first: str
    verdict_control_first: str
    reason_candidate_first: str | None
    reason_control_first: str | None
    score: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    job_id: int | None
    created_at: datetime | None

    @property
    def flipped(self) -> bool:
        """The verdict changed with the order the answers were shown in: position bias."""
        return self.verdict_candidate_first != self.verdict_control_first

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sample": self.sample,
            "segment": self.segment,
            "conversation_id": self.conversation_id,
            "control_version": self.control_version,
            "candidate_answers": list(self.candidate_answers),
            "control_answers": list(self.control_answers),
            "verdict_candidate_first": self.verdict_candidate_first,
            "verdict_control_first": self.verdict_control_first,
            "reason_candidate_first": self.reason_candidate_first,
            "reason_control_first": self.reason_control_first,
            "score": self.score,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "job_id": self.job_id,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class EvaluationPage:
    evaluations: tuple[EvaluationView, ...]
    next_before: int | None  # pass as before_id for the next page; None on the last
    version_id: int


# --- tolerant reading ------------------------------------------------------------------------


def showable(text: str) -> str:
    return _UNSHOWABLE.sub("\ufffd", text)


def _optional_text(value: Any) -> str | None:
    return None if value is None else showable(str(value))


def _item(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return "(an unreadable value)"


def decode_answers(raw: Any) -> tuple[str, ...]:
    """A stored answer column (a JSON list of strings) as its strings. Anything else a hand
    edit left there is still shown: text that is not JSON as itself, a JSON string as a
    one-answer list, other JSON values as their JSON text; null or empty as no answer."""
    if raw is None or raw == "":
        return ()
    text = raw if isinstance(raw, str) else str(raw)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return (showable(text),)
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(showable(_item(item)) for item in items)


def _whole(value: Any) -> int:
    """A stored count as an int; what no count can be (NULL, NaN, text) reads as 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    # PostgreSQL sums a bigint column as numeric (Decimal).
    if isinstance(value, float | Decimal) and math.isfinite(value):
        return int(value)
    return 0


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


# --- parameters ------------------------------------------------------------------------------


def parse_sample(raw: Any) -> str | None:
    """`sample` as typed in a query string or an option: failing, holdout or none."""
    if raw is None or raw == "":
        return None
    if raw not in SAMPLES:
        raise InvalidInput(
            f"sample must be one of {', '.join(SAMPLES)}; got {shown(raw)}", field="sample"
        )
    return str(raw)


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(
            f"limit must be a whole number from 1 to {MAX_LIMIT}; got {shown(limit)}",
            field="limit",
        )
    return limit


def check_before(before: Any) -> int | None:
    if before is None:
        return None
    if isinstance(before, bool) or not isinstance(before, int) or not 1 <= before <= MAX_ID:
        raise InvalidInput(
            f"before must be an evaluation id (a positive whole number); got {shown(before)}",
            field="before",
        )
    return before


# --- reads -----------------------------------------------------------------------------------


def version_id(session: Session, prompt: Any, version: Any) -> int:
    """The id of the prompt's version `version`; NotFound naming what is missing."""
    name = validate_name(prompt)
    number = validate_version_number(version)
    row = session.execute(
        select(Prompt.id, PromptVersion.id)
        .outerjoin(
            PromptVersion,
            (PromptVersion.prompt_id == Prompt.id) & (PromptVersion.version == number),
        )
        .where(Prompt.name == name)
    ).first()
    if row is None:
        raise NotFound(f"no prompt named {name!r}")
    if row[1] is None:
        raise NotFound(f"prompt {name!r} has no version {number}")
    return int(row[1])


@dataclass
class _Group:
    """Sums over one (control, sample) group of a version's evaluations."""

    n: int = 0
    wins: int = 0
    losses: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = 0.0  # None: a stored cost is not a finite number
    newest_id: int = 0
    replayed_at: datetime | None = None


def summaries(session: Session, version_ids: Iterable[int]) -> dict[int, ReplaySummary]:
    """The replay summary of each of `version_ids` that exists (those never replayed too,
    with empty win rates), in one query however many versions and evaluations there are:
    the counts are grouped in SQL, the win rates rebuilt from them."""
    ids = sorted(set(version_ids))
    if not ids:
        return {}
    e, v, control = CandidateEvaluation, PromptVersion, aliased(PromptVersion)
    keys = (v.id, v.version, v.status, v.status_reason, e.control_version_id, control.version)
    rows = session.execute(
        select(
            *keys,
            e.sample,
            func.count(e.id),
            func.sum(case((e.score == WIN, 1), else_=0)),
            func.sum(case((e.score == LOSS, 1), else_=0)),
            func.sum(e.input_tokens),
            func.sum(e.output_tokens),
            func.sum(e.cost_usd),
            func.max(e.id),
            func.max(e.created_at),
        )
        .outerjoin(e, e.candidate_version_id == v.id)
        .outerjoin(control, control.id == e.control_version_id)
        .where(v.id.in_(ids))
        .group_by(*keys, e.sample)
    ).all()
    found: dict[int, tuple[int, str, str | None]] = {}
    groups: dict[int, dict[tuple[int | None, int | None], dict[str, _Group]]] = {}
    for row in rows:
        (vid, number, status, reason, control_id, control_number, sample, n) = row[:8]
        found[vid] = (number, status, reason)
        if not n:
            continue
        group = _Group(
            n=_whole(n),
            wins=_whole(row[8]),
            losses=_whole(row[9]),
            input_tokens=_whole(row[10]),
            output_tokens=_whole(row[11]),
            cost=_finite(row[12]),
            newest_id=_whole(row[13]),
            replayed_at=row[14],
        )
        groups.setdefault(vid, {}).setdefault((control_id, control_number), {})[sample] = group
    return {vid: _summary(vid, *found[vid], groups.get(vid, {})) for vid in ids if vid in found}


def _summary(
    vid: int,
    number: int,
    status: str,
    reason: str | None,
    by_control: dict[tuple[int | None, int | None], dict[str, _Group]],
) -> ReplaySummary:
    newest = max(
        by_control.items(),
        key=lambda item: max(g.newest_id for g in item[1].values()),
        default=None,
    )
    (_, control_number), samples = newest if newest is not None else ((None, None), {})
    chosen = list(samples.values())
    costs = [g.cost for g in chosen]
    cost = None if None in costs else sum(c for c in costs if c is not None)
    moments = [g.replayed_at for g in chosen if g.replayed_at is not None]
    return ReplaySummary(
        version_id=vid,
        version=number,
        status=status,
        status_reason=_optional_text(reason),
        control_version=control_number,
        evaluations=sum(g.n for g in chosen),
        failing=_rate(samples.get("failing")),
        holdout=_rate(samples.get("holdout")),
        input_tokens=sum(g.input_tokens for g in chosen),
        output_tokens=sum(g.output_tokens for g in chosen),
        cost_usd=_finite(cost),
        replayed_at=max(moments, default=None),
    )


def _rate(group: _Group | None) -> WinRate:
    if group is None:
        return win_rate_from_counts(0, 0, 0)
    # Counts out of range (only a hand edit makes them so) are clamped, not trusted.
    wins = min(max(group.wins, 0), group.n)
    losses = min(max(group.losses, 0), group.n - wins)
    return win_rate_from_counts(wins, group.n - wins - losses, losses)


def list_evaluations(
    session: Session,
    prompt: Any,
    version: Any,
    *,
    sample: str | None = None,
    before_id: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> EvaluationPage:
    """The version's evaluations (against any control), newest first: `limit` of them with
    an id below `before_id`, and where the next page starts. NotFound for an unknown prompt
    or version, InvalidInput naming a bad parameter."""
    sample = parse_sample(sample)
    before_id = check_before(before_id)
    limit = check_limit(limit)
    vid = version_id(session, prompt, version)
    rows = _rows(session, vid, sample, before_id, limit + 1)  # one more: is there a next page?
    shown_rows = rows[:limit]
    return EvaluationPage(
        evaluations=tuple(shown_rows),
        next_before=shown_rows[-1].id if len(rows) > limit else None,
        version_id=vid,
    )


def _rows(
    session: Session, vid: int, sample: str | None, before_id: int | None, limit: int
) -> list[EvaluationView]:
    e, control = CandidateEvaluation, aliased(PromptVersion)
    query = (
        select(e, control.version)
        .outerjoin(control, control.id == e.control_version_id)
        .where(e.candidate_version_id == vid)
        .order_by(e.id.desc())
        .limit(limit)
    )
    if sample is not None:
        query = query.where(e.sample == sample)
    if before_id is not None:
        query = query.where(e.id < before_id)
    return [_view(row, number) for row, number in session.execute(query)]


def _view(row: CandidateEvaluation, control_number: int | None) -> EvaluationView:
    return EvaluationView(
        id=row.id,
        sample=showable(str(row.sample)),
        segment=_optional_text(row.segment),
        conversation_id=row.conversation_id,
        control_version=control_number,
        candidate_answers=decode_answers(row.candidate_answer),
        control_answers=decode_answers(row.control_answer),
        verdict_candidate_first=showable(str(row.verdict_candidate_first)),
        verdict_control_first=showable(str(row.verdict_control_first)),
        reason_candidate_first=_optional_text(row.reason_candidate_first),
        reason_control_first=_optional_text(row.reason_control_first),
        score=_finite(row.score),
        input_tokens=_whole(row.input_tokens),
        output_tokens=_whole(row.output_tokens),
        cost_usd=_finite(row.cost_usd),
        job_id=row.job_id,
        created_at=row.created_at,
    )


def page_document(prompt: str, summary: ReplaySummary, page: EvaluationPage) -> dict[str, Any]:
    """What GET /prompts/{name}/versions/{version}/evaluations and `prompt-worker
    evaluations --json` answer."""
    return {
        "prompt": prompt,
        "version": summary.version,
        "summary": summary.to_dict(),
        "evaluations": [view.to_dict() for view in page.evaluations],
        "next_before": page.next_before,
    }


def replay_of(
    session: Session,
    prompt: Any,
    version: Any,
    *,
    sample: str | None = None,
    before_id: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[ReplaySummary, EvaluationPage]:
    """A version's summary and a page of its evaluations: three queries."""
    page = list_evaluations(
        session, prompt, version, sample=sample, before_id=before_id, limit=limit
    )
    summary = summaries(session, [page.version_id]).get(page.version_id)
    if summary is None:  # deleted between the two reads
        raise NotFound(f"prompt {prompt!r} has no version {version}")
    return summary, page


# --- in words ----------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def rate_text(rate: WinRate) -> str:
    """A win rate as the CLI and the dashboard say it: "62.5% (90% interval 35.1%-83.9%);
    8 judged: 4 wins, 2 ties, 2 losses", or "not judged"."""
    if rate.n == 0 or rate.rate is None:
        return "not judged"
    return (
        f"{_percent(rate.rate)} ({rate.confidence * 100:g}% interval "
        f"{_percent(rate.low)}-{_percent(rate.high)}); {rate.n} judged: "
        f"{rate.wins} win{'s' if rate.wins != 1 else ''}, "
        f"{rate.ties} tie{'s' if rate.ties != 1 else ''}, "
        f"{rate.losses} loss{'es' if rate.losses != 1 else ''}"
    )
