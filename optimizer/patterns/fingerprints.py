"""Stable names for insights: the same problem seen in a later run gets the same
fingerprint, so its row is updated (last_seen_at, occurrences) instead of a new one added.

Forms: "group:segment=billing", "group:tag=refund", "group:regression" (a group of
findings, see grouping), "theme:statistical", "theme:llm". Before grouping each finding had
its own row, "segment:segment=billing:success:24h" or "regression:success"; such rows are
no longer written, and the first run that does not confirm them (any run after the
upgrade) stops them being actionable (store).
The column holds 200 characters; a value long enough to overflow it (segments may have 200
of their own) is cut and followed by a digest of the whole value, so it stays unique.

A group is named after its main facet's subject when it is new. Its membership moves a
little from hour to hour (a tag crosses the overlap threshold, a weaker facet comes or
goes, two facets swap places), so a group first takes over the name of a stored group row
it shares a subject with (`name_groups`): the problem keeps its row, its history and its
occurrences while its main facet changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from optimizer.patterns.grouping import Subject
from optimizer.patterns.segments import GroupTest

MAX_FINGERPRINT_CHARS = 200
MAX_VALUE_CHARS = 120
GROUP_PREFIX = "group:"
THEME_STATISTICAL = "theme:statistical"
THEME_LLM = "theme:llm"
# A stored group row last seen longer ago describes an earlier episode: a problem coming
# back after it gets the name of its main facet again, not the row of whatever it last
# overlapped.
CONTINUITY_DAYS = 7


def _value(value: str) -> str:
    if len(value) <= MAX_VALUE_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{value[: MAX_VALUE_CHARS - 18]}~{digest}"


def segment(dimension: str, value: str, metric: str, window: str) -> str:
    """The name a single finding had before grouping (read, never written)."""
    return f"segment:{dimension}={_value(value)}:{metric}:{window}"


def regression(metric: str) -> str:
    """The name a regression finding had before grouping (read, never written)."""
    return f"regression:{metric}"


def of_test(test: GroupTest) -> str:
    """A single finding's own name: what identifies it among the facets of a run."""
    if test.kind == "regression":
        return regression(test.metric)
    assert test.dimension is not None and test.value is not None
    return segment(test.dimension, test.value, test.metric, test.window)


def group(subject: Subject) -> str:
    """The name of a new group whose main facet is about `subject`."""
    if subject.dimension is None or subject.value is None:
        return f"{GROUP_PREFIX}regression"
    return f"{GROUP_PREFIX}{subject.dimension}={_value(subject.value)}"


@dataclass(frozen=True)
class StoredGroup:
    """A group row of the prompt seen within CONTINUITY_DAYS: its name, the subjects of
    its facets as last stored, and when it was last seen."""

    fingerprint: str
    subjects: frozenset[Subject]
    last_seen_at: datetime


def name_groups(groups: Sequence[Sequence[Subject]], stored: Sequence[StoredGroup]) -> list[str]:
    """A distinct name per group (each given as its subjects, the main one first; the
    groups strongest first). Each group takes over at most one stored row it shares a
    subject with, and each row goes to at most one group: first the row named after the
    group's main subject, then the row sharing most subjects, the stronger group and the
    row seen last first. A group without one is named after its main subject, or the next
    of its subjects whose name is still free ("#2", "#3"... after the main one's when
    none is)."""
    pairs = []
    for i, subjects in enumerate(groups):
        wanted = set(subjects)
        own = group(subjects[0]) if subjects else None
        for row in stored:
            shared = len(row.subjects & wanted)
            if shared:
                order = (row.fingerprint != own, -shared, i, -row.last_seen_at.timestamp())
                pairs.append((order, row.fingerprint, i))
    names: dict[int, str] = {}
    taken: set[str] = set()
    for _, fingerprint, i in sorted(pairs):
        if i not in names and fingerprint not in taken:
            names[i] = fingerprint
            taken.add(fingerprint)
    out = []
    for i, subjects in enumerate(groups):
        name = names.get(i) or _free([group(s) for s in subjects], taken)
        taken.add(name)
        out.append(name)
    return out


def _free(candidates: list[str], taken: set[str]) -> str:
    for name in candidates:
        if name not in taken:
            return name
    k = 2
    while f"{candidates[0]}#{k}" in taken:
        k += 1
    return f"{candidates[0]}#{k}"
