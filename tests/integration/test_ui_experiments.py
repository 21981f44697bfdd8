"""The dashboard's experiment pages through the real app: the list (status and prompt
filters, keyset pages), the detail page (arms, the lift chart with one point per stored
check, guardrail charts, SRM, the decision timeline, latest figures), and the stop action
(CSRF, read-only mode, 404/409), on the seeds of tests/support/ui_seed.py; the large seed
(the module fixture `large_seed`, SQLite only) for pages and query counts at size.
"""

from __future__ import annotations

import re

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from yarl import URL

from models.experiments import EXPERIMENT_STATUSES, Experiment, ExperimentAnalysis
from optimizer.db import session_factory
from optimizer.errors import InvalidInput
from optimizer.ui.routes_experiments import parse_list_filters
from optimizer.ui.web import ACTOR
from tests.support.http_client import ClientMaker
from tests.support.ui_client import csrf_of, html_of, query_count, seeded_client, signed_in
from tests.support.ui_seed import SCRIPT, Seeded

ROW_IDS = re.compile(r'<th scope="row" class="num"><a href="/ui/experiments/(\d+)">')
LIFT_SVG = re.compile(r'<svg[^>]*class="chart chart-lift".*?</svg>', re.S)
POINT_IDS = re.compile(r'<circle class="point[^"]*"[^>]*data-analysis-id="(\d+)"')


async def _stop(client: TestClient, experiment_id: int, **fields: str) -> ClientResponse:
    """POST the stop form of `experiment_id` with the session's CSRF token (unless `fields`
    gives another) and `fields`; the answer, unfollowed."""
    return await client.post(
        f"/ui/experiments/{experiment_id}/stop",
        data={"csrf": csrf_of(client), **fields},
        allow_redirects=False,
    )


def _status_of(engine: Engine, experiment_id: int) -> tuple[str, str | None]:
    with session_factory(engine)() as session:
        row = session.get(Experiment, experiment_id)
        assert row is not None
        return row.status, row.decision_reason


def _analysis_ids(engine: Engine, experiment_id: int) -> list[int]:
    with session_factory(engine)() as session:
        return list(
            session.scalars(
                select(ExperimentAnalysis.id)
                .where(ExperimentAnalysis.experiment_id == experiment_id)
                .order_by(ExperimentAnalysis.id)
            )
        )


def _lift_points(page: str) -> list[int]:
    svg = LIFT_SVG.search(page)
    assert svg, "no lift chart on the page"
    return [int(i) for i in POINT_IDS.findall(svg.group(0))]


# --- list ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["empty", "one_version"])
async def test_the_list_without_experiments_says_so(
    engine: Engine, make_client: ClientMaker, seed: str
) -> None:
    client, _ = await seeded_client(make_client, engine, seed)
    page = await html_of(client, "/ui/experiments")
    assert "No experiments yet - start one" in page
    assert 'aria-current="page">Experiments' in page
    assert await query_count(client, "/ui/experiments") <= 6


async def test_the_list_shows_every_experiment_with_filters(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    page = await html_of(client, "/ui/experiments")
    ids = [int(i) for i in ROW_IDS.findall(page)]
    assert len(ids) == 4 and ids == sorted(ids, reverse=True)
    assert seeded.running_experiment_id in ids
    running = seeded.prompt_names[0]
    assert f'<a href="/ui/prompts/{running}">{running}</a>' in page
    for status in EXPERIMENT_STATUSES:
        assert f'href="/ui/experiments?status={status}"' in page
    assert "Next page" not in page

    only_running = await html_of(client, "/ui/experiments?status=running")
    assert [int(i) for i in ROW_IDS.findall(only_running)] == [seeded.running_experiment_id]
    assert 'class="active" aria-current="true">running' in only_running

    by_prompt = await html_of(client, f"/ui/experiments?prompt={running}&status=")
    shown = [int(i) for i in ROW_IDS.findall(by_prompt)]
    assert seeded.running_experiment_id in shown and len(shown) < 4
    assert f'value="{running}"' in by_prompt

    none = await html_of(client, "/ui/experiments?status=stopped&prompt=no-such-prompt")
    assert "No experiments stopped for prompt <code>no-such-prompt</code>" in none


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        (
            "status=finished",
            "status",
            "status must be one of running, paused, awaiting_approval, completed, stopped",
        ),
        ("before=abc", "before", "before must be a positive whole number"),
        ("before=0", "before", "before must be a positive whole number"),
        ("before=99999999999999999999999", "before", "before must be a positive whole number"),
        ("prompt=bad%20name!", "prompt", "prompt must be 1 to 200 characters"),
        ("prompt=%00", "prompt", "prompt contains a NUL character"),
        ("before=%00", "before", "before contains a NUL character"),
    ],
)
async def test_bad_list_parameters_are_400_pages_naming_them(
    engine: Engine, make_client: ClientMaker, query: str, field: str, message: str
) -> None:
    client = await signed_in(make_client, engine)
    page = await html_of(client, f"/ui/experiments?{query}", 400)
    assert message in page
    assert f"Field: <code>{field}</code>" in page


@given(
    st.dictionaries(
        st.sampled_from(["status", "prompt", "before", "notice", "x"]),
        st.text(max_size=30),
        max_size=4,
    )
)
def test_list_filters_parse_or_name_their_parameter(params: dict[str, str]) -> None:
    try:
        filters = parse_list_filters(MultiDict(params))
    except InvalidInput as exc:
        # status is otherwise checked by store.list_experiments (its message, before a read)
        assert exc.field in ("status", "prompt", "before") and exc.field in str(exc)
        return
    assert filters.status == (params.get("status") or None)
    # The URLs the page builds from them parse back to the same filters.
    again = parse_list_filters(URL(filters.url()).query)
    assert again == filters


@pytest.mark.parametrize(
    "query",
    [
        "status=&prompt=&before=",
        "prompt=%F0%9F%98%80",
        "before=%EF%BC%91",
        "notice=<script>",
        "a=1&a=2",
    ],
)
async def test_odd_query_strings_get_a_page_or_a_400(
    sqlite_engine: Engine, make_client: ClientMaker, query: str
) -> None:
    client = await signed_in(make_client, sqlite_engine)
    answer = await client.get(f"/ui/experiments?{query}", allow_redirects=False)
    assert answer.status in (200, 400), await answer.text()
    assert "text/html" in answer.headers["Content-Type"]
    assert "<script>" not in await answer.text()


async def test_large_list_pages_cover_every_experiment_once_in_constant_queries(
    large_seed: tuple[Engine, Seeded], make_client: ClientMaker
) -> None:
    engine, _ = large_seed
    client = await signed_in(make_client, engine)
    seen: list[int] = []
    path: str | None = "/ui/experiments"
    counts = set()
    while path is not None:
        page = await html_of(client, path)
        rows = [int(i) for i in ROW_IDS.findall(page)]
        assert 1 <= len(rows) <= 50
        seen += rows
        counts.add(await query_count(client, path))
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        path = found.group(1).replace("&amp;", "&") if found else None
    assert len(seen) == len(set(seen)) == 1000
    assert seen == sorted(seen, reverse=True)
    assert len(counts) == 1 and counts.pop() <= 6
    # A filter is kept across pages.
    paused = await html_of(client, "/ui/experiments?status=completed")
    assert "status=completed&amp;before=" in paused


async def test_list_and_detail_cost_the_same_queries_small_and_large(
    large_seed: tuple[Engine, Seeded], sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    small, small_seed = await seeded_client(make_client, sqlite_engine)
    large_engine, large_seed = large_seed
    big = await signed_in(make_client, large_engine)
    assert await query_count(small, "/ui/experiments") == await query_count(big, "/ui/experiments")
    small_detail = await query_count(small, f"/ui/experiments/{small_seed.checked_experiment_id}")
    big_detail = await query_count(big, f"/ui/experiments/{large_seed.checked_experiment_id}")
    assert small_detail == big_detail <= 10


# --- detail --------------------------------------------------------------------------------


async def test_the_detail_page_draws_every_check(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine)
    assert seeded.checked_experiment_id is not None
    page = await html_of(client, f"/ui/experiments/{seeded.checked_experiment_id}")
    stored = _analysis_ids(engine, seeded.checked_experiment_id)
    assert len(stored) == seeded.checks == 12
    points = _lift_points(page)
    # One point per arm that was compared at a check: every stored check is on the chart.
    assert sorted(set(points)) == stored
    assert "Lift in success against control" in page
    assert 'class="chart chart-guardrail' in page
    for heading in ("Arms", "Sample ratio", "Decisions", "Latest figures"):
        assert heading in page
    assert "stop_arms" in page  # the seed stops the worse arm three quarters through
    assert "Prob. beats control" in page and re.search(r"\d+\.\d%</td>", page)
    assert f'action="/ui/experiments/{seeded.checked_experiment_id}/stop"' in page
    assert 'name="csrf"' in page


async def test_every_check_of_the_large_seed_is_one_chart_point(
    large_seed: tuple[Engine, Seeded], make_client: ClientMaker
) -> None:
    engine, seeded = large_seed
    assert seeded.checked_experiment_id is not None
    client = await signed_in(make_client, engine)
    page = await html_of(client, f"/ui/experiments/{seeded.checked_experiment_id}")
    stored = _analysis_ids(engine, seeded.checked_experiment_id)
    assert len(stored) == 200
    assert sorted(set(_lift_points(page))) == stored
    # The timeline collapses runs of `continue` but keeps every other decision's reason.
    with session_factory(engine)() as session:
        reasons = session.scalars(
            select(ExperimentAnalysis.reason).where(
                ExperimentAnalysis.experiment_id == seeded.checked_experiment_id,
                ExperimentAnalysis.decision != "continue",
            )
        ).all()
    assert reasons
    for reason in reasons:
        assert reason.replace("'", "&#39;").replace('"', "&#34;") in page


async def test_a_finished_experiment_has_no_stop_form(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, _ = await seeded_client(make_client, engine)
    with session_factory(engine)() as session:
        finished = session.scalar(
            select(Experiment.id).where(Experiment.status.in_(("completed", "stopped")))
        )
    assert finished is not None
    page = await html_of(client, f"/ui/experiments/{finished}")
    assert "/stop" not in page
    assert "Outcome" in page


async def test_an_experiment_without_checks_reads_plainly(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    with session_factory(engine).begin() as session:
        session.execute(
            ExperimentAnalysis.__table__.delete().where(
                ExperimentAnalysis.experiment_id == seeded.checked_experiment_id
            )
        )
    page = await html_of(client, f"/ui/experiments/{seeded.checked_experiment_id}")
    assert "no checks yet" in page
    assert "No checks yet - nothing has been decided." in page


async def test_hand_edited_checks_and_script_in_texts_are_shown_safely(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    experiment_id = seeded.checked_experiment_id
    assert experiment_id is not None
    ids = _analysis_ids(engine, experiment_id)
    with session_factory(engine).begin() as session:
        session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id)
            .values(
                created_by=SCRIPT,
                guardrails='[{"metric": "<b>x</b>", "tolerance": NaN}, {"x": NaN}]',
            )
        )
        edits = {
            ids[0]: "not json at all",
            ids[1]: '{"comparisons": [{"arm_id": 1, "relative": NaN}], "srm": 3}',
            ids[-1]: '{"srm": {"detected": "maybe"}}',
        }
        for analysis_id, text in edits.items():
            session.execute(
                update(ExperimentAnalysis)
                .where(ExperimentAnalysis.id == analysis_id)
                .values(statistics=text, reason=SCRIPT)
            )
    page = await html_of(client, f"/ui/experiments/{experiment_id}")
    assert "<script>alert" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert" in page
    assert "holds no readable sample-ratio result" in page
    assert "&lt;b&gt;x&lt;/b&gt; (higher is better); {&#34;x&#34;: null}" in page


@pytest.mark.parametrize(
    ("path", "status"),
    [("/ui/experiments/abc", 400), ("/ui/experiments/0", 400), ("/ui/experiments/987654", 404)],
)
async def test_bad_and_unknown_experiment_ids(
    engine: Engine, make_client: ClientMaker, path: str, status: int
) -> None:
    client = await signed_in(make_client, engine)
    page = await html_of(client, path, status)
    if status == 400:
        assert "id must be a positive whole number" in page
    else:
        assert "no experiment with id 987654" in page


# --- stop ----------------------------------------------------------------------------------


async def test_stop_ends_the_experiment_as_the_ui_actor(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    answer = await _stop(client, experiment_id, reason="wrong audience — «campagne» <script>")
    assert answer.status == 303, await answer.text()
    assert (
        answer.headers["Location"] == f"/ui/experiments/{experiment_id}?notice=experiment-stopped"
    )
    status, reason = _status_of(engine, experiment_id)
    assert status == "stopped"
    assert reason is not None and reason.startswith(
        f"stopped by {ACTOR}: wrong audience — «campagne»"
    )
    page = await html_of(client, answer.headers["Location"])
    assert "The experiment has been stopped." in page
    assert "/stop" not in page  # no form once it is over

    again = await _stop(client, experiment_id)
    assert again.status == 409
    assert f"experiment {experiment_id} is already stopped" in await again.text()


async def test_stop_without_a_reason_and_of_unknown_experiments(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    missing = await _stop(client, 987654)
    assert missing.status == 404
    assert seeded.running_experiment_id is not None
    answer = await _stop(client, seeded.running_experiment_id, reason="")
    assert answer.status == 303
    status, reason = _status_of(engine, seeded.running_experiment_id)
    assert status == "stopped" and reason == (f"stopped by {ACTOR}; control version 2 stays active")


async def test_stop_needs_the_csrf_token(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine)
    assert seeded.running_experiment_id is not None
    answer = await _stop(client, seeded.running_experiment_id, csrf="forged", reason="x")
    assert answer.status == 403
    assert _status_of(engine, seeded.running_experiment_id)[0] == "running"


async def test_read_only_mode_hides_the_form_and_refuses_the_stop(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine, ui_access="read-only")
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    page = await html_of(client, f"/ui/experiments/{experiment_id}")
    assert "/stop" not in page and "Lift in success" in page
    answer = await _stop(client, experiment_id, reason="x")
    assert answer.status == 403
    assert _status_of(engine, experiment_id)[0] == "running"
