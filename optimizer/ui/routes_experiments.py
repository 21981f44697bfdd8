"""GET /ui/experiments (filtered, keyset-paged list), GET /ui/experiments/{id} (header, arms,
charts drawn from every stored check, SRM, decision timeline, latest figures), and a
person's actions: POST /ui/experiments/{id}/stop, /approve, /reject and /promote.

Reads go through experiments.store; the charts and tables come from the pure readers in
optimizer/ui/series.py and charts.py, so a hand-edited check never breaks the page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web as aioweb
from multidict import MultiMapping
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from yarl import URL

from models.experiments import EXPERIMENT_STATUSES, LIVE_STATUSES
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.experiments import approvals, store, transitions
from optimizer.http.keys import WEBHOOKS
from optimizer.input_models import validate
from optimizer.patterns.views import parse_prompt
from optimizer.stats.finite import finite_only
from optimizer.text_input import parse_id, refuse_unstorable
from optimizer.ui import charts, series, web
from optimizer.webhooks import EXPERIMENT_ACTION

PAGE_SIZE = 50
# Checks are read in pages of this many until none are left: every check is one point on
# the chart, however long the experiment ran.
CHECKS_PAGE = 500
SECTION = "experiments"


def given(query: MultiMapping[str], name: str) -> str | None:
    """A query parameter's first value; an empty one (a form's "any") counts as not given.
    A NUL or lone surrogate is refused first, with the message the admin API gives."""
    value = query.get(name)
    return refuse_unstorable(value, name) if value else None


# --- list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilters:
    status: str | None
    prompt: str | None
    before: int | None

    def url(self, **change: Any) -> str:
        """This list's URL with some filters changed (None drops one)."""
        values = {"status": self.status, "prompt": self.prompt, "before": self.before, **change}
        query = {k: str(v) for k, v in values.items() if v is not None}
        return str(URL("/ui/experiments").with_query(query))


def parse_list_filters(query: MultiMapping[str]) -> ListFilters:
    """The list's filters; a bad value is InvalidInput naming its parameter (a 400 page).
    `status` is checked by store.list_experiments, so its message is the API's."""
    prompt, before = given(query, "prompt"), given(query, "before")
    return ListFilters(
        status=given(query, "status"),
        prompt=None if prompt is None else parse_prompt(prompt),
        before=None if before is None else parse_id(before, "before"),
    )


def list_page(filters: ListFilters) -> Callable[[Session], Mapping[str, object]]:
    def build(session: Session) -> Mapping[str, object]:
        # One more than a page: whether a next page exists, without counting.
        found = store.list_experiments(
            session,
            status=filters.status,
            prompt=filters.prompt,
            before_id=filters.before,
            limit=PAGE_SIZE + 1,
        )
        rows = found[:PAGE_SIZE]
        more = len(found) > PAGE_SIZE
        return {
            "experiments": rows,
            "filters": filters,
            "statuses": EXPERIMENT_STATUSES,
            "status_links": [("all", filters.url(status=None, before=None))]
            + [(s, filters.url(status=s, before=None)) for s in EXPERIMENT_STATUSES],
            "next_url": filters.url(before=rows[-1].id) if more else None,
            "first_url": filters.url(before=None) if filters.before is not None else None,
        }

    return build


async def experiments(request: aioweb.Request) -> aioweb.Response:
    filters = parse_list_filters(request.query)
    return await web.page(request, "experiments.html", list_page(filters), section=SECTION)


# --- detail ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiftRow:
    """The latest estimate of one variant arm's lift (from the last check that had it)."""

    label: str
    checked_at: datetime
    relative: float | None
    low: float | None
    high: float | None
    prob_beat_control: float | None
    n_control: int | None
    n_arm: int | None
    error: str | None


@dataclass(frozen=True)
class GuardrailRow:
    metric: str
    label: str
    checked_at: datetime
    status: str | None
    relative: float | None
    low: float | None
    high: float | None
    limit: float | None
    error: str | None


def all_checks(session: Session, experiment_id: int) -> list[store.AnalysisView]:
    """Every stored check, oldest first: one query per CHECKS_PAGE checks."""
    checks: list[store.AnalysisView] = []
    while True:
        after = checks[-1].id if checks else 0
        page = store.list_analyses(session, experiment_id, after_id=after, limit=CHECKS_PAGE)
        checks += page
        if len(page) < CHECKS_PAGE:
            return checks


def latest_lift(lift: series.LiftSeries) -> list[LiftRow]:
    return [
        LiftRow(
            arm.label,
            p.checked_at,
            p.relative,
            p.low,
            p.high,
            p.prob_beat_control,
            p.n_control,
            p.n_arm,
            p.error,
        )
        for arm in lift.arms
        for p in arm.points[-1:]
    ]


def latest_guardrails(guards: list[series.GuardrailSeries]) -> list[GuardrailRow]:
    return [
        GuardrailRow(
            g.metric, arm.label, p.checked_at, p.status, p.relative, p.low, p.high, g.limit, p.error
        )
        for g in guards
        for arm in g.arms
        for p in arm.points[-1:]
    ]


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # a whole number too big for a float (JSON allows any size)
        return False


def _shown(value: Any) -> str:
    # As JSON, with NaN (which json.loads reads) as null: nothing shown may be NaN.
    text = value if isinstance(value, str) else json.dumps(finite_only(value), ensure_ascii=False)
    return text[:300]


def guardrail_settings(stored: Any) -> list[str]:
    """The experiment's guardrails in words; a hand-edited value reads as what it is."""
    if not isinstance(stored, list):
        return [] if stored in (None, "") else [_shown(stored)]
    lines = []
    for g in stored:
        if not isinstance(g, dict) or not isinstance(g.get("metric"), str):
            lines.append(_shown(g))
            continue
        better = "higher" if g.get("higher_is_better", True) is not False else "lower"
        tolerance = g.get("tolerance")
        tol = f", tolerance {tolerance:.1%}" if _finite(tolerance) else ""
        required = ", required" if g.get("required") is True else ""
        lines.append(f"{g['metric']} ({better} is better{tol}{required})")
    return lines


def detail_page(experiment_id: int) -> Callable[[Session], Mapping[str, object]]:
    def build(session: Session) -> Mapping[str, object]:
        # Its latest check is the last of `checks`: no separate read for it.
        view = store.get_experiment(session, experiment_id, with_analysis=False)
        checks = all_checks(session, experiment_id)
        lift = series.lift_series(checks, view.primary_metric)
        guards = series.guardrail_series(checks)
        labels = series.arm_labels(checks)
        return {
            "experiment": view,
            "live": view.status in LIVE_STATUSES,
            "awaiting": view.status == "awaiting_approval",
            "checks": len(checks),
            "guardrail_settings": guardrail_settings(view.guardrails),
            "lift_chart": charts.lift_chart(lift),
            "guardrail_charts": [charts.guardrail_chart(g) for g in guards],
            "srm": series.srm_status(checks[-1].statistics, labels) if checks else None,
            "srm_at": checks[-1].checked_at if checks else None,
            "timeline": series.timeline(checks),
            "latest_lift": latest_lift(lift),
            "latest_guardrails": latest_guardrails(guards),
        }

    return build


async def experiment(request: aioweb.Request) -> aioweb.Response:
    experiment_id = parse_id(request.match_info["id"], "id")
    return await web.page(request, "experiment.html", detail_page(experiment_id), section=SECTION)


# --- a person's actions -------------------------------------------------------------------


async def stop(request: aioweb.Request) -> aioweb.Response:
    experiment_id = parse_id(request.match_info["id"], "id")
    reason = (await web.form(request)).get("reason") or None

    def work(engine: Engine) -> None:
        with session_factory(engine).begin() as session:
            view = transitions.stop_experiment(
                session, experiment_id, actor=web.ACTOR, reason=reason, now=utcnow()
            )
        _announce(request, view, "stop", reason)

    return await web.act(
        request, work, done=f"/ui/experiments/{experiment_id}", notice="experiment-stopped"
    )


async def _decide(
    request: aioweb.Request,
    act: Callable[..., store.ExperimentView],
    body: Callable[[dict[str, str]], approvals.DecisionBody | approvals.PromoteBody],
    action: str,
    notice: str,
) -> aioweb.Response:
    """Check the form as the API checks its body, then `act` in one transaction."""
    experiment_id = parse_id(request.match_info["id"], "id")
    checked = body(await web.form(request))

    def work(engine: Engine) -> None:
        with session_factory(engine).begin() as session:
            view = act(session, experiment_id, checked, actor=web.ACTOR, now=utcnow())
        _announce(request, view, action, checked.reason)

    return await web.act(request, work, done=f"/ui/experiments/{experiment_id}", notice=notice)


def _announce(
    request: aioweb.Request, view: store.ExperimentView, action: str, reason: str | None
) -> None:
    """The `experiment.action` webhook, once the change is committed (from the worker
    thread: publish hands the event to the event loop)."""
    sender = request.config_dict[WEBHOOKS]
    if sender is not None:
        event = approvals.action_event(view, action, actor=web.ACTOR, reason=reason)
        sender.publish(EXPERIMENT_ACTION, event)


def decision_body(fields: dict[str, str]) -> approvals.DecisionBody:
    return validate(approvals.DecisionBody, {"reason": fields.get("reason", "")})


def promote_body(fields: dict[str, str]) -> approvals.PromoteBody:
    """The form names the arm by its id (one form per variant arm)."""
    arm = parse_id(fields["arm"], "arm") if fields.get("arm") else None
    return validate(approvals.PromoteBody, {"arm": arm, "reason": fields.get("reason", "")})


async def approve(request: aioweb.Request) -> aioweb.Response:
    return await _decide(
        request, approvals.approve, decision_body, "approve", "experiment-approved"
    )


async def reject(request: aioweb.Request) -> aioweb.Response:
    return await _decide(request, approvals.reject, decision_body, "reject", "experiment-rejected")


async def promote(request: aioweb.Request) -> aioweb.Response:
    return await _decide(request, approvals.promote, promote_body, "promote", "arm-promoted")


def add_routes(ui: aioweb.Application) -> None:
    ui.router.add_get("/experiments", experiments)
    ui.router.add_get("/experiments/{id}", experiment)
    ui.router.add_post("/experiments/{id}/stop", stop)
    ui.router.add_post("/experiments/{id}/approve", approve)
    ui.router.add_post("/experiments/{id}/reject", reject)
    ui.router.add_post("/experiments/{id}/promote", promote)
