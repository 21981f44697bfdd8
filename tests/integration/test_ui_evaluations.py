"""The dashboard's replay views through the real app, on SQLite and PostgreSQL: a version's
Replay panel (summary with its SVG interval drawings, the status reason, the evaluations
newest first in pages, filtered by sample, with both answers side by side), the "not
replayed" state, each version's win rate on the prompt page, a fixed number of queries
whatever the number of evaluations, and bad parameters as 400 pages naming them."""

from __future__ import annotations

import random
import re
from html import unescape

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine

from models.prompts import PromptVersion
from optimizer import evaluations
from optimizer.db import session_factory
from tests.support.evaluations import (
    SCRIPT,
    conversations,
    evaluation_row,
    insert_evaluations,
    realistic_rows,
    replay_world,
)
from tests.support.http_client import ClientMaker
from tests.support.ui_client import html_of, query_count, signed_in

REJECTION = "replay: failing 31.2% (90% interval 12.0%-58.1%) <b>not above</b> one half"
VERSION = "/ui/prompts/support-bot/versions/{n}"
_ARTICLE = re.compile(r'<article class="card evaluation" id="evaluation-(\d+)">')
_NEXT = re.compile(r'href="([^"]+)" rel="next"')


def _ids(page: str) -> list[int]:
    return [int(i) for i in _ARTICLE.findall(page)]


def _summary(engine: Engine, number: int) -> evaluations.ReplaySummary:
    with session_factory(engine)() as session:
        return evaluations.replay_of(session, "support-bot", number)[0]


def _stored_ids(engine: Engine, sample: str | None = None) -> list[int]:
    with session_factory(engine)() as session:
        page = evaluations.list_evaluations(session, "support-bot", 2, sample=sample, limit=500)
    return [v.id for v in page.evaluations]


async def _walk(client: TestClient, first: str) -> list[list[int]]:
    """The evaluation ids of each page, following the pager from `first`."""
    pages, target = [], first
    for _ in range(50):
        page = await html_of(client, target)
        pages.append(_ids(page))
        found = _NEXT.search(page)
        if found is None:
            return pages
        target = unescape(found.group(1))
    raise AssertionError("the pager does not end")


async def test_the_version_page_shows_the_replay_of_a_rejected_candidate(
    engine: Engine, make_client: ClientMaker
) -> None:
    world = replay_world(engine)
    ids = conversations(engine, world, 10)
    insert_evaluations(engine, realistic_rows(world, 12, random.Random(4), conversation_ids=ids))
    insert_evaluations(
        engine,
        [
            evaluation_row(
                world,
                verdicts=("candidate", "control"),
                reason_candidate_first=None,
                candidate_answer=f'["first turn", "{SCRIPT}"]',
                control_answer='["an answer written \\u00e0 la main"]',
                segment="refunds & returns",
            )
        ],
    )
    with engine.begin() as conn:
        conn.execute(
            update(PromptVersion)
            .where(PromptVersion.id == world.candidate_id)
            .values(status="rejected", status_reason=REJECTION)
        )
    client = await signed_in(make_client, engine)
    page = await html_of(client, VERSION.format(n=2))
    summary = _summary(engine, 2)

    assert 'id="replay"' in page and "Not replayed" not in page
    assert "Rejected: replay: failing 31.2%" in page and "&lt;b&gt;not above&lt;/b&gt;" in page
    assert "<b>not above</b>" not in page
    for rate in (summary.failing, summary.holdout):
        assert evaluations.rate_text(rate) in page
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="win-rate-bar"') == 2
    svg = page[page.index("<svg") : page.rindex("</svg>")]
    assert "style=" not in svg  # the CSP forbids inline style: presentation attributes only
    assert f"{summary.evaluations:,}" in page and f"${summary.cost_usd:.4f}" in page
    assert 'href="/ui/prompts/support-bot/diff?from=1&amp;to=2"' in page  # against control

    # Newest first; the hand-edited one (newest) with its script escaped, answers side by side.
    assert _ids(page) == _stored_ids(engine)[: len(_ids(page))]
    newest = page[page.index(f'id="evaluation-{_ids(page)[0]}"') :]
    newest = newest[: newest.index("</article>")]
    assert "<details>" in newest and 'class="grid"' in newest
    assert "&lt;script&gt;alert(&#39;answer&#39;)&lt;/script&gt;" in newest
    assert "<pre>an answer written à la main</pre>" in newest
    assert "no reason given" in newest and "changed with the order" in newest
    assert "segment refunds &amp; returns" in newest and "conversation deleted" in newest
    assert "badge-ok" in newest and "badge-error" in newest
    assert "<script>alert" not in page


async def test_evaluations_page_and_filter_by_sample(
    engine: Engine, make_client: ClientMaker
) -> None:
    world = replay_world(engine)
    insert_evaluations(engine, realistic_rows(world, 47, random.Random(11)))
    client = await signed_in(make_client, engine)
    for sample in (None, "failing", "holdout"):
        first = VERSION.format(n=2) + (f"?sample={sample}" if sample else "")
        pages = await _walk(client, first)
        assert all(len(p) <= 20 for p in pages) and len(pages) >= 2 - (sample == "holdout")
        flat = [i for p in pages for i in p]
        assert flat == _stored_ids(engine, sample)  # complete, newest first, no repeats
    page = await html_of(client, VERSION.format(n=2) + "?sample=holdout")
    assert '<strong aria-current="true">holdout</strong>' in page
    later = await html_of(client, VERSION.format(n=2) + f"?before={_stored_ids(engine)[-1]}")
    assert "No evaluations here." in later and "newest first</a>" in later


async def test_a_version_never_replayed_says_so(engine: Engine, make_client: ClientMaker) -> None:
    replay_world(engine)
    client = await signed_in(make_client, engine)
    for number in (1, 3):
        page = await html_of(client, VERSION.format(n=number))
        assert "Not replayed: no evaluations are stored for this version." in page
        assert "<article" not in page and "win-rate-bar" not in page


async def test_the_prompt_page_shows_each_versions_win_rate(
    engine: Engine, make_client: ClientMaker
) -> None:
    world = replay_world(engine)
    insert_evaluations(
        engine,
        [evaluation_row(world, verdicts=("candidate", "candidate"))] * 1
        + [evaluation_row(world, verdicts=("tie", "tie"), sample="holdout")],
    )
    with engine.begin() as conn:
        conn.execute(
            update(PromptVersion)
            .where(PromptVersion.id == world.other_id)
            .values(status="rejected", status_reason=REJECTION)
        )
    client = await signed_in(make_client, engine)
    page = await html_of(client, "/ui/prompts/support-bot")
    summary = _summary(engine, 2)
    failing, holdout = summary.failing, summary.holdout
    assert failing.rate == 1.0 and holdout.rate == 0.5
    assert failing.low is not None and holdout.low is not None and holdout.high is not None
    assert f'failing 100% <span class="muted">({failing.low * 100:.0f}–100%)</span>' in page
    assert (
        f'holdout 50% <span class="muted">({holdout.low * 100:.0f}–{holdout.high * 100:.0f}%)'
        in page
    )
    assert 'href="/ui/prompts/support-bot/versions/2#replay"' in page
    assert page.count("not replayed") == 2  # v1 and v3
    assert "&lt;b&gt;not above&lt;/b&gt;" in page  # v3's status reason, escaped


PAGES = (
    "/ui/prompts/support-bot",
    "/ui/prompts/support-bot/versions/{n}",
    "/ui/prompts/support-bot/versions/{n}?sample=failing",
    "/ui/prompts/support-bot/versions/{n}?before=150",
)


async def test_query_counts_do_not_grow_with_the_evaluations(
    engine: Engine, make_client: ClientMaker
) -> None:
    world = replay_world(engine)
    client = await signed_in(make_client, engine)
    empty = [await query_count(client, p.format(n=2)) for p in PAGES]
    ids = conversations(engine, world, 120)
    insert_evaluations(engine, realistic_rows(world, 200, random.Random(9), conversation_ids=ids))
    assert len(_stored_ids(engine)) == 200
    full = [await query_count(client, p.format(n=2)) for p in PAGES]
    never = [await query_count(client, p.format(n=3)) for p in PAGES]
    assert empty == full == never
    assert all(n - 1 <= 10 for n in full), full  # 1: the session lookup


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("sample=both", "sample"),
        ("sample=%3Cscript%3E", "sample"),
        ("before=abc", "before"),
        ("before=0", "before"),
        ("before=99999999999999999999", "before"),
    ],
)
async def test_bad_replay_parameters_are_400_pages_naming_them(
    engine: Engine, make_client: ClientMaker, query: str, field: str
) -> None:
    replay_world(engine)
    client = await signed_in(make_client, engine)
    page = await html_of(client, f"{VERSION.format(n=2)}?{query}", 400)
    assert f"Field: <code>{field}</code>" in page and "<script>" not in page
