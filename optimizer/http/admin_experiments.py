"""Admin experiment API: POST /experiments, GET /experiments, GET /experiments/{id},
GET /experiments/{id}/analyses, POST /experiments/{id}/stop, and a person's decisions:
POST /experiments/{id}/approve, /reject and /promote."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.experiments import approvals, store, transitions
from optimizer.experiments.defaults import settings_with_defaults
from optimizer.experiments.validation import ExperimentSettings, NewExperiment
from optimizer.http import responses as out
from optimizer.http.body import path_id, read_body, read_optional_body, read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.keys import ENGINE, SETTINGS, STATS, WEBHOOKS
from optimizer.http.requests import AnalysisListQuery, ExperimentListQuery, StopBody
from optimizer.webhooks import EXPERIMENT_ACTION

log = logging.getLogger("prompt_worker.http.experiments")

NEW_EXPERIMENT_FIELDS = tuple(NewExperiment.model_fields)
LIST_PARAMS = tuple(ExperimentListQuery.model_fields)
ANALYSES_PARAMS = tuple(AnalysisListQuery.model_fields)
STOP_FIELDS = tuple(StopBody.model_fields)
DECISION_FIELDS = tuple(approvals.DecisionBody.model_fields)
PROMOTE_FIELDS = tuple(approvals.PromoteBody.model_fields)
HTTP_ACTOR = "admin (HTTP)"


def _create(
    engine: Engine, body: NewExperiment, settings: ExperimentSettings
) -> store.ExperimentView:
    with session_factory(engine).begin() as session:
        return store.create_experiment(
            session,
            body.prompt,
            body.variants,
            weights=body.weights,
            settings=settings,
            created_by=HTTP_ACTOR,
            now=utcnow(),
        )


async def create_experiment(request: web.Request) -> web.Response:
    body = await read_body(request, NewExperiment)
    settings = settings_with_defaults(body, request.app[SETTINGS])
    view = await asyncio.to_thread(_create, request.app[ENGINE], body, settings)
    request.app[STATS].add("experimentsCreated")
    log.info(
        "experiment created", extra={"experiment_id": view.id, "prompt": view.prompt, "via": "http"}
    )
    return web.json_response(
        view.to_dict(), status=201, headers={"Location": f"/experiments/{view.id}"}
    )


def _list(engine: Engine, query: ExperimentListQuery) -> list[store.ExperimentView]:
    with session_factory(engine)() as session:
        return store.list_experiments(
            session, status=query.status, prompt=query.prompt, limit=query.limit
        )


async def list_experiments(request: web.Request) -> web.Response:
    query = read_query(request, ExperimentListQuery)
    views = await asyncio.to_thread(_list, request.app[ENGINE], query)
    return web.json_response({"experiments": [v.to_dict() for v in views]})


def _get(engine: Engine, experiment_id: int) -> store.ExperimentView:
    with session_factory(engine)() as session:
        return store.get_experiment(session, experiment_id)


async def get_experiment(request: web.Request) -> web.Response:
    view = await asyncio.to_thread(_get, request.app[ENGINE], path_id(request))
    return web.json_response(view.to_dict())


def _analyses(
    engine: Engine, experiment_id: int, query: AnalysisListQuery
) -> list[store.AnalysisView]:
    with session_factory(engine)() as session:
        # One more than asked: whether another page follows, without a count.
        return store.list_analyses(
            session, experiment_id, after_id=query.after, limit=query.limit + 1
        )


async def list_analyses(request: web.Request) -> web.Response:
    experiment_id = path_id(request)
    query = read_query(request, AnalysisListQuery)
    views = await asyncio.to_thread(_analyses, request.app[ENGINE], experiment_id, query)
    page = views[: query.limit]
    return web.json_response(
        {
            "experiment_id": experiment_id,
            "analyses": [v.to_dict() for v in page],
            "next_after": page[-1].id if len(views) > query.limit else None,
        }
    )


def _stop(engine: Engine, experiment_id: int, reason: str | None) -> store.ExperimentView:
    with session_factory(engine).begin() as session:
        return transitions.stop_experiment(
            session, experiment_id, actor=HTTP_ACTOR, reason=reason, now=utcnow()
        )


async def stop_experiment(request: web.Request) -> web.Response:
    experiment_id = path_id(request)
    body = await read_optional_body(request, StopBody)
    view = await asyncio.to_thread(_stop, request.app[ENGINE], experiment_id, body.reason)
    log.info("experiment stopped", extra={"experiment_id": view.id, "via": "http"})
    _announce(request, view, "stop", body.reason)
    return web.json_response(view.to_dict())


def _announce(
    request: web.Request, view: store.ExperimentView, action: str, reason: str | None
) -> None:
    """The `experiment.action` webhook, once the change is committed."""
    sender = request.app[WEBHOOKS]
    if sender is not None:
        event = approvals.action_event(view, action, actor=HTTP_ACTOR, reason=reason)
        sender.publish(EXPERIMENT_ACTION, event)


async def _decision(
    request: web.Request,
    model: type[approvals.DecisionBody] | type[approvals.PromoteBody],
    act: Callable[..., store.ExperimentView],
    action: str,
) -> web.Response:
    """Read the body, then `act(session, id, body, actor=, now=)` in one transaction."""
    experiment_id = path_id(request)
    body = await read_body(request, model)
    engine = request.app[ENGINE]

    def work() -> store.ExperimentView:
        with session_factory(engine).begin() as session:
            return act(session, experiment_id, body, actor=HTTP_ACTOR, now=utcnow())

    view = await asyncio.to_thread(work)
    request.app[STATS].add("experimentsCompleted")
    log.info(
        f"experiment: {action}",
        extra={"experiment_id": view.id, "winner_version": view.winner_version, "via": "http"},
    )
    _announce(request, view, action, body.reason)
    return web.json_response(view.to_dict())


async def approve_experiment(request: web.Request) -> web.Response:
    return await _decision(request, approvals.DecisionBody, approvals.approve, "approve")


async def reject_experiment(request: web.Request) -> web.Response:
    return await _decision(request, approvals.DecisionBody, approvals.reject, "reject")


async def promote_arm(request: web.Request) -> web.Response:
    return await _decision(request, approvals.PromoteBody, approvals.promote, "promote")


_EXPERIMENT = Reply("the experiment with its latest analysis", out.Experiment)
_NO_EXPERIMENT = Reply("no experiment with this id")
ENDPOINTS = (
    Endpoint(
        "POST",
        "/experiments",
        create_experiment,
        "Start an experiment",
        auth="admin",
        body=NewExperiment,
        description="The prompt's active version is the control; each variant must be "
        "a candidate. An unknown prompt, a version that does not exist or is "
        "not a candidate, and any bad setting get 400 naming the field.",
        replies={
            201: Reply("the experiment", out.Experiment, headers=("Location",)),
            409: Reply("the prompt has no active version, or a live experiment"),
        },
    ),
    Endpoint(
        "GET",
        "/experiments",
        list_experiments,
        "List experiments",
        auth="admin",
        query=ExperimentListQuery,
        replies={200: Reply("experiments, newest first", out.ExperimentList)},
    ),
    Endpoint(
        "GET",
        "/experiments/{id}",
        get_experiment,
        "One experiment",
        auth="admin",
        replies={200: _EXPERIMENT, 404: _NO_EXPERIMENT},
    ),
    Endpoint(
        "GET",
        "/experiments/{id}/analyses",
        list_analyses,
        "An experiment's checks",
        auth="admin",
        query=AnalysisListQuery,
        description="Every stored monitoring check of the experiment with its figures "
        "(the `statistics` document: per arm and metric the estimates and always-valid "
        "intervals, guardrails, sample-ratio test, sums), oldest first, in pages: pass "
        "`next_after` as `after` for the next one.",
        replies={200: Reply("a page of checks", out.AnalysisPage), 404: _NO_EXPERIMENT},
    ),
    Endpoint(
        "POST",
        "/experiments/{id}/stop",
        stop_experiment,
        "Stop an experiment",
        auth="admin",
        body=StopBody,
        body_required=False,
        description="Stops a live (running, paused or awaiting_approval) experiment; the "
        "control version stays active. The body is optional.",
        replies={
            200: _EXPERIMENT,
            404: _NO_EXPERIMENT,
            409: Reply("the experiment has ended already"),
        },
    ),
    Endpoint(
        "POST",
        "/experiments/{id}/approve",
        approve_experiment,
        "Approve the proposed winner",
        auth="admin",
        body=approvals.DecisionBody,
        description="For an experiment awaiting approval (promotion mode approve): the "
        "winner its check proposed (`winner_version`) becomes the active version, "
        "recorded in the prompt's activations with the actor and the reason; the "
        "experiment completes and its other variants are retired.",
        replies={
            200: _EXPERIMENT,
            404: _NO_EXPERIMENT,
            409: Reply("the experiment is not awaiting approval"),
        },
    ),
    Endpoint(
        "POST",
        "/experiments/{id}/reject",
        reject_experiment,
        "Reject the proposed winner",
        auth="admin",
        body=approvals.DecisionBody,
        description="For an experiment awaiting approval: the control version stays "
        "active; the experiment completes with the reason and its variants are retired.",
        replies={
            200: _EXPERIMENT,
            404: _NO_EXPERIMENT,
            409: Reply("the experiment is not awaiting approval"),
        },
    ),
    Endpoint(
        "POST",
        "/experiments/{id}/promote",
        promote_arm,
        "Promote an arm by hand",
        auth="admin",
        body=approvals.PromoteBody,
        description="For a live experiment (running, paused or awaiting approval): the "
        "variant arm named by `arm` (its id) or `version` (its version number), exactly "
        "one of them, becomes the active version, recorded in the prompt's activations "
        "with the actor and the reason; the experiment completes and its other variants "
        "are retired. An arm that is not the experiment's, or is its control, is a 400 "
        "naming the field.",
        replies={
            200: _EXPERIMENT,
            404: _NO_EXPERIMENT,
            409: Reply("the experiment has ended, or the arm was stopped"),
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
