"""Admin job API: POST /jobs, GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from models.jobs import JOB_STATUSES
from optimizer.clock import utcnow
from optimizer.errors import InvalidInput
from optimizer.http.auth import admin_only
from optimizer.http.body import path_id, query_int, read_json_object, reject_unknown
from optimizer.http.keys import ENGINE, SETTINGS
from optimizer.runtime import queue
from optimizer.runtime.job_input import NewJob, parse_job_type, parse_new_job

log = logging.getLogger("prompt_worker.http.jobs")

NEW_JOB_FIELDS = ("type", "prompt", "payload", "priority", "run_at")
LIST_PARAMS = ("status", "type", "limit")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500

def new_job_from_body(body: dict[str, Any]) -> NewJob:
    return parse_new_job(body.get("type"), prompt=body.get("prompt"),
                         payload=body.get("payload"), priority=body.get("priority"),
                         run_at=body.get("run_at"))


@admin_only
async def create_job(request: web.Request) -> web.Response:
    body = await read_json_object(request, NEW_JOB_FIELDS)
    new_job = new_job_from_body(body)
    engine, settings = request.app[ENGINE], request.app[SETTINGS]
    job, _ = await asyncio.to_thread(queue.enqueue, engine, new_job,
                                     max_attempts=settings.max_attempts, now=utcnow())
    log.info("job created", extra={"job_id": job.id, "type": job.type, "via": "http"})
    return web.json_response(job.to_dict(), status=201,
                             headers={"Location": f"/jobs/{job.id}"})


def _list_filters(request: web.Request) -> dict[str, Any]:
    query = request.query
    reject_unknown(query.keys(), LIST_PARAMS, what="query parameter")
    status = query.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(JOB_STATUSES)}; got {status!r}",
                           field="status")
    job_type = query.get("type")
    return {
        "status": status,
        "job_type": parse_job_type(job_type) if job_type is not None else None,
        "limit": query_int(query, "limit", default=DEFAULT_LIMIT, minimum=1,
                           maximum=MAX_LIMIT),
    }


@admin_only
async def list_jobs(request: web.Request) -> web.Response:
    filters = _list_filters(request)
    jobs = await asyncio.to_thread(queue.list_jobs, request.app[ENGINE], **filters)
    return web.json_response({"jobs": [job.to_dict() for job in jobs]})


@admin_only
async def get_job(request: web.Request) -> web.Response:
    job_id = path_id(request)
    job = await asyncio.to_thread(queue.get_job, request.app[ENGINE], job_id)
    return web.json_response(job.to_dict())


@admin_only
async def cancel_job(request: web.Request) -> web.Response:
    job_id = path_id(request)
    job = await asyncio.to_thread(queue.cancel, request.app[ENGINE], job_id, now=utcnow())
    log.info("job cancel requested", extra={"job_id": job.id, "status": job.status,
                                            "via": "http"})
    return web.json_response(job.to_dict())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/jobs", create_job)
    app.router.add_get("/jobs", list_jobs)
    app.router.add_get("/jobs/{id}", get_job)
    app.router.add_post("/jobs/{id}/cancel", cancel_job)
