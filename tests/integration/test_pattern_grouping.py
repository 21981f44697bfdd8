"""One problem, one insight, against real SQLite and PostgreSQL: findings about the same
conversations become one insight with its facets, unrelated problems stay apart, reruns
update the row they continue, rows from before grouping stop being actionable, and variant
generation reads the group. The worlds have repeat users with a heavy tail of activity
(tests/support/patterns.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.insights import PatternInsight
from models.jobs import OptimizationJob
from models.prompts import PromptVersion
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.jobs.pattern_analysis import analyze_patterns
from optimizer.patterns.segments import METRICS, WINDOWS
from optimizer.variants.store import load_inputs
from tests.support.experiments import Clock, make_ctx, make_job, seed_prompt
from tests.support.patterns import grouped_world

NOW = datetime.fromisoformat("2026-03-02T12:00:00+00:00")
NAME = "support-bot"
CAN_GENERATE = Settings(llm_provider="offline")


def seed(engine: Engine, data: list[dict[str, Any]]) -> tuple[int, int]:
    """The prompt (version 1 active) and its conversations: (prompt id, version id)."""
    version_id = seed_prompt(engine, NAME, candidates=1)[1]
    with session_factory(engine).begin() as session:
        prompt_id = session.scalars(
            select(PromptVersion.prompt_id).where(PromptVersion.id == version_id)
        ).one()
        session.execute(
            insert(Conversation),
            [{**row, "prompt_id": prompt_id, "version_id": version_id} for row in data],
        )
    return prompt_id, version_id


async def run(engine: Engine, now: datetime = NOW) -> dict[str, Any]:
    ctx = make_ctx(engine, Clock(now), CAN_GENERATE)
    job, _ = make_job(engine, "pattern_analysis", {"prompt": NAME})
    return (await analyze_patterns(ctx, job))["prompts"][0]  # type: ignore[no-any-return]


def stored(engine: Engine) -> dict[str, PatternInsight]:
    with session_factory(engine)() as session:
        return {i.fingerprint: i for i in session.scalars(select(PatternInsight))}


def actionable(engine: Engine) -> dict[str, PatternInsight]:
    return {fp: i for fp, i in stored(engine).items() if i.is_actionable}


def evidence(insight: PatternInsight) -> dict[str, Any]:
    return json.loads(insight.evidence)  # type: ignore[no-any-return]


def subjects(insight: PatternInsight) -> set[tuple[str | None, str | None]]:
    return {(f["dimension"], f["value"]) for f in evidence(insight)["facets"]}


def generation_jobs(engine: Engine) -> list[OptimizationJob]:
    with session_factory(engine)() as session:
        query = select(OptimizationJob).where(OptimizationJob.type == "variant_generation")
        return list(session.scalars(query))


def billing_refund(seed_: int) -> list[dict[str, Any]]:
    """A bad billing segment whose conversations all carry the tag refund (and no other
    conversation does)."""
    return grouped_world(seed_, NOW, bad={"billing": 0.35}, tag_of={"billing": "refund"})


async def test_a_bad_segment_all_tagged_refund_is_one_insight(engine: Engine) -> None:
    seed(engine, billing_refund(1))
    result = await run(engine)

    found = actionable(engine)
    assert list(found) == ["group:segment=billing"]
    billing = found["group:segment=billing"]
    shown = evidence(billing)
    # Eight findings (2 dimensions x 2 metrics x 2 windows), every one a facet.
    assert result["actionable"] == 8 and result["actionable_insights"] == 1
    assert {(f["dimension"], f["value"], f["metric"], f["window"]) for f in shown["facets"]} == {
        (d, v, m, w)
        for d, v in (("segment", "billing"), ("tag", "refund"))
        for m in METRICS
        for w in WINDOWS
    }
    assert all(f["actionable"] and f["effect"] < 0 for f in shown["facets"])
    # The main facet is the strongest; the top level is its own, as for a single finding.
    main = shown["facets"][0]
    assert abs(main["effect"]) == max(abs(f["effect"]) for f in shown["facets"])
    assert (shown["dimension"], shown["value"]) == ("segment", "billing")
    assert (shown["metric"], shown["window"]) == (main["metric"], main["window"])
    assert billing.effect_size is not None and abs(billing.effect_size - main["effect"]) < 1e-4
    assert shown["overlaps"] == [{"dimension": "tag", "value": "refund", "overlap": 1.0}]
    assert "(also tag 'refund'; rating)" in billing.title
    assert "One insight for 8 findings" in (billing.detail or "")
    with session_factory(engine)() as session:
        for cid in shown["sample_conversation_ids"]:
            row = session.get(Conversation, cid)
            assert row is not None and row.success is False and row.segment == "billing"
    # Generation is queued for the one insight and reads it with its facets.
    (job,) = generation_jobs(engine)
    assert json.loads(job.payload)["insight_ids"] == [billing.id]
    with session_factory(engine)() as session:
        (facts,) = load_inputs(session, NAME, None).insights
    assert facts.id == billing.id and len(facts.evidence["facets"]) == 8


async def test_two_unrelated_bad_segments_are_two_insights(engine: Engine) -> None:
    data = grouped_world(
        2,
        NOW,
        bad={"billing": 0.35, "sales": 0.45},
        tag_of={"billing": "refund"},
        spread_tag=("vip", 0.3),
    )
    seed(engine, data)
    result = await run(engine)
    found = actionable(engine)
    assert set(found) == {"group:segment=billing", "group:segment=sales"}
    assert result["actionable_insights"] == 2
    assert subjects(found["group:segment=billing"]) == {("segment", "billing"), ("tag", "refund")}
    assert subjects(found["group:segment=sales"]) == {("segment", "sales")}
    (job,) = generation_jobs(engine)
    assert sorted(json.loads(job.payload)["insight_ids"]) == sorted(i.id for i in found.values())


async def test_a_tag_over_two_bad_segments_does_not_chain_them(engine: Engine) -> None:
    """refund is on every billing and every sales conversation: it shares all of each
    segment's conversations, but billing and sales share none, so they stay two insights
    (grouping around the strongest subject is not transitive)."""
    data = grouped_world(
        3,
        NOW,
        bad={"billing": 0.1, "sales": 0.45},
        tag_of={"billing": "refund", "sales": "refund"},
    )
    seed(engine, data)
    await run(engine)
    found = actionable(engine)
    assert set(found) == {"group:segment=billing", "group:segment=sales"}
    assert subjects(found["group:segment=billing"]) == {("segment", "billing"), ("tag", "refund")}
    assert subjects(found["group:segment=sales"]) == {("segment", "sales")}


async def test_rerunning_updates_the_insight_instead_of_adding_one(engine: Engine) -> None:
    seed(engine, billing_refund(4))
    first = await run(engine)
    before = stored(engine)
    # An hour later the windows have moved and the figures changed a little.
    second = await run(engine, NOW + timedelta(hours=1))
    after = stored(engine)
    assert set(after) == set(before)
    assert {fp: i.id for fp, i in after.items()} == {fp: i.id for fp, i in before.items()}
    assert after["group:segment=billing"].occurrences == 2
    assert after["group:segment=billing"].is_actionable
    assert second["new"] == 0 and second["updated"] == first["new"]
    assert second["new_actionable_insight_ids"] == []
    assert len(generation_jobs(engine)) == 1


def legacy(
    prompt_id: int, version_id: int, dimension: str, value: str, metric: str
) -> dict[str, Any]:
    """A row as pattern analysis wrote it before grouping: one finding, actionable."""
    window = "7d"
    return {
        "prompt_id": prompt_id,
        "version_id": version_id,
        "kind": "segment",
        "fingerprint": f"segment:{dimension}={value}:{metric}:{window}",
        "title": f"{dimension} {value!r}: {metric} worse",
        "evidence": json.dumps(
            {"kind": "segment", "dimension": dimension, "value": value, "metric": metric}
        ),
        "is_actionable": True,
        "effect_size": -0.3,
        "first_seen_at": NOW - timedelta(hours=3),
        "last_seen_at": NOW - timedelta(hours=1),
    }


async def test_rows_from_before_grouping_stop_being_actionable(engine: Engine) -> None:
    prompt_id, version_id = seed(engine, billing_refund(5))
    old = [
        legacy(prompt_id, version_id, "segment", "billing", "success"),
        legacy(prompt_id, version_id, "tag", "refund", "rating"),
        legacy(prompt_id, version_id, "segment", "tech", "success"),  # no longer found
    ]
    with session_factory(engine).begin() as session:
        session.execute(insert(PatternInsight), old)

    result = await run(engine)

    found = stored(engine)
    assert {fp for fp, i in found.items() if i.is_actionable} == {"group:segment=billing"}
    assert all(not found[row["fingerprint"]].is_actionable for row in old)  # history stays
    # Billing was already acted on for this version under its old rows: not new, so no
    # second round of generation for the same problem.
    assert result["new_actionable_insight_ids"] == [] and generation_jobs(engine) == []
    with session_factory(engine)() as session:
        facts = load_inputs(session, NAME, None).insights
    assert [f.id for f in facts] == [found["group:segment=billing"].id]


async def test_a_group_keeps_the_row_of_the_problem_it_continues(engine: Engine) -> None:
    """A stored group seen lately about refund (named when refund was its main subject)
    is continued under its name; one last seen before CONTINUITY_DAYS is not."""
    prompt_id, version_id = seed(engine, billing_refund(6))
    facet = {"dimension": "tag", "value": "refund", "metric": "success", "window": "7d"}
    rows = [
        {
            "prompt_id": prompt_id,
            "version_id": version_id,
            "kind": "segment",
            "fingerprint": fingerprint,
            "title": "tag 'refund': success rate worse",
            "evidence": json.dumps({"kind": "segment", **facet, "facets": [facet]}),
            "is_actionable": actionable_,
            "occurrences": 5,
            "first_seen_at": seen - timedelta(days=1),
            "last_seen_at": seen,
        }
        for fingerprint, seen, actionable_ in (
            ("group:tag=refund", NOW - timedelta(hours=1), True),
            ("group:segment=billing", NOW - timedelta(days=9), False),
        )
    ]
    with session_factory(engine).begin() as session:
        session.execute(insert(PatternInsight), rows)

    result = await run(engine)

    found = stored(engine)
    continued = found["group:tag=refund"]
    assert continued.is_actionable and continued.occurrences == 6
    assert subjects(continued) == {("segment", "billing"), ("tag", "refund")}
    assert evidence(continued)["value"] == "billing"  # the main facet is billing's now
    assert not found["group:segment=billing"].is_actionable
    assert found["group:segment=billing"].occurrences == 5  # the old episode, untouched
    assert result["new_actionable_insight_ids"] == []
