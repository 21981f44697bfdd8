"""The pattern rollup against a full scan: for any conversations, stored in any batches with
rollup passes in between (each pass adds what arrived since the previous one), the sums
pattern analysis reads from the rollup equal those of a scan of the raw conversations for
the same whole-hour windows (tests/support/pattern_scan.py), on both databases. Rows are
what real traffic sends: units that come back many times (a few of them very often),
optional fields missing, Unicode segments and tags, tags listed twice, tags that are not a
JSON list of strings, and times in many hours: on hour boundaries, on the windows' edges
(one microsecond either side), in the future and older than the rollup keeps."""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from models.conversations import Conversation
from models.prompts import PromptVersion
from optimizer.patterns import aggregate
from optimizer.patterns.aggregate import Bounds
from optimizer.patterns.segments import GroupSums
from tests.support import pattern_scan
from tests.support.experiments import seed_prompt
from tests.support.patterns import roll_up

HOUR = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # the hour the analysis runs in
NAMES = itertools.count()
MICRO = timedelta(microseconds=1)

# Around every edge a window or the rollup has: the run's hour, 24 h and 168 h before it,
# the rollup's horizon 192 h before it.
edges = st.builds(
    lambda hours, nudge: HOUR - timedelta(hours=hours) + nudge,
    st.sampled_from([0, 1, 23, 24, 25, 167, 168, 169, 192, 193]),
    st.sampled_from([timedelta(0), MICRO, -MICRO, timedelta(minutes=30)]),
)
anywhere = st.floats(-3, 200).map(lambda hours: HOUR - timedelta(hours=hours))
moment = st.one_of(edges, anywhere)
words = st.sampled_from(["refund", "vip", "日本語", "ß-ünï", "🙂 emoji", "t" * 100, "web"])
tags = st.one_of(
    st.none(),
    st.lists(words, max_size=6).map(json.dumps),  # duplicates come often
    st.lists(words, max_size=3).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.sampled_from(["[not json", '{"refund": 1}', '"refund"', "[]", '["refund", 7]', ""]),
)


@st.composite
def conversation(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One conversation, or a heavy unit's burst of copies of it."""
    row = {
        "unit_id": draw(st.sampled_from(["u0", "u1", "u2", "ü3", "用户4", "u5", "u6", "u7"])),
        "segment": draw(st.one_of(st.none(), st.sampled_from(["free", "pro", "ünï", "企業"]))),
        "success": draw(st.one_of(st.none(), st.booleans())),
        "rating": draw(st.one_of(st.none(), st.integers(1, 5))),
        "tags": draw(tags),
        "occurred_at": draw(moment),
    }
    copies = draw(st.one_of(st.just(1), st.integers(1, 40)))
    return [row] * copies


batches = st.lists(st.lists(conversation(), max_size=12), min_size=1, max_size=5)


def _store(engine: Engine, version_id: int, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        prompt_id = conn.scalar(
            select(PromptVersion.prompt_id).where(PromptVersion.id == version_id)
        )
        conn.execute(
            insert(Conversation),
            [{**r, "prompt_id": prompt_id, "version_id": version_id} for r in rows],
        )


def _flat(groups: list[GroupSums]) -> list[Any]:
    return [(g.dimension, g.value, dataclasses.asdict(g)) for g in groups]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=batches,
    passes=st.lists(st.booleans(), min_size=5, max_size=5),
    minute=st.sampled_from([timedelta(0), timedelta(minutes=59, seconds=59), timedelta(minutes=7)]),
)
def test_rollup_sums_equal_a_full_scan(
    module_engine: Engine,
    batches: list[list[list[dict[str, Any]]]],
    passes: list[bool],
    minute: timedelta,
) -> None:
    version_id = seed_prompt(module_engine, f"patterns-{next(NAMES)}", candidates=0)[1]
    now = HOUR + minute
    for batch, pass_after in zip(batches, passes, strict=False):
        rows = [row for burst in batch for row in burst]
        if rows:
            _store(module_engine, version_id, rows)
        if pass_after:
            roll_up(module_engine, now)
    roll_up(module_engine, now)  # the run's own pass
    bounds = Bounds(now)
    with module_engine.connect() as conn:
        got = aggregate.segment_sums(conn, version_id, bounds)
        got_tags = aggregate.tag_sums(conn, version_id, bounds)
        want = pattern_scan.segment_sums(conn, version_id, bounds)
        want_tags = pattern_scan.tag_sums(conn, version_id, bounds)
    # Every figure is a sum of whole numbers, so the two agree exactly.
    assert dataclasses.asdict(got.totals) == dataclasses.asdict(want.totals)
    assert _flat(got.segments) == _flat(want.segments)
    assert _flat(got_tags) == _flat(want_tags)
