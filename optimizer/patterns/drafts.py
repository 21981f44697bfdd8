"""The insights of one run's findings: the reportable findings in groups about the same
conversations (grouping, with the shared conversations counted by overlap), each group a
draft (describe) with the ids of failed conversations behind it (aggregate). Reads the
database; takes the connection of the run's read-only transaction.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from optimizer.patterns import aggregate
from optimizer.patterns.aggregate import Bounds, VersionSums
from optimizer.patterns.describe import InsightDraft, group_draft
from optimizer.patterns.grouping import (
    Group,
    Subject,
    group_findings,
    overlap_candidates,
    overlap_ratios,
)
from optimizer.patterns.overlap import co_occurrences
from optimizer.patterns.segments import (
    EMPTY_GROUP,
    REGRESSION_WINDOW,
    Finding,
    GroupSums,
    Rules,
)

SAMPLED_SUBJECTS = 3  # subjects of a group whose failed conversations are sampled
MAX_GROUP_SAMPLE_IDS = 20

SampleKey = tuple[str | None, str | None, str]


def groups(
    conn: Connection,
    version_id: int,
    bounds: Bounds,
    sums: VersionSums,
    tags: list[GroupSums],
    findings: list[Finding],
) -> list[Group]:
    """The reportable findings in groups (see grouping): the candidate subjects' shared
    conversations counted in SQL, each pair's share taken of the smaller subject's
    conversations in the 7-day window (from the rollup's sums)."""
    reported = [f for f in findings if f.reportable]
    candidates = overlap_candidates(reported)
    counts = co_occurrences(conn, version_id, bounds, candidates) if candidates else {}
    sizes = {
        Subject(g.dimension, g.value): g.windows.get("7d", EMPTY_GROUP).conversations
        for g in [*sums.segments, *tags]
    }
    return group_findings(reported, overlap_ratios(counts, sizes))


def _samples(
    conn: Connection,
    version_id: int,
    bounds: Bounds,
    group: Group,
    cache: dict[SampleKey, list[int]],
    *,
    with_transcripts: bool,
) -> list[int]:
    """Failed conversations of the group's subjects, the main one's first: per subject the
    most recent of its widest window (a regression's: the last 24 h, where its failures
    are), for at most SAMPLED_SUBJECTS subjects, at most MAX_GROUP_SAMPLE_IDS in all."""
    ids: list[int] = []
    for subject in group.subjects[:SAMPLED_SUBJECTS]:
        windows = {f.test.window for f in group.facets if Subject.of(f.test) == subject}
        key = (subject.dimension, subject.value, "7d" if "7d" in windows else "24h")
        if key not in cache:
            cache[key] = aggregate.sample_of(
                conn, version_id, bounds, *key, with_transcripts=with_transcripts
            )
        ids += cache[key]
    return list(dict.fromkeys(ids))[:MAX_GROUP_SAMPLE_IDS]


def group_drafts(
    conn: Connection,
    version_id: int,
    bounds: Bounds,
    found: list[Group],
    findings: list[Finding],
    rules: Rules,
    *,
    with_transcripts: bool,
) -> list[InsightDraft]:
    """One draft per group, in the groups' order (strongest first)."""
    family = sum(1 for f in findings if f.q_value is not None)
    starts = {"24h": bounds.since_24h, "7d": bounds.since_7d, REGRESSION_WINDOW: bounds.since_7d}
    cache: dict[SampleKey, list[int]] = {}
    return [
        group_draft(
            group,
            rules=rules,
            family_size=family,
            version_id=version_id,
            window_starts=starts,
            window_end=bounds.until,
            sample_ids=_samples(
                conn, version_id, bounds, group, cache, with_transcripts=with_transcripts
            ),
        )
        for group in found
    ]
