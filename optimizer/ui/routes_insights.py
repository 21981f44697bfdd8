"""GET /ui/insights?prompt=&actionable=&kind=: what pattern analysis found, newest first,
each with its evidence in words (and raw), the findings it groups (its facets, as a table)
and the versions generated from it.

Filters are parsed by patterns.views' own parsers, so a bad value gets the message
GET /insights gives; an unknown prompt is a 404 page, as there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web as aioweb
from multidict import MultiMapping
from sqlalchemy.orm import Session
from yarl import URL

from optimizer.patterns import views
from optimizer.stats.finite import finite_only
from optimizer.ui import web
from optimizer.ui.evidence import FacetRow, evidence_facts, facet_rows
from optimizer.ui.routes_experiments import given

# The newest this many are shown; the filters narrow the rest down (list_insights has no
# keyset, and a prompt keeps one insight per problem, so the list stays short).
PAGE_SIZE = 50
SECTION = "insights"


@dataclass(frozen=True)
class InsightFilters:
    prompt: str | None
    actionable: bool | None
    kind: str | None

    def url(self, **change: Any) -> str:
        """This list's URL with some filters changed (None drops one)."""
        values = {"prompt": self.prompt, "actionable": self.actionable, "kind": self.kind}
        values.update(change)
        query = {
            k: (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in values.items()
            if v is not None
        }
        return str(URL("/ui/insights").with_query(query))


def parse_filters(query: MultiMapping[str]) -> InsightFilters:
    prompt, actionable, kind = (
        given(query, "prompt"),
        given(query, "actionable"),
        given(query, "kind"),
    )
    return InsightFilters(
        prompt=None if prompt is None else views.parse_prompt(prompt),
        actionable=None if actionable is None else views.parse_actionable(actionable),
        kind=None if kind is None else views.parse_kind(kind),
    )


@dataclass(frozen=True)
class InsightRow:
    insight: views.InsightView
    facts: list[tuple[str, str]]
    facets: list[FacetRow]  # the findings a group holds, strongest first; none for one
    raw: str  # the evidence as indented JSON, for the <details> under the facts
    generated: list[tuple[str, int]]  # (prompt, version number) made from this insight


def raw_json(evidence: Mapping[str, Any]) -> str:
    # A row edited by hand may hold NaN (json.loads reads it); nothing shown may.
    return json.dumps(finite_only(evidence), indent=2, ensure_ascii=False)


def list_page(filters: InsightFilters) -> Callable[[Session], Mapping[str, object]]:
    def build(session: Session) -> Mapping[str, object]:
        found = views.list_insights(
            session,
            prompt=filters.prompt,
            actionable=filters.actionable,
            kind=filters.kind,
            limit=PAGE_SIZE + 1,
        )
        shown = found[:PAGE_SIZE]
        generated = views.generated_from(session, [i.id for i in shown])
        return {
            "rows": [
                InsightRow(
                    i,
                    evidence_facts(i.evidence),
                    facet_rows(i.evidence),
                    raw_json(i.evidence),
                    generated[i.id],
                )
                for i in shown
            ],
            "more": len(found) > PAGE_SIZE,
            "page_size": PAGE_SIZE,
            "filters": filters,
            "kinds": views.KINDS,
        }

    return build


async def insights(request: aioweb.Request) -> aioweb.Response:
    filters = parse_filters(request.query)
    return await web.page(request, "insights.html", list_page(filters), section=SECTION)


def add_routes(ui: aioweb.Application) -> None:
    ui.router.add_get("/insights", insights)
