"""Admin job API: POST /jobs, GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from optimizer.clock import utcnow
from optimizer.http import responses as out
from optimizer.http.body import path_id, read_body, read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.keys import ENGINE, SETTINGS
from optimizer.http.requests import JobListQuery, NewJobBody
from optimizer.jobs import registry
from optimizer.runtime import queue

log = logging.getLogger("prompt_worker.http.jobs")

NEW_JOB_FIELDS = tuple(NewJobBody.model_fields)
LIST_PARAMS = tuple(JobListQuery.model_fields)


async def create_job(request: web.Request) -> web.Response:
    new_job = (await read_body(request, NewJobBody)).new_job()
    engine, settings = request.app[ENGINE], request.app[SETTINGS]
    job, _ = await asyncio.to_thread(
        queue.enqueue,
        engine,
        new_job,
        max_attempts=registry.max_attempts(new_job.type, settings),
        now=utcnow(),
    )
    log.info("job created", extra={"job_id": job.id, "type": job.type, "via": "http"})
    return web.json_response(job.to_dict(), status=201, headers={"Location": f"/jobs/{job.id}"})


async def list_jobs(request: web.Request) -> web.Response:
    query = read_query(request, JobListQuery)
    jobs = await asyncio.to_thread(
        queue.list_jobs,
        request.app[ENGINE],
        status=query.status,
        job_type=query.type,
        limit=query.limit,
    )
    return web.json_response({"jobs": [job.to_dict() for job in jobs]})


async def get_job(request: web.Request) -> web.Response:
    job_id = path_id(request)
    job = await asyncio.to_thread(queue.get_job, request.app[ENGINE], job_id)
    return web.json_response(job.to_dict())


async def cancel_job(request: web.Request) -> web.Response:
    job_id = path_id(request)
    job = await asyncio.to_thread(queue.cancel, request.app[ENGINE], job_id, now=utcnow())
    log.info("job cancel requested", extra={"job_id": job.id, "status": job.status, "via": "http"})
    return web.json_response(job.to_dict())


_JOB = Reply("the job", out.Job)
_NO_JOB = Reply("no job with this id")
ENDPOINTS = (
    Endpoint(
        "POST",
        "/jobs",
        create_job,
        "Add a job",
        auth="admin",
        body=NewJobBody,
        replies={201: Reply("the job as stored", out.Job, headers=("Location",))},
        description="The payload is checked against the job type's payload model "
        "before anything is stored.",
    ),
    Endpoint(
        "GET",
        "/jobs",
        list_jobs,
        "List jobs",
        auth="admin",
        query=JobListQuery,
        replies={200: Reply("jobs, newest first", out.JobList)},
    ),
    Endpoint(
        "GET", "/jobs/{id}", get_job, "One job", auth="admin", replies={200: _JOB, 404: _NO_JOB}
    ),
    Endpoint(
        "POST",
        "/jobs/{id}/cancel",
        cancel_job,
        "Cancel a job",
        auth="admin",
        body=None,
        replies={
            200: Reply(
                "the job: cancelled at once if it was pending; "
                "a running one keeps status running with "
                "cancel_requested true until its worker stops it",
                out.Job,
            ),
            404: _NO_JOB,
            409: Reply("the job has already finished"),
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
