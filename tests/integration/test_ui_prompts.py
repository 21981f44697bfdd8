"""The dashboard's prompt pages through the real app, on SQLite and PostgreSQL: the list,
a prompt's versions and history, a version's text, the diff of two versions (inline and side
by side), and the rollback action, on the seeds of tests/support/ui_seed.py; query counts
that do not grow with the data; bad parameters, unknown names, read-only mode, escaping."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.engine import Engine

from models.prompts import Prompt, PromptActivation, PromptVersion
from optimizer import prompts
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.errors import InvalidInput
from optimizer.ui.routes_prompts import parse_version, parse_view, resolve_pair
from optimizer.ui.web import NOTICES
from tests.support.http_client import ClientMaker
from tests.support.ui_client import csrf_of, html_of, query_count, seeded_client, signed_in
from tests.support.ui_seed import Seeded, seed_world

NOTES = "<script>alert('notes')</script> — «ton» ✓"
OLD_TEXT = "Bonjour ☕\nBe concise.\nNever promise refunds.\nSign off politely.\n"
NEW_TEXT = (
    "Bonjour ☕\nBe warm and concise.\nNever promise refunds.\nSign off politely.\nAdd a 你好.\n"
)


async def _rollback(client: TestClient, name: str, **fields: str) -> ClientResponse:
    """POST the rollback form of `name` with the session's CSRF token (unless `fields` gives
    another) and `fields`; the answer, unfollowed."""
    return await client.post(
        f"/ui/prompts/{name}/rollback",
        data={"csrf": csrf_of(client), **fields},
        allow_redirects=False,
    )


def _two_versions(engine: Engine) -> None:
    """`faq`: v1 active (OLD_TEXT), v2 candidate (NEW_TEXT, notes with a script tag)."""
    now = utcnow()
    with session_factory(engine).begin() as session:
        prompts.create_prompt(session, "faq", OLD_TEXT, actor="alice", now=now - timedelta(days=2))
        prompts.add_version(
            session, "faq", NEW_TEXT, change_notes=NOTES, source="llm", model="m-1", now=now
        )


def _active(engine: Engine, name: str) -> int | None:
    with session_factory(engine)() as session:
        return next(
            (v.number for v in prompts.version_details(session, name) if v.status == "active"), None
        )


def _activations(engine: Engine, name: str) -> list[PromptActivation]:
    with session_factory(engine)() as session:
        prompt_id = session.scalars(select(Prompt.id).where(Prompt.name == name)).one()
        return list(
            session.scalars(
                select(PromptActivation)
                .where(PromptActivation.prompt_id == prompt_id)
                .order_by(PromptActivation.id)
            )
        )


# --- the seeds ---------------------------------------------------------------------------


async def test_empty_database_shows_a_readable_empty_list(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, _ = await seeded_client(make_client, engine, "empty")
    text = await html_of(client, "/ui/prompts")
    assert "No prompts yet" in text
    assert 'aria-current="page">Prompts<' in text


async def test_one_version_prompt_pages(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine, "one_version")
    (name,) = seeded.prompt_names
    listing = await html_of(client, "/ui/prompts")
    assert f'href="/ui/prompts/{name}"' in listing and "1 prompt." in listing
    page = await html_of(client, f"/ui/prompts/{name}")
    assert f"/ui/prompts/{name}/versions/1" in page
    assert "badge-active" in page
    # Nothing to compare with or roll back to.
    assert "/diff" not in page and "/rollback" not in page
    version = await html_of(client, f"/ui/prompts/{name}/versions/1")
    with session_factory(engine)() as session:
        text = prompts.version_texts(session, name, [1])[1]
    assert "<pre" in version and str(escape(text.splitlines()[0])) in version
    diff = await html_of(client, f"/ui/prompts/{name}/diff")
    assert "The texts are identical" in diff


async def test_small_seed_pages_show_versions_history_and_live_experiments(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    listing = await html_of(client, "/ui/prompts")
    for name in seeded.prompt_names:
        assert f'href="/ui/prompts/{name}"' in listing
    assert f'href="/ui/experiments/{seeded.running_experiment_id}"' in listing
    assert "badge-running" in listing and "badge-paused" in listing

    name = seeded.multi_version_prompt
    assert name is not None
    with session_factory(engine)() as session:
        details = prompts.version_details(session, name)
        history = prompts.activation_history(session, name)
    page = await html_of(client, f"/ui/prompts/{name}")
    for d in details:
        assert f'href="/ui/prompts/{name}/versions/{d.number}">v{d.number}</a>' in page
        if d.model:
            assert d.model in page
        for insight in d.insight_ids:
            assert f'<a href="/ui/insights?prompt={name}">#{insight}</a>' in page
    for row in history:
        assert row["actor"] in page
    assert f'action="/ui/prompts/{name}/diff"' in page
    assert f'action="/ui/prompts/{name}/rollback"' in page and 'name="csrf"' in page
    # The seed's change notes carry a script tag: shown, escaped.
    assert "<script>alert" not in page and "&lt;script&gt;alert(" in page

    # The running experiment's prompt: rollback is refused, so the form says why instead.
    running = seeded.prompt_names[0]
    blocked = await html_of(client, f"/ui/prompts/{running}")
    assert "stop it before rolling back" in blocked
    assert "/rollback" not in blocked


@pytest.mark.parametrize("view", ["inline", "side"])
async def test_diff_marks_changed_words_lines_and_hunks(
    engine: Engine, make_client: ClientMaker, view: str
) -> None:
    _two_versions(engine)
    client = await signed_in(make_client, engine)
    text = await html_of(client, f"/ui/prompts/faq/diff?from=1&to=2&view={view}")
    assert "Be<ins> warm and</ins> concise." in text  # the words, not the whole line
    assert "<ins>Add a 你好.</ins>" in text  # an added line
    assert "@@ -1,4 +1,5 @@" in text
    assert '<td class="ln">5</td>' in text  # the new line's number
    assert "&lt;script&gt;alert(&#39;notes&#39;)&lt;/script&gt; — «ton» ✓" in text
    assert "<script>alert" not in text
    assert 'class="diff side"' in text if view == "side" else 'class="diff"' in text
    assert "/ui/prompts/faq/diff?from=2&amp;to=1" in text  # swap
    # Defaults: the active v1 against the newer candidate v2 (what it would change).
    default = await html_of(client, "/ui/prompts/faq/diff")
    assert "Be<ins> warm and</ins> concise." in default
    # The reverse diff deletes what the forward one added.
    back = await html_of(client, "/ui/prompts/faq/diff?from=2&to=1")
    assert "<del>Add a 你好.</del>" in back


async def test_version_page_shows_the_full_text_and_a_diff_against_its_parent(
    engine: Engine, make_client: ClientMaker
) -> None:
    _two_versions(engine)
    long_text = "Réponds brièvement <b>toujours</b>.\n" * 2_500  # ~90k characters
    with session_factory(engine).begin() as session:
        prompts.add_version(session, "faq", long_text, parent_version=2, now=utcnow())
    client = await signed_in(make_client, engine)
    page = await html_of(client, "/ui/prompts/faq/versions/3")
    assert page.count("Réponds brièvement &lt;b&gt;toujours&lt;/b&gt;.") == 2_500
    assert 'href="/ui/prompts/faq/diff?from=2&amp;to=3"' in page
    assert f"{len(long_text):,} characters" in page


async def test_the_prompt_list_pages_by_name(engine: Engine, make_client: ClientMaker) -> None:
    seeded = seed_world(
        engine, utcnow(), prompts=55, versions=1, experiments=0, checks=0, extras=False
    )
    names = sorted(seeded.prompt_names)
    client = await signed_in(make_client, engine)
    first = await html_of(client, "/ui/prompts")
    assert f'href="/ui/prompts/{names[49]}"' in first
    assert f'href="/ui/prompts/{names[50]}"' not in first
    link = re.search(r'href="(/ui/prompts\?after=[^"]+)" rel="next"', first)
    assert link, "no next-page link"
    second = await html_of(client, link.group(1).replace("&amp;", "&"))
    assert all(f'href="/ui/prompts/{n}"' in second for n in names[50:])
    assert f'href="/ui/prompts/{names[49]}"' not in second
    assert 'rel="next"' not in second


# --- bad and unknown input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/ui/prompts/faq/versions/abc", "version"),
        ("/ui/prompts/faq/versions/0", "version"),
        ("/ui/prompts/faq/versions/99999999999999999999", "version"),
        ("/ui/prompts/faq/diff?from=x", "from"),
        ("/ui/prompts/faq/diff?from=1&to=-2", "to"),
        ("/ui/prompts/faq/diff?view=sideways", "view"),
        ("/ui/prompts/fa%20q", "name"),
        ("/ui/prompts?after=%3Cscript%3E", "after"),
    ],
)
async def test_bad_parameters_are_400_pages_naming_them(
    engine: Engine, make_client: ClientMaker, path: str, field: str
) -> None:
    _two_versions(engine)
    client = await signed_in(make_client, engine)
    text = await html_of(client, path, 400)
    assert f"Field: <code>{field}</code>" in text
    assert "<script>" not in text


@pytest.mark.parametrize(
    "path",
    [
        "/ui/prompts/nope",
        "/ui/prompts/nope/versions/1",
        "/ui/prompts/nope/diff",
        "/ui/prompts/faq/versions/7",
        "/ui/prompts/faq/diff?from=1&to=7",
    ],
)
async def test_unknown_prompts_and_versions_are_404_pages(
    engine: Engine, make_client: ClientMaker, path: str
) -> None:
    _two_versions(engine)
    client = await signed_in(make_client, engine)
    text = await html_of(client, path, 404)
    assert "nope" in text or "no version 7" in text


@given(st.text(max_size=30))
def test_version_parameters_parse_or_name_their_field(raw: str) -> None:
    try:
        number = parse_version(raw, "from")
    except InvalidInput as exc:
        assert exc.field == "from" and "version number" in str(exc)
    else:
        assert 1 <= number <= prompts.MAX_VERSION and str(number) == raw.strip().lstrip("0")
    try:
        view = parse_view(raw)
    except InvalidInput as exc:
        assert exc.field == "view"
    else:
        assert view == raw


@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=8, unique=True),
    st.integers(0, 7),
    st.booleans(),
)
def test_default_pair_is_the_active_version_against_the_newest_or_its_parent(
    numbers: list[int], active_at: int, with_parent: bool
) -> None:
    numbers.sort()
    active = numbers[active_at % len(numbers)]
    parent = numbers[0] if with_parent and numbers[0] != active else None
    details = [
        prompts.VersionDetail(
            id=n,
            number=n,
            status="active" if n == active else "retired",
            source="manual",
            parent=parent if n == active else None,
            model=None,
            insight_ids=(),
            change_notes=None,
            content_hash="",
            content_chars=1,
            llm_call_id=None,
            created_at=utcnow(),
        )
        for n in numbers
    ]
    old, new = resolve_pair(details, None, None)
    earlier = [n for n in numbers if n < active]
    if active < numbers[-1]:  # newer versions wait: what would the newest change?
        assert (old, new) == (active, numbers[-1])
    else:
        assert new == active
        assert old == (parent if parent is not None else (earlier[-1] if earlier else active))
    # Only `to`: against its parent or predecessor.
    assert resolve_pair(details, None, active)[0] == (
        parent if parent is not None else (earlier[-1] if earlier else active)
    )
    assert resolve_pair(details, numbers[0], numbers[-1]) == (numbers[0], numbers[-1])


# --- rollback ---------------------------------------------------------------------------------


async def test_rollback_changes_the_active_version_and_records_the_ui_actor(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    name = seeded.multi_version_prompt
    assert name is not None
    active = _active(engine, name)
    assert active is not None and active >= 2
    page = await html_of(client, f"/ui/prompts/{name}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    answer = await _rollback(
        client, name, csrf=csrf.group(1), version="1", reason="v2 <b>hurt</b> refunds — «oops»"
    )
    assert answer.status == 303, await answer.text()
    assert answer.headers["Location"] == f"/ui/prompts/{name}?notice=rolled-back"
    assert _active(engine, name) == 1
    last = _activations(engine, name)[-1]
    assert last.actor == "admin (UI)" and last.reason == "v2 <b>hurt</b> refunds — «oops»"
    after = await html_of(client, answer.headers["Location"])
    assert NOTICES["rolled-back"] in after
    assert "v2 &lt;b&gt;hurt&lt;/b&gt; refunds" in after  # the history shows the reason


@pytest.mark.parametrize(
    ("prompt", "fields", "status", "message"),
    [
        ("multi", {"version": "9", "reason": "r"}, 404, "has no version 9"),
        ("multi", {"version": "active", "reason": "r"}, 409, "already active"),
        ("multi", {"version": "ACTIVE", "reason": "r"}, 400, "version must be"),
        ("multi", {"version": "1", "reason": "   "}, 400, "reason"),
        ("multi", {"reason": "r"}, 400, "version must be"),
        ("running", {"version": "1", "reason": "r"}, 409, "stop it first"),
        ("nope", {"version": "1", "reason": "r"}, 404, "no prompt named"),
    ],
)
async def test_refused_rollbacks_are_error_pages_and_change_nothing(
    engine: Engine,
    make_client: ClientMaker,
    prompt: str,
    fields: dict[str, str],
    status: int,
    message: str,
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    assert seeded.multi_version_prompt is not None
    name = {"multi": seeded.multi_version_prompt, "running": seeded.prompt_names[0]}.get(
        prompt, prompt
    )
    if fields.get("version") == "active":
        fields = {**fields, "version": str(_active(engine, name))}
    before = _activations(engine, name) if prompt != "nope" else []
    answer = await _rollback(client, name, **fields)
    text = await answer.text()
    assert answer.status == status, text
    assert message in text and "Traceback" not in text
    if prompt != "nope":
        assert len(_activations(engine, name)) == len(before)


async def test_read_only_mode_hides_the_rollback_form_and_refuses_the_post(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine, ui_access="read-only")
    name = seeded.multi_version_prompt
    assert name is not None
    page = await html_of(client, f"/ui/prompts/{name}")
    assert "/rollback" not in page and "<textarea" not in page
    assert f'action="/ui/prompts/{name}/diff"' in page  # reading still works
    active = _active(engine, name)
    answer = await _rollback(client, name, version="1", reason="r")
    assert answer.status == 403
    assert _active(engine, name) == active


async def test_rollback_without_csrf_is_refused(engine: Engine, make_client: ClientMaker) -> None:
    _two_versions(engine)
    with session_factory(engine).begin() as session:
        prompts.rollback(session, "faq", 2, actor="t", reason="r", now=utcnow())
    client = await signed_in(make_client, engine)
    answer = await client.post(
        "/ui/prompts/faq/rollback", data={"version": "1", "reason": "r"}, allow_redirects=False
    )
    assert answer.status == 403
    assert _active(engine, "faq") == 2


# --- no N+1 (SQLite only: the large seed takes a while to write) --------------------------


PAGES = (
    "/ui/prompts",
    "/ui/prompts/{name}",
    "/ui/prompts/{name}/versions/2",
    "/ui/prompts/{name}/diff",
    "/ui/prompts/{name}/diff?from=1&to=4&view=side",
)
BUDGET = {"/ui/prompts": 6}  # lists; detail pages get 10


async def _counts(client: TestClient, seeded: Seeded) -> list[int]:
    name = seeded.multi_version_prompt
    return [await query_count(client, pattern.format(name=name)) for pattern in PAGES]


async def test_query_counts_do_not_grow_with_the_data_slow_large_seed(
    large_seed: tuple[Engine, Seeded], sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    """SLOW: the large seed (the module fixture, SQLite only)."""
    large, large_seeded = large_seed
    small_counts = await _counts(*await seeded_client(make_client, sqlite_engine))
    large_counts = await _counts(await signed_in(make_client, large), large_seeded)
    assert small_counts == large_counts
    for pattern, n in zip(PAGES, large_counts, strict=True):
        assert n - 1 <= BUDGET.get(pattern, 10), (pattern, n)  # 1: the session lookup
    with session_factory(large)() as session:
        assert session.query(PromptVersion).count() == 100 * 50
