"""The dashboard's jobs pages through the real app on SQLite and PostgreSQL: the list with
its filters and keyset pages, a job's page with its error in full, the cancel action, the
JSON that static/jobs.js polls, and the add-a-job form, whose messages are those of
POST /jobs for the same input."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.jobs.registry import JOB_TYPES, max_attempts
from optimizer.runtime import queue
from tests.support.http_client import ADMIN_TOKEN, TEST_SETTINGS, ClientMaker
from tests.support.ui_client import (
    SEEDS,
    csrf_of,
    html_of,
    logged_in,
    query_count,
    seeded_client,
    session_cookie,
    signed_in,
)
from tests.support.ui_seed import LONG_ERROR, SCRIPT, Seeded

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROW = re.compile(r'<tr data-job-id="(\d+)" data-status="(\w+)">')
FIELD_ERROR = re.compile(r'<p class="field-error" id="error-([a-z_]+)">(.*?)</p>', re.S)
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')


def job(engine: Engine, job_id: int) -> queue.Job:
    return queue.get_job(engine, job_id)


def rows(text: str) -> list[tuple[int, str]]:
    return [(int(i), s) for i, s in ROW.findall(text)]


# --- the list ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", list(SEEDS))
async def test_jobs_page_on_each_seed(engine: Engine, make_client: ClientMaker, seed: str) -> None:
    client, seeded = await seeded_client(make_client, engine, seed)
    text = await html_of(client, "/ui/jobs")
    assert "<h1>Jobs</h1>" in text
    if seeded.pending_job_id is None:
        assert "No jobs yet - the scheduler adds them" in text
        assert rows(text) == [] and "jobs.js" not in text
        return
    listed = dict(rows(text))
    assert listed[seeded.pending_job_id] == "pending"
    assert listed[seeded.running_job_id] == "running"  # type: ignore[index]
    assert listed[seeded.failed_job_id] == "failed"  # type: ignore[index]
    assert list(listed) == sorted(listed, reverse=True)  # newest first
    # The running job: its bar and its step; the page polls while it runs.
    assert '<progress max="100" value="40">40%</progress>' in text
    assert "scanning conversations: 4,000 of 10,000" in text
    assert '<script src="/ui/static/jobs.js" defer></script>' in text
    # The failed job's error is cut short in the list, with a link to the whole of it.
    assert f'<a href="/ui/jobs/{seeded.failed_job_id}#error">full error</a>' in text
    assert LONG_ERROR.splitlines()[-1].strip() not in html.unescape(text)
    assert SCRIPT not in text
    # Cancel buttons for the pending and the running job only.
    cancels = {int(i) for i in re.findall(r'action="/ui/jobs/(\d+)/cancel"', text)}
    assert cancels == {seeded.pending_job_id, seeded.running_job_id}


async def test_filters_by_status_and_type(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine)
    failed = await html_of(client, "/ui/jobs?status=failed")
    assert rows(failed) == [(seeded.failed_job_id, "failed")]
    assert '<option value="failed" selected>' in failed
    monitoring = rows(await html_of(client, "/ui/jobs?type=experiment_monitoring&status="))
    assert len(monitoring) == seeded.checks and {s for _, s in monitoring} == {"completed"}
    both = await html_of(client, "/ui/jobs?type=pattern_analysis&status=running")
    assert rows(both) == [(seeded.running_job_id, "running")]
    nothing = await html_of(client, "/ui/jobs?type=full_cycle")
    assert "No jobs match these filters." in nothing


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("status=done", "status", "status must be one of pending, running"),
        ("status=%3Cscript%3E", "status", "got &#39;&lt;script&gt;&#39;"),
        ("type=cleanup", "type", "type must be one of pattern_analysis"),
        ("before=0", "before", "before must be a positive whole number"),
        ("before=abc", "before", "before must be a positive whole number; got &#39;abc&#39;"),
        ("before=99999999999999999999999", "before", "before must be a positive whole number"),
    ],
)
async def test_bad_filters_are_a_400_page_naming_them(
    engine: Engine, make_client: ClientMaker, query: str, field: str, words: str
) -> None:
    client, _ = await seeded_client(make_client, engine, "empty")
    text = await html_of(client, f"/ui/jobs?{query}", 400)
    assert words in text
    assert f"<code>{field}</code>" in text


async def test_keyset_pages_list_every_job_once(engine: Engine, make_client: ClientMaker) -> None:
    client, _ = await seeded_client(make_client, engine, "empty")
    now = utcnow()

    def add(n: int) -> None:
        for k in range(n):
            queue.enqueue(
                engine,
                queue.NewJob("pattern_analysis", {"scope": f"p{k}"}),
                max_attempts=3,
                now=now,
            )

    await asyncio.to_thread(add, 123)
    seen: list[int] = []
    path: str | None = "/ui/jobs?type=pattern_analysis"
    sizes = []
    while path is not None:
        text = await html_of(client, html.unescape(path))
        listed = [i for i, _ in rows(text)]
        sizes.append(len(listed))
        seen += listed
        found = NEXT.search(text)
        path = found.group(1) if found else None
        if path is not None:
            assert "type=pattern_analysis" in path  # the filter stays on the next pages
    assert sizes == [50, 50, 23]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 123


# --- one job -----------------------------------------------------------------------------


async def test_a_jobs_page_shows_its_error_in_full_and_escaped(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    # Not html_of: the stored error holds a traceback, which this page is to show.
    answer = await client.get(f"/ui/jobs/{seeded.failed_job_id}")
    text = await answer.text()
    assert answer.status == 200 and answer.content_type == "text/html", text
    error = re.search(r'<pre class="job-error">(.*?)</pre>', text, re.S)
    assert error and html.unescape(error.group(1)) == LONG_ERROR  # every line, as stored
    assert SCRIPT not in text and str(escape(SCRIPT)) in text
    assert "variant_generation" in text and "3 of 3" in text
    assert '"n": 3' in html.unescape(text)  # the payload, indented JSON
    assert "/cancel" not in text  # a failed job has no cancel button
    running = await html_of(client, f"/ui/jobs/{seeded.running_job_id}")
    assert f'data-job-id="{seeded.running_job_id}" data-status="running"' in running
    assert f'action="/ui/jobs/{seeded.running_job_id}/cancel"' in running
    assert "jobs.js" in running


@pytest.mark.parametrize(("path", "status"), [("/ui/jobs/424242", 404), ("/ui/jobs/x1", 400)])
async def test_an_unknown_or_bad_job_id(
    engine: Engine, make_client: ClientMaker, path: str, status: int
) -> None:
    client, _ = await seeded_client(make_client, engine, "empty")
    text = await html_of(client, path, status)
    assert ("job 424242 does not exist" in text) if status == 404 else ("<code>id</code>" in text)


# --- cancel ------------------------------------------------------------------------------


async def test_cancel_a_pending_and_a_running_job(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine)
    csrf = csrf_of(client)
    pending, running = seeded.pending_job_id, seeded.running_job_id
    assert pending is not None and running is not None
    answer = await client.post(
        f"/ui/jobs/{pending}/cancel", data={"csrf": csrf}, allow_redirects=False
    )
    assert answer.status == 303
    assert answer.headers["Location"] == f"/ui/jobs/{pending}?notice=job-cancelled"
    assert (await asyncio.to_thread(job, engine, pending)).status == "cancelled"
    shown = await html_of(client, answer.headers["Location"])
    assert "The job has been cancelled" in shown
    answer = await client.post(
        f"/ui/jobs/{running}/cancel", data={"csrf": csrf}, allow_redirects=False
    )
    assert answer.status == 303
    after = await asyncio.to_thread(job, engine, running)
    assert after.status == "running" and after.cancel_requested
    # Asked once: the button is gone, the status says so.
    text = await html_of(client, f"/ui/jobs/{running}")
    assert "cancel requested" in text and "/cancel" not in text


async def test_cancel_refusals(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine)
    csrf = csrf_of(client)
    failed = seeded.failed_job_id
    finished = await client.post(f"/ui/jobs/{failed}/cancel", data={"csrf": csrf})
    assert finished.status == 409
    assert f"job {failed} is already failed" in await finished.text()
    missing = await client.post("/ui/jobs/424242/cancel", data={"csrf": csrf})
    assert missing.status == 404
    forged = await client.post(f"/ui/jobs/{seeded.pending_job_id}/cancel", data={})
    assert forged.status == 403 and "CSRF" in await forged.text()
    assert (await asyncio.to_thread(job, engine, seeded.pending_job_id)).status == "pending"  # type: ignore[arg-type]


# --- live progress -----------------------------------------------------------------------


async def test_live_gives_status_progress_and_step(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    ids = f"{seeded.running_job_id},{seeded.pending_job_id},424242,{seeded.running_job_id}"
    answer = await client.get(f"/ui/jobs/live?ids={ids}")
    assert answer.status == 200 and answer.content_type == "application/json"
    body = await answer.json()
    by_id = {entry["id"]: entry for entry in body["jobs"]}
    assert set(by_id) == {seeded.running_job_id, seeded.pending_job_id}  # unknown ids left out
    assert by_id[seeded.running_job_id] == {
        "id": seeded.running_job_id,
        "status": "running",
        "progress": 40,
        "step": "scanning conversations: 4,000 of 10,000",
        "cancel_requested": False,
    }
    assert by_id[seeded.pending_job_id]["step"] is None


@pytest.mark.parametrize(
    ("ids", "words"),
    [
        ("", "ids must list job ids"),
        ("1,x", "ids must be a positive whole number; got 'x'"),
        ("1,-2", "ids must be a positive whole number"),
        (",".join(str(i) for i in range(1, 102)), "ids may list at most 100 jobs; got 101"),
    ],
)
async def test_live_refuses_bad_ids_as_json(
    engine: Engine, make_client: ClientMaker, ids: str, words: str
) -> None:
    client, _ = await seeded_client(make_client, engine, "empty")
    answer = await client.get("/ui/jobs/live", params={"ids": ids})
    assert answer.status == 400 and answer.content_type == "application/json"
    body = await answer.json()
    assert body["field"] == "ids" and words in body["error"]


def test_jobs_js_is_small_plain_and_polls_the_live_route() -> None:
    script = (Path(__file__).parents[2] / "optimizer/ui/static/jobs.js").read_text()
    assert len(script.splitlines()) < 120
    assert "/ui/jobs/live?ids=" in script and "2000" in script
    assert "import " not in script and "innerHTML" not in script  # text only, no library


# --- add a job ---------------------------------------------------------------------------


async def test_the_form_lists_every_type_and_adds_a_job(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine, max_attempts=4)
    csrf = csrf_of(client)
    form = await html_of(client, "/ui/jobs/new")
    for job_type in JOB_TYPES:
        assert f'<option value="{job_type}">' in form
    assert f'<option value="{seeded.prompt_names[0]}">' in form  # the prompt names to pick
    answer = await client.post(
        "/ui/jobs/new",
        data={
            "csrf": csrf,
            "type": "variant_generation",
            "prompt": f" {seeded.prompt_names[0]} ",
            "payload": '{"n": 2, "model": "opus"}\r\n',
            "priority": "-7",
            "run_at": "2030-01-02T03:04:05",
        },
        allow_redirects=False,
    )
    assert answer.status == 303, await answer.text()
    location = answer.headers["Location"]
    found = re.fullmatch(r"/ui/jobs/(\d+)\?notice=job-added", location)
    assert found
    added = await asyncio.to_thread(job, engine, int(found.group(1)))
    assert added.type == "variant_generation" and added.status == "pending"
    assert json.loads(added.payload) == {"n": 2, "model": "opus", "prompt": seeded.prompt_names[0]}
    assert added.priority == -7
    assert added.run_after == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    settings_ = TEST_SETTINGS.model_copy(update={"max_attempts": 4})
    assert added.max_attempts == max_attempts("variant_generation", settings_)
    assert "The job has been added to the queue." in await html_of(client, location)


async def test_empty_fields_mean_the_defaults(engine: Engine, make_client: ClientMaker) -> None:
    client, _ = await seeded_client(make_client, engine, "empty")
    csrf = csrf_of(client)
    before = utcnow()
    answer = await client.post(
        "/ui/jobs/new",
        data={"csrf": csrf, "type": "experiment_monitoring", "payload": " ", "priority": ""},
        allow_redirects=False,
    )
    assert answer.status == 303, await answer.text()
    added = (await asyncio.to_thread(queue.list_jobs, engine))[0]
    assert json.loads(added.payload) == {} and added.priority == 0
    assert before - timedelta(seconds=1) <= added.run_after <= utcnow()


async def test_a_bad_payload_is_shown_by_its_field_with_the_values_kept(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, _ = await seeded_client(make_client, engine, "empty")
    csrf = csrf_of(client)
    payload = '{"prompt": "<script>x</script>", "n": 3}'
    answer = await client.post(
        "/ui/jobs/new",
        data={"csrf": csrf, "type": "full_cycle", "payload": payload, "priority": "4"},
    )
    text = await answer.text()
    assert answer.status == 400
    errors = dict(FIELD_ERROR.findall(text))
    assert set(errors) == {"payload"}
    assert "<script>x" not in text
    assert f">{escape(payload)}</textarea>" in text  # kept as entered
    assert 'name="priority" value="4"' in text
    assert '<option value="full_cycle" selected>' in text
    assert 'id="payload" name="payload" rows="6" spellcheck="false" aria-invalid="true"' in text
    assert await asyncio.to_thread(queue.list_jobs, engine) == []


FORM_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00\r"), max_size=20)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.fixed_dictionaries(
        {
            "type": st.sampled_from([*JOB_TYPES, "", "cleanup", "<b>x</b>"]) | FORM_TEXT,
            "prompt": st.sampled_from(["", "support-bot", "bad name!", "x" * 201]) | FORM_TEXT,
            "payload": st.sampled_from(
                [
                    "",
                    "{}",
                    "[1]",
                    "{",
                    '{"n": 0}',
                    '{"n": "two"}',
                    '{"x": 1}',
                    "NaN",
                    '{"a":1,"a":2}',
                ]
            )
            | FORM_TEXT,
            "priority": st.sampled_from(["", "0", "high", "1.5", "1001", "-1000", " 7 "])
            | FORM_TEXT,
            "run_at": st.sampled_from(["", "tomorrow", "2026-13-01", "2030-01-01T00:00:00Z"])
            | FORM_TEXT,
        }
    )
)
async def test_the_form_gives_the_message_post_jobs_gives(
    sqlite_engine: Engine, make_client: ClientMaker, values: Mapping[str, str]
) -> None:
    # Hypothesis runs the body once per example with the same fixtures: one client for all.
    client = make_client.clients[0] if make_client.clients else await make_client(sqlite_engine)
    if session_cookie(client) is None:
        await logged_in(client, ADMIN_TOKEN)
    api_body = {k: v for k, v in values.items() if v.strip()}  # the form: blank = not sent
    api = await client.post("/jobs", json=api_body, headers=AUTH)
    ui = await client.post("/ui/jobs/new", data={"csrf": csrf_of(client), **values})
    text = await ui.text()
    if api.status == 201:
        assert ui.status == 200 and "The job has been added" in text  # followed the 303
        return
    assert api.status == 400
    expected = await api.json()
    assert ui.status == 400, text
    shown_errors = {name: html.unescape(message) for name, message in FIELD_ERROR.findall(text)}
    field = expected["field"].split(".", 1)[0]
    assert shown_errors == {field: expected["error"]}


# --- read-only ---------------------------------------------------------------------------


async def test_read_only_hides_the_forms_and_refuses_the_posts(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine, ui_access="read-only")
    csrf = csrf_of(client)
    listing = await html_of(client, "/ui/jobs")
    assert "/cancel" not in listing and "/ui/jobs/new" not in listing
    detail = await html_of(client, f"/ui/jobs/{seeded.pending_job_id}")
    assert "/cancel" not in detail
    form = await html_of(client, "/ui/jobs/new")
    assert "read-only" in form and 'action="/ui/jobs/new"' not in form
    refused = await client.post(f"/ui/jobs/{seeded.pending_job_id}/cancel", data={"csrf": csrf})
    assert refused.status == 403 and "UI_ACCESS=read-only" in await refused.text()
    added = await client.post("/ui/jobs/new", data={"csrf": csrf, "type": "full_cycle"})
    assert added.status == 403
    assert (await asyncio.to_thread(job, engine, seeded.pending_job_id)).status == "pending"  # type: ignore[arg-type]
    assert len(await asyncio.to_thread(queue.list_jobs, engine, limit=500)) == 4 + seeded.checks


# --- queries -----------------------------------------------------------------------------


async def page_queries(client: TestClient, seeded: Seeded) -> dict[str, int]:
    paths = {
        "list": "/ui/jobs",
        "filtered": "/ui/jobs?status=completed&type=experiment_monitoring",
        "next page": f"/ui/jobs?before={seeded.pending_job_id}",
        "job": f"/ui/jobs/{seeded.failed_job_id}",
        "live": f"/ui/jobs/live?ids={seeded.running_job_id},{seeded.pending_job_id}",
        "form": "/ui/jobs/new",
    }
    return {name: await query_count(client, path) for name, path in paths.items()}


async def test_query_counts_do_not_grow_with_the_data_large_seed(
    large_seed: tuple[Engine, Seeded], sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    """SLOW: the large seed (the module fixture, SQLite only)."""
    client, seeded = await seeded_client(make_client, sqlite_engine)
    small = await page_queries(client, seeded)
    large = await page_queries(await signed_in(make_client, large_seed[0]), large_seed[1])
    assert small == large
    # Lists at most 6, details at most 10 (the session lookup included).
    assert all(n <= 6 for n in small.values()), small
