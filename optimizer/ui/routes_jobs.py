"""The jobs pages: /ui/jobs (filters, keyset pages), /ui/jobs/{id}, the cancel action, the
add-a-job form (checked exactly as POST /jobs checks its body), and
/ui/jobs/live, the JSON that static/jobs.js polls to move progress bars without a reload.

Every read goes through runtime.queue; the queue's functions take an engine, so the pages
pass them the read-only one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from yarl import URL

from models.jobs import JOB_STATUSES
from optimizer import db, prompts
from optimizer.clock import utcnow
from optimizer.errors import InvalidInput
from optimizer.http.body import body_as
from optimizer.http.errors import json_error
from optimizer.http.keys import ENGINE, SETTINGS
from optimizer.http.requests import NewJobBody
from optimizer.jobs.registry import JOB_TYPES, SPECS, max_attempts
from optimizer.runtime import queue
from optimizer.runtime.job_input import MAX_PRIORITY, MIN_PRIORITY, parse_job_type
from optimizer.status import excerpt
from optimizer.text_input import parse_id, shown
from optimizer.ui import web as ui_web

log = logging.getLogger("prompt_worker.ui.jobs")

PAGE_SIZE = 50
MAX_LIVE_IDS = 100
ERROR_EXCERPT_CHARS = 120
# Rows the page keeps polling: their status or progress can still change.
UNFINISHED = ("pending", "running")
FORM_FIELDS = ("type", "prompt", "payload", "priority", "run_at")


# --- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilters:
    status: str | None = None
    type: str | None = None
    before: int | None = None

    def url(self, **change: Any) -> str:
        """/ui/jobs with these filters (and `change` applied), empty ones left out."""
        values = {"status": self.status, "type": self.type, "before": self.before, **change}
        return str(URL("/ui/jobs").with_query({k: str(v) for k, v in values.items() if v}))


def _given(query: Mapping[str, str], name: str) -> str | None:
    """A query parameter, None when absent or blank (an empty filter select sends "")."""
    raw = query.get(name, "").strip()
    return raw or None


def parse_status(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw not in JOB_STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(JOB_STATUSES)}; got {shown(raw)}", field="status"
        )
    return raw


def parse_filters(query: Mapping[str, str]) -> JobFilters:
    job_type = _given(query, "type")
    before = _given(query, "before")
    return JobFilters(
        status=parse_status(_given(query, "status")),
        type=parse_job_type(job_type) if job_type is not None else None,
        before=parse_id(before, "before") if before is not None else None,
    )


def parse_live_ids(raw: str | None) -> list[int]:
    """`ids=1,2,3`: 1 to MAX_LIVE_IDS positive ids."""
    parts = [p for p in (raw or "").split(",") if p.strip()]
    if not parts:
        raise InvalidInput("ids must list job ids separated by commas, e.g. ids=1,2,3", "ids")
    if len(parts) > MAX_LIVE_IDS:
        raise InvalidInput(f"ids may list at most {MAX_LIVE_IDS} jobs; got {len(parts)}", "ids")
    return [parse_id(p, "ids") for p in parts]


def form_values(fields: Mapping[str, str]) -> dict[str, str]:
    """The add-a-job form's fields as entered (kept when the form is shown again)."""
    return {name: fields.get(name, "") for name in FORM_FIELDS}


def new_job_from_form(values: Mapping[str, str]) -> queue.NewJob:
    """The check POST /jobs makes of its body, so the messages are the same word for word;
    a blank field counts as not sent."""
    sent = {name: value for name, value in values.items() if value.strip()}
    return body_as(NewJobBody, sent).new_job()


def error_field(field: str | None) -> str:
    """The form field an InvalidInput belongs to: `payload.n` is shown by the payload box,
    an error without a field above the form."""
    name = (field or "").split(".", 1)[0]
    return name if name in FORM_FIELDS else "form"


# --- what the pages show ---------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    job: queue.Job
    prompt: str | None  # the payload's "prompt", when it names one
    payload: Any  # decoded when the column holds valid JSON, else the text
    error_excerpt: str | None
    cancellable: bool


def job_row(job: queue.Job) -> JobRow:
    payload = job.to_dict()["payload"]
    prompt = payload.get("prompt") if isinstance(payload, dict) else None
    return JobRow(
        job=job,
        prompt=prompt if isinstance(prompt, str) and prompt else None,
        payload=payload,
        error_excerpt=excerpt(job.error, ERROR_EXCERPT_CHARS),
        cancellable=cancellable(job),
    )


def cancellable(job: queue.Job) -> bool:
    """What queue.cancel accepts, less a running job already asked to stop."""
    return job.status == "pending" or (job.status == "running" and not job.cancel_requested)


def pretty(value: Any) -> str:
    """A decoded payload or result as indented JSON; text that was not JSON as it is."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def live_entry(job: queue.Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "step": job.current_step,
        "cancel_requested": job.cancel_requested,
    }


def jobs_context(engine: Engine, filters: JobFilters) -> dict[str, object]:
    # One row past the page tells whether there is a next one.
    jobs = queue.list_jobs(
        engine,
        status=filters.status,
        job_type=filters.type,
        limit=PAGE_SIZE + 1,
        before_id=filters.before,
    )
    shown_jobs = jobs[:PAGE_SIZE]
    more = len(jobs) > PAGE_SIZE
    counts = queue.count_by_status(engine)
    return {
        "rows": [job_row(job) for job in shown_jobs],
        "filters": filters,
        "statuses": JOB_STATUSES,
        "types": JOB_TYPES,
        "counts": {status: counts.get(status, 0) for status in JOB_STATUSES},
        "total": sum(counts.values()),
        "next_url": filters.url(before=shown_jobs[-1].id) if more else None,
        "polling": any(job.status in UNFINISHED for job in shown_jobs),
    }


def job_context(engine: Engine, job_id: int) -> dict[str, object]:
    job = queue.get_job(engine, job_id)
    row = job_row(job)
    result = job.to_dict()["result"]
    return {
        "row": row,
        "job": job,
        "payload_text": pretty(row.payload),
        "result_text": pretty(result) if result is not None else None,
        "polling": job.status in UNFINISHED,
    }


def new_job_context(
    session: Session, values: Mapping[str, str], errors: Mapping[str, str]
) -> dict[str, object]:
    return {
        "values": values,
        "errors": errors,
        "types": [
            (name, spec.summary, {k: f.description for k, f in spec.payload.model_fields.items()})
            for name, spec in SPECS.items()
        ],
        "prompt_names": [summary.name for summary in prompts.prompt_summaries(session)],
        "min_priority": MIN_PRIORITY,
        "max_priority": MAX_PRIORITY,
    }


# --- handlers --------------------------------------------------------------------------


def _reader(request: web.Request) -> Engine:
    return db.read_only(request.config_dict[ENGINE])


async def jobs_page(request: web.Request) -> web.Response:
    filters = parse_filters(request.query)
    reader = _reader(request)
    return await ui_web.page(
        request, "jobs.html", lambda _s: jobs_context(reader, filters), section="jobs"
    )


async def job_page(request: web.Request) -> web.Response:
    job_id = parse_id(request.match_info["id"], "id")
    reader = _reader(request)
    return await ui_web.page(
        request, "job.html", lambda _s: job_context(reader, job_id), section="jobs"
    )


async def cancel(request: web.Request) -> web.Response:
    job_id = parse_id(request.match_info["id"], "id")

    def work(engine: Engine) -> None:
        # Raises NotFound (404 page) or Conflict (409 page: it has finished meanwhile).
        job = queue.cancel(engine, job_id, now=utcnow())
        log.info(
            "job cancel requested",
            extra={"job_id": job.id, "status": job.status, "via": "ui", "actor": ui_web.ACTOR},
        )

    return await ui_web.act(request, work, done=f"/ui/jobs/{job_id}", notice="job-cancelled")


async def live(request: web.Request) -> web.Response:
    """JSON for static/jobs.js; a bad `ids` is a JSON 400 (the script reads JSON)."""
    try:
        ids = parse_live_ids(request.query.get("ids"))
    except InvalidInput as exc:
        return json_error(400, str(exc), exc.field)
    jobs = await asyncio.to_thread(queue.get_jobs, _reader(request), ids)
    return web.json_response({"jobs": [live_entry(job) for job in jobs]})


async def new_job_form(request: web.Request) -> web.Response:
    values = form_values({"type": request.query.get("type", ""), "priority": "0"})
    return await ui_web.page(
        request,
        "job_new.html",
        lambda session: new_job_context(session, values, {}),
        section="jobs",
    )


async def add_job(request: web.Request) -> web.Response:
    values = form_values(await ui_web.form(request))
    try:
        new_job = new_job_from_form(values)
    except InvalidInput as exc:
        errors = {error_field(exc.field): str(exc)}
        return await ui_web.page(
            request,
            "job_new.html",
            lambda session: new_job_context(session, values, errors),
            section="jobs",
            status=400,
        )
    engine, settings = request.config_dict[ENGINE], request.config_dict[SETTINGS]
    # Not web.act: where to go next depends on the id the insert returns.
    job, _ = await asyncio.to_thread(
        queue.enqueue,
        engine,
        new_job,
        max_attempts=max_attempts(new_job.type, settings),
        now=utcnow(),
    )
    log.info(
        "job created",
        extra={"job_id": job.id, "type": job.type, "via": "ui", "actor": ui_web.ACTOR},
    )
    return ui_web.see_other(ui_web.with_notice(f"/ui/jobs/{job.id}", "job-added"))


def add_routes(ui: web.Application) -> None:
    ui.router.add_get("/jobs", jobs_page)
    # Before /jobs/{id}: "live" and "new" are not ids.
    ui.router.add_get("/jobs/live", live)
    ui.router.add_get("/jobs/new", new_job_form)
    ui.router.add_post("/jobs/new", add_job)
    ui.router.add_get("/jobs/{id}", job_page)
    ui.router.add_post("/jobs/{id}/cancel", cancel)
