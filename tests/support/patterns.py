"""Test helpers for pattern analysis: a rollup pass in its own transaction, as the
pattern_analysis job runs one before it reads (tests that call optimizer.patterns.aggregate
directly need one first), and seeded worlds of repeat users for grouped insights."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from optimizer.db import session_factory
from optimizer.patterns.grouping import Subject
from optimizer.patterns.rollup import Pass, roll_up_patterns
from optimizer.patterns.segments import REGRESSION_WINDOW, Finding, GroupTest
from optimizer.patterns.significance import TEST_NAME, Significance


def roll_up(engine: Engine, now: datetime) -> Pass:
    """Add the conversations stored since the previous pass to the pattern rollup."""
    with session_factory(engine).begin() as session:
        return roll_up_patterns(session, now)


# --- seeded worlds for grouping ------------------------------------------------------------

OTHER_SEGMENTS = ("tech", "sales", "account", "shipping")


@dataclass(frozen=True)
class User:
    unit_id: str
    home: str  # the segment most of the user's conversations are in
    conversations: int
    lean: float  # the user's own shift of the success chance (users go alike)


def users(rng: random.Random, homes: Sequence[str], count: int) -> list[User]:
    """Users who come back: most a few times, a heavy tail many times (Pareto, shape 1.3,
    capped at 150), each with a home segment and a success chance of their own."""
    return [
        User(
            f"user-{i}-{'ü' if i % 7 == 0 else ''}{homes[i % len(homes)]}",
            homes[i % len(homes)],
            min(150, int(rng.paretovariate(1.3) * 2)),
            rng.uniform(-0.1, 0.1),
        )
        for i in range(count)
    ]


def grouped_world(
    seed: int,
    now: datetime,
    *,
    bad: Mapping[str, float],
    tag_of: Mapping[str, str] | None = None,
    users_per_segment: int = 220,
    spread_tag: tuple[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Conversations of the last 7 days for users in `bad`'s segments (success chance the
    given rate) and OTHER_SEGMENTS (0.75). A user stays mostly in their home segment (one in
    ten of their conversations elsewhere). Every conversation of a segment in `tag_of`
    carries that tag, and none elsewhere does; `spread_tag` (tag, share) is listed on that
    share of all conversations whatever their segment. Everyone may also carry "web".
    Ratings follow success, so both metrics show the same gaps."""
    rng = random.Random(seed)
    tag_of = tag_of or {}
    segments = [*bad, *OTHER_SEGMENTS]
    out = []
    for user in users(rng, segments, users_per_segment * len(segments)):
        for _ in range(user.conversations):
            segment = user.home if rng.random() < 0.9 else rng.choice(segments)
            ok = rng.random() < bad.get(segment, 0.75) + user.lean
            tags = ["web"] if rng.random() < 0.5 else []
            if segment in tag_of:
                tags.append(tag_of[segment])
            if spread_tag is not None and rng.random() < spread_tag[1]:
                tags.append(spread_tag[0])
            out.append(
                {
                    "unit_id": user.unit_id,
                    "segment": segment,
                    "success": ok,
                    "rating": rng.randint(3, 5) if ok else rng.randint(1, 3),
                    "tags": json.dumps(tags) if tags else None,
                    "transcript": f"user: question about {segment} <script>x</script> ¿qué?",
                    "occurred_at": now - timedelta(hours=rng.uniform(0.01, 167.9)),
                }
            )
    return out


# --- findings for the pure tests -----------------------------------------------------------


def finding(subject: Subject, metric: str, window: str, effect: float, actionable: bool) -> Finding:
    """A reportable finding about `subject` with the given effect (the group's rate 0.4,
    the rest's 0.4 - effect); a regression's window is always REGRESSION_WINDOW."""
    regression = subject.dimension is None
    result = Significance(
        TEST_NAME,
        200,
        800,
        60,
        240,
        0.4,
        0.4 - effect,
        effect,
        effect - 0.1,
        effect + 0.01,
        -5.0,
        1e-6,
    )
    test = GroupTest(
        "regression" if regression else "segment",
        subject.dimension,
        subject.value,
        metric,
        REGRESSION_WINDOW if regression else window,
        200,
        result,
    )
    reasons = () if actionable else ("effect is below the minimum",)
    return Finding(test, 1e-5, True, True, effect, actionable, reasons)
