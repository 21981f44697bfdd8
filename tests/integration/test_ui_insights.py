"""The dashboard's insights page through the real app: filters parsed as GET /insights
parses them (400 naming the parameter, 404 for an unknown prompt), each insight's evidence
in words and as stored, the versions generated from it, escaping, and a constant number of
queries on the small and the large seed (the module fixture `large_seed`, SQLite only).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape
from multidict import MultiDict
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from yarl import URL

from models.insights import PatternInsight
from models.prompts import Prompt, PromptVersion
from optimizer.db import session_factory
from optimizer.errors import InvalidInput
from optimizer.patterns import views
from optimizer.prompts import decode_insight_ids
from optimizer.ui.routes_insights import PAGE_SIZE, parse_filters
from tests.support.http_client import ADMIN_TOKEN, ClientMaker
from tests.support.ui_client import html_of, query_count, seeded_client, signed_in
from tests.support.ui_seed import Seeded

ARTICLE = re.compile(r'<article class="card insight" id="insight-(\d+)">(.*?)</article>', re.S)


def _articles(page: str) -> dict[int, str]:
    return {int(i): body for i, body in ARTICLE.findall(page)}


def _insights(engine: Engine) -> list[tuple[int, str, str, bool]]:
    """(id, prompt, kind, actionable) of every stored insight."""
    with session_factory(engine)() as session:
        rows = session.execute(
            select(
                PatternInsight.id, Prompt.name, PatternInsight.kind, PatternInsight.is_actionable
            ).join(Prompt, Prompt.id == PatternInsight.prompt_id)
        )
        return [(i, name, kind, bool(actionable)) for i, name, kind, actionable in rows]


def _generated(engine: Engine) -> dict[int, set[tuple[str, int]]]:
    """Per insight id, the versions whose recorded insight ids hold it (read directly)."""
    found: dict[int, set[tuple[str, int]]] = {}
    with session_factory(engine)() as session:
        rows = session.execute(
            select(Prompt.name, PromptVersion.version, PromptVersion.insight_ids).join(
                Prompt, Prompt.id == PromptVersion.prompt_id
            )
        )
        for name, number, raw in rows:
            for insight_id in decode_insight_ids(raw):
                found.setdefault(insight_id, set()).add((name, number))
    return found


@pytest.mark.parametrize("seed", ["empty", "one_version"])
async def test_no_insights_yet(engine: Engine, make_client: ClientMaker, seed: str) -> None:
    client, _ = await seeded_client(make_client, engine, seed)
    page = await html_of(client, "/ui/insights")
    assert "No insights yet - pattern analysis records them" in page
    assert 'aria-current="page">Insights' in page


async def test_every_insight_with_its_evidence_and_generated_versions(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, _ = await seeded_client(make_client, engine)
    page = await html_of(client, "/ui/insights")
    shown = _articles(page)
    stored = _insights(engine)
    assert set(shown) == {i for i, *_ in stored} and len(shown) == 9
    generated = _generated(engine)
    assert any(generated.values())  # the seed links versions to insights
    for insight_id, body in shown.items():
        links = set(re.findall(r'<a href="/ui/prompts/([^/"]+)/versions/(\d+)">\1 v\2</a>', body))
        assert {(n, int(v)) for n, v in links} == generated.get(insight_id, set())
        if not links:
            assert "no version made from it yet" in body
        assert "<summary>Evidence as stored (JSON)</summary>" in body
    # Evidence in words: the segment finding's segment, metric and counts.
    assert "<dt>segment</dt><dd>mobile</dd>" in page
    assert "<dt>metric</dt><dd>success</dd>" in page
    assert "412 conversations" in page
    assert "<dt>effect</dt><dd>4.31 → 4.02</dd>" in page
    # Stored text is escaped, in the title and in the raw JSON alike.
    assert "<script>alert" not in page
    assert (
        "Ratings fell after the last version &lt;script&gt;alert(&#39;seed&#39;)&lt;/script&gt;"
        in page
    )
    assert "配送" in page and "¿cuándo llega?" in page


async def test_filters_narrow_the_list(engine: Engine, make_client: ClientMaker) -> None:
    client, seeded = await seeded_client(make_client, engine)
    stored = _insights(engine)
    name = seeded.prompt_names[1]
    cases = {
        f"prompt={name}": {i for i, p, *_ in stored if p == name},
        "actionable=true": {i for i, *_, a in stored if a},
        "actionable=FALSE": {i for i, *_, a in stored if not a},
        "kind=theme": {i for i, _, k, _ in stored if k == "theme"},
        f"prompt={name}&kind=segment&actionable=true": {
            i for i, p, k, a in stored if p == name and k == "segment" and a
        },
        "prompt=&actionable=&kind=": {i for i, *_ in stored},
    }
    for query, expected in cases.items():
        page = await html_of(client, f"/ui/insights?{query}")
        assert set(_articles(page)) == expected, query
    page = await html_of(client, "/ui/insights?kind=regression&actionable=false")
    assert '<option value="regression" selected>' in page
    assert '<option value="false" selected>' in page
    assert 'href="/ui/insights">clear filters</a>' in page


@pytest.mark.parametrize(
    ("query", "status", "field", "message"),
    [
        ("kind=bogus", 400, "kind", "kind must be one of segment, regression, theme; got 'bogus'"),
        ("actionable=maybe", 400, "actionable", "actionable must be true or false; got 'maybe'"),
        ("prompt=bad%20name!", 400, "prompt", "prompt must be 1 to 200 characters"),
        ("prompt=%00", 400, "prompt", "prompt contains a NUL character"),
        ("prompt=no-such-prompt", 404, None, "no prompt named 'no-such-prompt'"),
    ],
)
async def test_bad_filters_get_the_apis_messages(
    engine: Engine,
    make_client: ClientMaker,
    query: str,
    status: int,
    field: str | None,
    message: str,
) -> None:
    client, _ = await seeded_client(make_client, engine, "one_version")
    page = await html_of(client, f"/ui/insights?{query}", status)
    assert str(escape(message)) in page
    if field is not None:
        assert f"Field: <code>{field}</code>" in page
    api = await client.get(f"/insights?{query}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert api.status == status
    body = await api.json()
    assert message in body["error"] and body["field"] == field


@given(
    st.dictionaries(
        st.sampled_from(["prompt", "actionable", "kind", "notice"]),
        st.text(max_size=20),
        max_size=4,
    )
)
def test_filters_parse_or_name_their_parameter(params: dict[str, str]) -> None:
    try:
        filters = parse_filters(MultiDict(params))
    except InvalidInput as exc:
        assert exc.field in ("prompt", "actionable", "kind") and exc.field in str(exc)
        return
    assert filters.kind in (None, *views.KINDS)
    assert parse_filters(URL(filters.url()).query) == filters


async def test_hand_edited_evidence_reads_safely(engine: Engine, make_client: ClientMaker) -> None:
    client, _ = await seeded_client(make_client, engine)
    ids = [i for i, *_ in _insights(engine)]
    edits = {
        ids[
            0
        ]: '{"effect": NaN, "metric": "<b>m</b>", "ci_low": 1e400, "n": 10000000000000000000000}',
        ids[1]: "[1, 2, 3]",
        ids[2]: "not json",
        ids[3]: '{"group": {"n": "many"}, "terms": [{"term": "<i>t</i>"}, 7, null]}',
    }
    with session_factory(engine).begin() as session:
        for insight_id, text in edits.items():
            session.execute(
                update(PatternInsight).where(PatternInsight.id == insight_id).values(evidence=text)
            )
    page = await html_of(client, "/ui/insights")
    assert len(_articles(page)) == 9
    assert "<b>m</b>" not in page and "<i>t</i>" not in page
    assert "&lt;b&gt;m&lt;/b&gt;" in page
    assert "<dt>unreadable</dt><dd>not json</dd>" in page


async def test_read_only_mode_shows_the_page(engine: Engine, make_client: ClientMaker) -> None:
    client, _ = await seeded_client(make_client, engine, ui_access="read-only")
    page = await html_of(client, "/ui/insights")
    assert len(_articles(page)) == 9
    assert 'method="post"' not in page.replace('method="post" action="/ui/logout"', "")


async def test_the_large_seed_shows_one_page_in_constant_queries(
    large_seed: tuple[Engine, Seeded], sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    engine, _ = large_seed
    big = await signed_in(make_client, engine)
    small, _ = await seeded_client(make_client, sqlite_engine)
    page = await html_of(big, "/ui/insights")
    assert len(_articles(page)) == PAGE_SIZE
    assert f"The {PAGE_SIZE} most recently seen are shown" in page
    for query in ("", "?kind=segment", "?actionable=true&kind=regression"):
        assert await query_count(big, f"/ui/insights{query}") == await query_count(
            small, f"/ui/insights{query}"
        )
    assert await query_count(big, "/ui/insights") <= 6


GROUPED = {
    "kind": "segment",
    "dimension": "segment",
    "value": "billing",
    "metric": "success",
    "window": "7d",
    "effect": -0.41,
    "facets": [
        {
            "dimension": "segment",
            "value": "billing",
            "metric": "success",
            "window": "7d",
            "inside": 0.3429,
            "outside": 0.7548,
            "n": 1610,
            "units": 307,
            "effect": -0.4119,
            "ci_low": -0.4435,
            "ci_high": -0.3804,
            "q_value": 9.9e-08,
            "actionable": True,
        },
        {
            "dimension": "tag",
            "value": "<script>alert('facet')</script>",
            "metric": "rating",
            "window": "24h",
            "inside": 2.62,
            "outside": 3.51,
            "n": 41,
            "units": 30,
            "effect": -0.222,
            "q_value": 0.003,
            "actionable": False,
            "not_actionable_because": ["41 observations, fewer than the minimum 50"],
        },
        {"dimension": None, "value": None, "metric": "success", "window": "24h_vs_prior_6d"},
        "not a facet",
    ],
    "overlaps": [{"dimension": "tag", "value": "<script>alert('facet')</script>", "overlap": 0.97}],
    "overlap_min": 0.8,
}


async def test_a_grouped_insight_shows_its_facets(engine: Engine, make_client: ClientMaker) -> None:
    client, _ = await seeded_client(make_client, engine)
    target, single = [i for i, *_ in _insights(engine)][:2]
    with session_factory(engine).begin() as session:
        session.execute(
            update(PatternInsight)
            .where(PatternInsight.id == target)
            .values(evidence=json.dumps(GROUPED))
        )
    page = await html_of(client, "/ui/insights")
    body = _articles(page)[target]
    assert "The 3 findings this insight groups, strongest first" in body
    rows = re.findall(r"<tr><td>(.*?)</td>", body)
    assert rows == [
        "segment = billing",
        "tag = &lt;script&gt;alert(&#39;facet&#39;)&lt;/script&gt;",
        "last 24 h (regression)",
    ]
    assert "<td>last 7 days</td><td>0.343</td><td>0.755</td><td>-0.412</td>" in body
    assert "<td>-0.444 to -0.38</td><td>9.9e-08</td><td>1,610 (307 users)</td><td>yes</td>" in body
    assert 'no <span class="muted">(41 observations, fewer than the minimum 50)</span>' in body
    assert (
        "<dt>groups</dt><dd>3 findings about segment = billing, "
        "tag = &lt;script&gt;alert(&#39;facet&#39;)&lt;/script&gt;, last 24 h (regression) "
        "(success, rating)</dd>"
    ) in body
    assert "97% of the smaller group&#39;s conversations" in body
    assert "<script>alert('facet')" not in page
    # A single finding (no facets) has no table.
    assert '<table class="facets">' not in _articles(page)[single]
