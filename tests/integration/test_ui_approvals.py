"""The dashboard's approval actions through the real app: an experiment awaiting approval
shown prominently with Approve and Reject forms, a Promote form per active variant arm of a
live experiment, the overview's list of experiments waiting for a person; CSRF, read-only
mode, bad forms and wrong states refused with an HTML page and nothing written."""

from __future__ import annotations

import asyncio
import html

import markupsafe
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from models.experiments import Experiment
from models.prompts import Prompt
from optimizer.db import session_factory
from optimizer.experiments import store
from optimizer.ui.web import ACTOR, NOTICES
from tests.support.approvals import (
    APPROVE,
    WEBHOOK_SECRET,
    activations,
    counts,
    delivered,
    experiment_row,
    monitor,
    sending,
    winning,
)
from tests.support.experiments import seed_prompt
from tests.support.http_client import ADMIN_TOKEN, ClientMaker, build_app, start_client
from tests.support.ui_client import csrf_of, html_of, logged_in, seeded_client, signed_in
from tests.support.webhook_receiver import receiving


async def _post(client: TestClient, path: str, **fields: str) -> ClientResponse:
    """POST a form with the session's CSRF token (unless `fields` gives another)."""
    return await client.post(path, data={"csrf": csrf_of(client), **fields}, allow_redirects=False)


def store_view(engine: Engine, experiment_id: int) -> store.ExperimentView:
    with session_factory(engine)() as session:
        return store.get_experiment(session, experiment_id)


def _awaiting(engine: Engine, experiment_id: int) -> store.ArmView:
    """Put a seeded running experiment in the awaiting state, its first active variant arm
    proposed (as a check in approve mode leaves it); that arm."""
    with session_factory(engine).begin() as session:
        view = store.get_experiment(session, experiment_id)
        arm = next(a for a in view.arms if not a.is_control and a.status == "active")
        session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id)
            .values(
                status="awaiting_approval",
                winner_version_id=arm.version_id,
                decision_reason="Promote: v9 <b>better</b>. Awaiting approval.",
            )
        )
        return arm


async def test_an_awaiting_experiment_is_approved_from_its_page(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    arm = _awaiting(engine, experiment_id)
    page = await html_of(client, f"/ui/experiments/{experiment_id}")
    assert 'class="card card-awaiting"' in page and "Waiting for approval" in page
    assert '<span class="badge badge-awaiting_approval">awaiting_approval</span>' in page
    assert f'action="/ui/experiments/{experiment_id}/approve"' in page
    assert f'action="/ui/experiments/{experiment_id}/reject"' in page
    assert f"Approve version {arm.version}</button>" in page and "Proposed winner" in page
    assert page.count(f'name="csrf" value="{csrf_of(client)}"') >= 3
    assert "<b>better</b>" not in page and "&lt;b&gt;better&lt;/b&gt;" in page

    overview = await html_of(client, "/ui/")
    assert 'aria-labelledby="awaiting-h"' in overview
    assert f'<a href="/ui/experiments/{experiment_id}">Experiment #{experiment_id}</a>' in overview
    assert f"version {arm.version} proposed" in overview

    answer = await _post(
        client, f"/ui/experiments/{experiment_id}/approve", reason="ship it — «oui» <script>"
    )
    assert answer.status == 303, await answer.text()
    location = answer.headers["Location"]
    assert location == f"/ui/experiments/{experiment_id}?notice=experiment-approved"
    done = await html_of(client, location)
    assert html.escape(NOTICES["experiment-approved"], quote=False) in done
    assert "card-awaiting" not in done and "/approve" not in done and "/promote" not in done
    row = experiment_row(engine, experiment_id)
    assert row.status == "completed" and row.winner_version_id == arm.version_id
    prompt = seeded.prompt_names[0]
    last = activations(engine, prompt)[-1]
    assert last["to_version"] == arm.version and last["actor"] == ACTOR
    assert last["reason"] == f"approved in experiment {experiment_id}: ship it — «oui» <script>"
    assert 'aria-labelledby="awaiting-h"' not in await html_of(client, "/ui/")

    again = await _post(client, f"/ui/experiments/{experiment_id}/approve", reason="x")
    assert again.status == 409
    assert "not awaiting approval" in await again.text()


async def test_reject_from_the_page_keeps_the_control(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    _awaiting(engine, experiment_id)
    before = len(activations(engine, seeded.prompt_names[0]))
    answer = await _post(client, f"/ui/experiments/{experiment_id}/reject", reason="off-brand")
    assert answer.status == 303, await answer.text()
    assert answer.headers["Location"].endswith("?notice=experiment-rejected")
    row = experiment_row(engine, experiment_id)
    assert row.status == "completed" and row.winner_version_id is None
    assert f"rejected by {ACTOR}: off-brand" in (row.decision_reason or "")
    assert len(activations(engine, seeded.prompt_names[0])) == before


async def test_a_variant_arm_is_promoted_from_the_page(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    with session_factory(engine)() as session:
        view = store.get_experiment(session, experiment_id)
    promotable = [a for a in view.arms if not a.is_control and a.status == "active"]
    others = [a for a in view.arms if a not in promotable]
    page = await html_of(client, f"/ui/experiments/{experiment_id}")
    assert "Promote an arm by hand" in page
    for arm in promotable:
        assert f'<input type="hidden" name="arm" value="{arm.id}">' in page
    for arm in others:  # the control and stopped arms get no form
        assert f'<input type="hidden" name="arm" value="{arm.id}">' not in page
    chosen = promotable[-1]
    answer = await _post(
        client, f"/ui/experiments/{experiment_id}/promote", arm=str(chosen.id), reason="legal"
    )
    assert answer.status == 303, await answer.text()
    assert answer.headers["Location"].endswith("?notice=arm-promoted")
    assert experiment_row(engine, experiment_id).winner_version_id == chosen.version_id
    last = activations(engine, seeded.prompt_names[0])[-1]
    assert (last["to_version"], last["actor"]) == (chosen.version, ACTOR)


async def test_the_pages_actions_send_the_experiment_action_webhook(
    engine: Engine, make_client: ClientMaker
) -> None:
    async with receiving(WEBHOOK_SECRET) as receiver, sending(receiver) as sender:
        client, seeded = await seeded_client(make_client, engine, webhooks=sender)
        experiment_id = seeded.running_experiment_id
        assert experiment_id is not None
        arm = _awaiting(engine, experiment_id)
        answer = await _post(client, f"/ui/experiments/{experiment_id}/approve", reason="go «ok»")
        assert answer.status == 303, await answer.text()
        refused = await _post(client, f"/ui/experiments/{experiment_id}/stop", reason="late")
        assert refused.status == 409  # already completed: nothing sent for it
        await delivered(sender, 1)
    [event] = receiver.bodies
    assert event["event"] == "experiment.action"
    assert event["data"] == {
        "experiment_id": experiment_id,
        "prompt": seeded.prompt_names[0],
        "action": "approve",
        "actor": ACTOR,
        "reason": "go «ok»",
        "status": "completed",
        "winner_version": arm.version,
    }


async def test_an_awaiting_state_reached_by_a_real_check_shows_on_both_pages(
    engine: Engine, make_client: ClientMaker
) -> None:
    experiment_id = winning(engine)
    await monitor(engine, APPROVE)
    client = await signed_in(make_client, engine)
    page = await html_of(client, f"/ui/experiments/{experiment_id}")
    assert "Approve version 2</button>" in page and "Promote version 2</button>" in page
    overview = await html_of(client, "/ui/")
    assert "version 2 proposed" in overview and "AWAITING" not in overview


async def test_bad_forms_and_states_are_refused_with_nothing_written(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    control = next(a for a in store_view(engine, experiment_id).arms if a.is_control)
    before = counts(engine)
    cases = [
        ("approve", {"reason": "running"}, 409, "is running, not awaiting approval"),
        ("reject", {"reason": "running"}, 409, "is running, not awaiting approval"),
        ("approve", {}, 400, "reason must not be empty"),
        ("promote", {"reason": "r"}, 400, "arm is required"),
        ("promote", {"arm": "abc", "reason": "r"}, 400, "arm must be a positive whole number"),
        ("promote", {"arm": str(control.id), "reason": "r"}, 400, "is the control"),
        ("promote", {"arm": "987654", "reason": "r"}, 400, "has no arm 987654"),
        ("promote", {"arm": "1", "reason": " "}, 400, "reason is blank"),
    ]
    for action, fields, status, needle in cases:
        answer = await _post(client, f"/ui/experiments/{experiment_id}/{action}", **fields)
        text = await answer.text()
        assert answer.status == status, (action, fields, text)
        assert answer.content_type == "text/html"
        assert html.escape(needle, quote=False) in text, (action, fields)
    missing = await _post(client, "/ui/experiments/987654/approve", reason="x")
    assert missing.status == 404
    assert counts(engine) == before
    assert experiment_row(engine, experiment_id).status == "running"


async def test_the_actions_need_the_csrf_token(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine)
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    arm = _awaiting(engine, experiment_id)
    before = counts(engine)
    for action, fields in (
        ("approve", {"reason": "x"}),
        ("reject", {"reason": "x"}),
        ("promote", {"arm": str(arm.id), "reason": "x"}),
    ):
        answer = await _post(
            client, f"/ui/experiments/{experiment_id}/{action}", csrf="forged", **fields
        )
        assert answer.status == 403, action
    assert counts(engine) == before
    assert experiment_row(engine, experiment_id).status == "awaiting_approval"


async def test_read_only_mode_hides_the_forms_and_refuses_the_actions(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine, ui_access="read-only")
    experiment_id = seeded.running_experiment_id
    assert experiment_id is not None
    arm = _awaiting(engine, experiment_id)
    page = await html_of(client, f"/ui/experiments/{experiment_id}")
    assert "Waiting for approval" in page and "read-only" in page
    assert "/approve" not in page and "/reject" not in page and "/promote" not in page
    for action, fields in (
        ("approve", {"reason": "x"}),
        ("reject", {"reason": "x"}),
        ("promote", {"arm": str(arm.id), "reason": "x"}),
    ):
        answer = await _post(client, f"/ui/experiments/{experiment_id}/{action}", **fields)
        assert answer.status == 403, action
    assert experiment_row(engine, experiment_id).status == "awaiting_approval"


# --- a prompt's own settings ----------------------------------------------------------------


def own_settings(engine: Engine, name: str) -> tuple[str | None, str | None]:
    with session_factory(engine)() as session:
        row = session.scalars(select(Prompt).where(Prompt.name == name)).one()
        return row.promotion_mode, row.judge_rubric


RUBRICS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=300,
).filter(lambda text: bool(text.strip()))


async def test_the_prompt_page_shows_and_saves_its_settings(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine, promotion_mode="approve")
    name = seeded.prompt_names[0]
    path = f"/ui/prompts/{name}"
    page = await html_of(client, path)
    assert "<dt>Promotion mode</dt><dd>approve" in page and "(follows PROMOTION_MODE)" in page
    assert f'action="{path}/settings"' in page
    assert '<option value="inherit" selected>follow PROMOTION_MODE (now approve)' in page

    rubric = "Cite the <b>invoice</b> & keep «the tone» — always."
    answer = await _post(client, f"{path}/settings", promotion_mode="auto", judge_rubric=rubric)
    assert answer.status == 303, await answer.text()
    assert answer.headers["Location"] == f"{path}?notice=settings-saved"
    assert own_settings(engine, name) == ("auto", rubric)
    page = await html_of(client, answer.headers["Location"])
    assert html.escape(NOTICES["settings-saved"], quote=False) in page
    assert "<dt>Promotion mode</dt><dd>auto <span" in page and "(this prompt's own)" in page
    assert "<b>invoice</b>" not in page and "&lt;b&gt;invoice&lt;/b&gt; &amp; keep" in page
    assert '<option value="auto" selected>' in page

    # A browser sends the box's line breaks as CRLF; a leading one survives the next save.
    crlf = await _post(
        client, f"{path}/settings", promotion_mode="auto", judge_rubric="\r\nFirst\r\nSecond"
    )
    assert crlf.status == 303, await crlf.text()
    assert own_settings(engine, name) == ("auto", "\nFirst\nSecond")
    assert ">\n\nFirst\nSecond</textarea>" in await html_of(client, path)

    # Back to the service's mode, and an empty (or blank) box removes the rubric.
    again = await _post(client, f"{path}/settings", promotion_mode="inherit", judge_rubric=" \n")
    assert again.status == 303, await again.text()
    assert own_settings(engine, name) == (None, None)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rubric=RUBRICS, mode=st.sampled_from(["auto", "approve", "inherit"]))
@example(rubric='Say "hi" & it\'s <fine>\r\n\r\n  — ok', mode="auto")
def test_any_rubric_a_person_types_is_stored_as_typed(
    sqlite_engine: Engine, rubric: str, mode: str
) -> None:
    """Unicode, markup, line breaks (as a browser sends them, CRLF): stored exactly as the
    form sent them, and shown escaped."""

    async def go() -> tuple[int, str, str]:
        client = await start_client(build_app(sqlite_engine))
        try:
            await logged_in(client, ADMIN_TOKEN)
            answer = await _post(
                client,
                "/ui/prompts/settings-bot/settings",
                promotion_mode=mode,
                judge_rubric=rubric,
            )
            page = await html_of(client, "/ui/prompts/settings-bot")
            return answer.status, await answer.text(), page
        finally:
            await client.close()

    with session_factory(sqlite_engine)() as session:  # one prompt for every example
        seeded = session.scalar(select(Prompt.id).where(Prompt.name == "settings-bot"))
    if seeded is None:
        seed_prompt(sqlite_engine, "settings-bot")
    status, text, page = asyncio.run(go())
    assert status == 303, text
    stored = rubric.replace("\r\n", "\n")  # a browser's line breaks, stored as the API's
    assert own_settings(sqlite_engine, "settings-bot") == (
        None if mode == "inherit" else mode,
        stored,
    )
    # In the box, after the newline that keeps a leading line break of the rubric itself.
    assert f">\n{markupsafe.escape(stored)}</textarea>" in page


async def test_bad_settings_forms_are_refused_with_nothing_written(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    name = seeded.prompt_names[0]
    before = own_settings(engine, name)
    cases = [
        ({"promotion_mode": "sometimes", "judge_rubric": ""}, 400, "promotion_mode"),
        ({"judge_rubric": "x"}, 400, "promotion_mode"),
        ({"promotion_mode": "auto", "judge_rubric": "x" * 10_001}, 400, "judge_rubric"),
        ({"promotion_mode": "auto", "judge_rubric": "a\x00b"}, 400, "judge_rubric contains a NUL"),
    ]
    for fields, status, needle in cases:
        answer = await _post(client, f"/ui/prompts/{name}/settings", **fields)
        text = await answer.text()
        assert answer.status == status, (fields, text)
        assert answer.content_type == "text/html" and needle in text, (fields, text)
        assert "Traceback" not in text
    missing = await _post(client, "/ui/prompts/no-such-prompt/settings", promotion_mode="auto")
    assert missing.status == 404 and "no prompt named" in await missing.text()
    forged = await _post(
        client, f"/ui/prompts/{name}/settings", csrf="forged", promotion_mode="auto"
    )
    assert forged.status == 403
    assert own_settings(engine, name) == before


async def test_read_only_mode_shows_the_settings_without_the_form(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine, ui_access="read-only")
    name = seeded.prompt_names[0]
    page = await html_of(client, f"/ui/prompts/{name}")
    assert "<dt>Promotion mode</dt>" in page and "/settings" not in page
    answer = await _post(client, f"/ui/prompts/{name}/settings", promotion_mode="approve")
    assert answer.status == 403
    assert own_settings(engine, name) == (None, None)
