"""The dashboard's prompt pages: the list, one prompt (versions with their replay win rates,
compare form, activation history, rollback), one version (its text and its replay: summary,
status reason and evaluations), the diff of two versions, and the rollback action.

Every read goes through optimizer.prompts and optimizer.evaluations; a page loads only the
texts it shows (none for the list and the prompt page, one for a version, two for a diff),
and the replay figures of all a prompt's versions in one query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from yarl import URL

from optimizer import evaluations, prompt_settings, prompts
from optimizer.clock import utcnow
from optimizer.config import PromotionMode
from optimizer.db import session_factory
from optimizer.errors import InvalidInput, NotFound
from optimizer.http.keys import SETTINGS
from optimizer.prompt_text import validate_name
from optimizer.text_input import parse_id, parse_whole, shown
from optimizer.ui import web as ui_web
from optimizer.ui.diff import diff_lines, side_by_side
from optimizer.ui.win_rate_bar import interval_bar

PAGE_SIZE = 50
EVALUATIONS_PAGE = 20  # each shows two answers and two reasons: a long page already
VIEWS = ("inline", "side")
# Which badge colour each verdict gets: the candidate preferred reads as good news.
VERDICT_BADGES = {"candidate": "ok", "control": "error", "tie": "cancelled"}
VERSION_USAGE = "a version number (a positive whole number)"

View = Literal["inline", "side"]


# --- parameters ----------------------------------------------------------------------------


def parse_version(raw: str, field: str) -> int:
    """A version number typed in a URL or a form, worded as the CLI and the API word it."""
    number = parse_whole(raw, field, 1, prompts.MAX_VERSION, what=VERSION_USAGE)
    return prompts.validate_version_number(number, field)


def parse_view(raw: str | None) -> View:
    if raw is None or raw == "inline":
        return "inline"
    if raw == "side":
        return "side"
    raise InvalidInput(f"view must be one of {', '.join(VIEWS)}; got {shown(raw)}", field="view")


def _name(request: web.Request) -> str:
    return validate_name(request.match_info["name"])


def prompt_path(name: str) -> str:
    """The prompt's page; the list for a name a browser would read as a dot segment."""
    path = f"{ui_web.PREFIX}prompts/{name}"
    return path if ui_web.is_local(path) else f"{ui_web.PREFIX}prompts"


def _find(details: Sequence[prompts.VersionDetail], name: str, number: int) -> None:
    if not any(d.number == number for d in details):
        known = ", ".join(str(d.number) for d in details) or "none"
        raise NotFound(f"prompt {name!r} has no version {number}; versions are {known}")


# --- the list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptRow:
    summary: prompts.PromptSummary
    activity: prompts.PromptActivity | None


def list_context(session: Session, after: str | None) -> dict[str, object]:
    """A page of prompts by name, after `after`. The summaries hold no text, so reading all
    names (one query) and slicing here keeps the page at a fixed number of queries."""
    summaries = prompts.prompt_summaries(session)
    activity = prompts.prompt_activity(session)
    rest = [s for s in summaries if after is None or s.name > after]
    shown = rest[:PAGE_SIZE]
    next_url = None
    if len(rest) > PAGE_SIZE:
        next_url = str(URL(f"{ui_web.PREFIX}prompts").with_query(after=shown[-1].name))
    return {
        "rows": [PromptRow(s, activity.get(s.name)) for s in shown],
        "total": len(summaries),
        "after": after,
        "next_url": next_url,
    }


async def prompts_page(request: web.Request) -> web.Response:
    raw = request.query.get("after")
    after = validate_name(raw, "after") if raw is not None else None
    return await ui_web.page(
        request, "prompts.html", lambda s: list_context(s, after), section="prompts"
    )


# --- one prompt ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    at: datetime | None


def _activations(raw: Sequence[Mapping[str, Any]]) -> list[Activation]:
    """activation_history's rows, newest first, with their times as datetimes again."""
    rows = [
        Activation(
            r["from_version"],
            r["to_version"],
            r["actor"],
            r["reason"],
            datetime.fromisoformat(r["at"]) if r["at"] else None,
        )
        for r in raw
    ]
    return rows[::-1]


def resolve_pair(
    details: Sequence[prompts.VersionDetail], old: int | None, new: int | None
) -> tuple[int, int]:
    """(from, to) with what was not given filled in. With neither: the active version (or
    the newest) against the newest when newer versions wait (what a candidate would change),
    else against its parent, or the version before it (or itself when it is the first).
    With only `to`: its parent or predecessor. `details` is oldest first, not empty."""
    active = next((d for d in details if d.status == "active"), details[-1])
    if new is None:
        if old is None and details[-1].number > active.number:
            return active.number, details[-1].number
        new = active.number
    if old is None:
        target = next((d for d in details if d.number == new), None)
        earlier = [d.number for d in details if d.number < new]
        if target is not None and target.parent is not None:
            old = target.parent
        else:
            old = earlier[-1] if earlier else new
    return old, new


def prompt_context(session: Session, name: str, default_mode: PromotionMode) -> dict[str, object]:
    """`default_mode`: the PROMOTION_MODE setting, which a prompt without its own follows."""
    details = prompts.version_details(session, name)
    replays = evaluations.summaries(session, [d.id for d in details])
    history = _activations(prompts.activation_history(session, name))
    activity = prompts.prompt_activity(session).get(name)
    active = next((d for d in details if d.status == "active"), None)
    compare_from, compare_to = resolve_pair(details, None, None) if details else (None, None)
    return {
        "name": name,
        "versions": details[::-1],  # newest first: what people look at
        "replays": replays,
        "rate_text": evaluations.rate_text,
        "active": active,
        "history": history,
        "activity": activity,
        "compare_from": compare_from,
        "compare_to": compare_to,
        "rollback_choices": [d for d in details[::-1] if d.status != "active"],
        "rollback_default": next(
            (d.number for d in details[::-1] if active and d.number < active.number), None
        ),
        "settings": prompt_settings.get_settings(session, name, default_mode),
        "default_mode": default_mode,
        "rubric_max": prompt_settings.MAX_RUBRIC_CHARS,
    }


async def prompt_page(request: web.Request) -> web.Response:
    name = _name(request)
    default_mode = request.config_dict[SETTINGS].promotion_mode
    return await ui_web.page(
        request,
        "prompt.html",
        lambda s: prompt_context(s, name, default_mode),
        section="prompts",
    )


# --- one version ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayFilters:
    """The version page's choice of evaluations: a sample (or both) and the page."""

    sample: str | None = None
    before: int | None = None

    def url(self, name: str, number: int, **change: Any) -> str:
        values = {"sample": self.sample, "before": self.before, **change}
        query = {k: str(v) for k, v in values.items() if v is not None}
        path = URL(f"{ui_web.PREFIX}prompts/{name}/versions/{number}").with_query(query)
        return str(path.with_fragment("replay"))


def parse_replay_filters(query: Mapping[str, str]) -> ReplayFilters:
    """`sample` and `before` of the version page; empty counts as not given."""
    sample, before = query.get("sample") or None, query.get("before") or None
    return ReplayFilters(
        sample=evaluations.parse_sample(sample),
        before=None if before is None else parse_id(before, "before"),
    )


def replay_context(
    session: Session, name: str, number: int, filters: ReplayFilters
) -> dict[str, object]:
    """The version's Replay panel: its summary (three queries whatever the number of
    evaluations), the drawings of its win rates and a page of its evaluations."""
    summary, page = evaluations.replay_of(
        session,
        name,
        number,
        sample=filters.sample,
        before_id=filters.before,
        limit=EVALUATIONS_PAGE,
    )
    failing, holdout = (
        evaluations.rate_text(summary.failing),
        evaluations.rate_text(summary.holdout),
    )
    return {
        "replay": summary,
        "failing_text": failing,
        "holdout_text": holdout,
        "failing_bar": interval_bar(summary.failing, f"Win rate on the failing sample: {failing}"),
        "holdout_bar": interval_bar(summary.holdout, f"Win rate on the held-out sample: {holdout}"),
        "evaluations": page.evaluations,
        "verdict_badges": VERDICT_BADGES,
        "filters": filters,
        "sample_links": [
            (label, filters.url(name, number, sample=value, before=None), value == filters.sample)
            for label, value in (
                ("both samples", None),
                ("failing", "failing"),
                ("holdout", "holdout"),
            )
        ],
        "next_url": (
            filters.url(name, number, before=page.next_before) if page.next_before else None
        ),
        "first_url": (
            filters.url(name, number, before=None) if filters.before is not None else None
        ),
    }


def version_context(
    session: Session, name: str, number: int, filters: ReplayFilters | None = None
) -> dict[str, object]:
    details = prompts.version_details(session, name)
    _find(details, name, number)
    detail = next(d for d in details if d.number == number)
    text = prompts.version_texts(session, name, [number]).get(number)
    if text is None:  # deleted between the two reads
        raise NotFound(f"prompt {name!r} has no version {number}")
    replay = replay_context(session, name, number, filters or ReplayFilters())
    return {"name": name, "version": detail, "text": text, **replay}


async def version_page(request: web.Request) -> web.Response:
    name = _name(request)
    number = parse_version(request.match_info["n"], "version")
    filters = parse_replay_filters(request.query)
    return await ui_web.page(
        request,
        "version.html",
        lambda s: version_context(s, name, number, filters),
        section="prompts",
    )


# --- the diff ------------------------------------------------------------------------------


def diff_url(name: str, old: int, new: int, view: str) -> str:
    path = f"{ui_web.PREFIX}prompts/{name}/diff"
    return str(URL(path).with_query({"from": old, "to": new, "view": view}))


def diff_context(
    session: Session, name: str, old: int | None, new: int | None, view: View
) -> dict[str, object]:
    details = prompts.version_details(session, name)
    if not details:
        raise NotFound(f"prompt {name!r} has no versions")
    old, new = resolve_pair(details, old, new)
    _find(details, name, old)
    _find(details, name, new)
    texts = prompts.version_texts(session, name, [old, new])
    hunks = diff_lines(texts[old], texts[new])
    by_number = {d.number: d for d in details}
    return {
        "name": name,
        "old": by_number[old],
        "new": by_number[new],
        "view": view,
        "hunks": hunks,
        "rows": side_by_side(hunks) if view == "side" else [],
        "versions": [d.number for d in details],
        "inline_url": diff_url(name, old, new, "inline"),
        "side_url": diff_url(name, old, new, "side"),
        "swap_url": diff_url(name, new, old, view),
    }


async def diff_page(request: web.Request) -> web.Response:
    name = _name(request)
    query = request.query
    old = parse_version(query["from"], "from") if query.get("from") else None
    new = parse_version(query["to"], "to") if query.get("to") else None
    view = parse_view(query.get("view"))
    return await ui_web.page(
        request, "diff.html", lambda s: diff_context(s, name, old, new, view), section="prompts"
    )


# --- rollback ------------------------------------------------------------------------------


async def rollback_action(request: web.Request) -> web.Response:
    name = _name(request)
    fields = await ui_web.form(request)
    number = parse_version(fields.get("version", ""), "version")
    reason = fields.get("reason", "")

    def work(engine: Engine) -> None:
        with session_factory(engine).begin() as session:
            prompts.rollback(session, name, number, actor=ui_web.ACTOR, reason=reason, now=utcnow())

    return await ui_web.act(request, work, done=prompt_path(name), notice="rolled-back")


# --- settings ------------------------------------------------------------------------------


def settings_body(fields: Mapping[str, str]) -> prompt_settings.PromptSettingsBody:
    """The settings form as the body of POST /prompts/{name}/settings: both keys, always;
    an empty rubric box removes the rubric. Browsers send a textarea's line breaks as CRLF:
    stored as LF, as the API and the CLI store them."""
    rubric = fields.get("judge_rubric", "").replace("\r\n", "\n")
    return prompt_settings.parse_body(
        {
            "promotion_mode": fields.get("promotion_mode", ""),
            "judge_rubric": rubric if rubric.strip() else None,
        }
    )


async def settings_action(request: web.Request) -> web.Response:
    name = _name(request)
    body = settings_body(await ui_web.form(request))
    default_mode = request.config_dict[SETTINGS].promotion_mode

    def work(engine: Engine) -> None:
        with session_factory(engine).begin() as session:
            prompt_settings.update_settings(session, name, body, default_mode)

    return await ui_web.act(request, work, done=prompt_path(name), notice="settings-saved")


def add_routes(ui: web.Application) -> None:
    ui.router.add_get("/prompts", prompts_page)
    ui.router.add_get("/prompts/{name}", prompt_page)
    ui.router.add_get("/prompts/{name}/versions/{n}", version_page)
    ui.router.add_get("/prompts/{name}/diff", diff_page)
    ui.router.add_post("/prompts/{name}/rollback", rollback_action)
    ui.router.add_post("/prompts/{name}/settings", settings_action)
