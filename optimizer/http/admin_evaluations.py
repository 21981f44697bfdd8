"""Admin evaluation API: GET /prompts/{name}/versions/{version}/evaluations: a version's
replay summary and its evaluations, newest first, a keyset page at a time.

Read-only. A bad parameter answers 400 naming it; an unknown prompt or version 404.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from sqlalchemy.engine import Engine

from models.evaluations import SAMPLES, VERDICTS
from models.prompts import VERSION_STATUSES
from optimizer import evaluations
from optimizer.db import read_only, session_factory
from optimizer.http.body import read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.keys import ENGINE
from optimizer.http.requests import Limit, Query
from optimizer.http.responses import Answer
from optimizer.input_models import one_of, rule
from optimizer.prompt_text import validate_name
from optimizer.prompts import MAX_VERSION, validate_version_number
from optimizer.text_input import MAX_ID, parse_id, parse_whole

VERSION_USAGE = "a version number (a positive whole number)"


def _enum(values: tuple[str, ...]) -> Any:
    return WithJsonSchema({"type": "string", "enum": list(values)})


class EvaluationListQuery(Query):
    sample: Annotated[str, AfterValidator(one_of(SAMPLES)), _enum(SAMPLES)] | None = Field(
        None, description="only evaluations on this sample"
    )
    before: Annotated[int, BeforeValidator(rule(lambda raw: parse_id(raw, "before")))] | None = (
        Field(
            None,
            ge=1,
            le=MAX_ID,
            description="only evaluations with a smaller id: the `next_before` of the last page",
        )
    )
    limit: Limit = Field(
        evaluations.DEFAULT_LIMIT,
        ge=1,
        le=evaluations.MAX_LIMIT,
        description=f"at most this many (default {evaluations.DEFAULT_LIMIT})",
    )


LIST_PARAMS = tuple(EvaluationListQuery.model_fields)


# --- the answer, for the OpenAPI document ------------------------------------------------------


def _one_of(values: tuple[str, ...]) -> Any:
    return Field(json_schema_extra={"enum": list(values)})


class WinRate(Answer):
    """Mean score (1: the candidate preferred in both orders, 0: the control, 0.5 anything
    else) with its Wilson interval; rate, low and high are null when n is 0."""

    n: int
    wins: int
    ties: int
    losses: int
    rate: float | None
    low: float | None
    high: float | None
    confidence: float
    error: str | None = Field(description='"empty" when nothing was judged')


class ReplaySummary(Answer):
    version: int
    status: str = _one_of(VERSION_STATUSES)
    status_reason: str | None = Field(description="why it has its status (a rejection's figures)")
    control_version: int | None = Field(
        description="the version it was judged against (the control of its newest evaluation)"
    )
    evaluations: int = Field(description="evaluations against that control")
    failing: WinRate = Field(description="on conversations where the control failed")
    holdout: WinRate = Field(description="on held-out conversations where it succeeded")
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    replayed_at: datetime | None


class Evaluation(Answer):
    id: int
    sample: str = _one_of(SAMPLES)
    segment: str | None
    conversation_id: int | None = Field(description="null once retention deleted it")
    control_version: int | None
    candidate_answers: list[str] = Field(description="one answer per replayed user turn")
    control_answers: list[str]
    verdict_candidate_first: str = _one_of(VERDICTS)
    verdict_control_first: str = _one_of(VERDICTS)
    reason_candidate_first: str | None
    reason_control_first: str | None
    score: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    job_id: int | None
    created_at: datetime | None


class EvaluationPage(Answer):
    prompt: str
    version: int
    summary: ReplaySummary
    evaluations: list[Evaluation] = Field(description="newest first")
    next_before: int | None = Field(
        description="pass as `before` for the next page; null when this page is the last"
    )


# --- the route -----------------------------------------------------------------------------


def parse_version(raw: str) -> int:
    number = parse_whole(raw, "version", 1, MAX_VERSION, what=VERSION_USAGE)
    return validate_version_number(number)


def _read(engine: Engine, name: str, number: int, query: EvaluationListQuery) -> dict[str, Any]:
    with session_factory(read_only(engine))() as session:
        summary, page = evaluations.replay_of(
            session, name, number, sample=query.sample, before_id=query.before, limit=query.limit
        )
    return evaluations.page_document(name, summary, page)


async def list_evaluations(request: web.Request) -> web.Response:
    name = validate_name(request.match_info["name"])
    number = parse_version(request.match_info["version"])
    query = read_query(request, EvaluationListQuery)
    document = await asyncio.to_thread(_read, request.app[ENGINE], name, number, query)
    return web.json_response(document)


ENDPOINTS = (
    Endpoint(
        "GET",
        "/prompts/{name}/versions/{version}/evaluations",
        list_evaluations,
        "A version's replay evaluations",
        auth="admin",
        query=EvaluationListQuery,
        description="The version's replay summary (win rates on the failing and held-out "
        "samples with their intervals, counts, tokens, cost, status and its reason) and its "
        "evaluations, newest first: both prompts' answers and the judge's verdict and "
        "reason in both orders.",
        replies={
            200: Reply("the summary and a page of evaluations", EvaluationPage),
            404: Reply("no such prompt or version"),
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
