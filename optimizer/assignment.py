"""Sticky assignment of a unit (a user, a session) to one arm of an experiment.

Pure and deterministic: sha256 of "<experiment_id>:<unit_id>" maps the unit to a point in
[0, 1); the arms' cumulative weights cut that interval into slices. The same unit gets the
same arm on every call, in every process and on every Python version (hash() is salted per
process, so it is never used here), and different experiments split units independently.

The caller passes every arm of the experiment, stopped ones included, so slices never move:
when an arm stops, the caller sends the units of its slice to control and every other unit
keeps its arm. (Dropping the stopped arm from the list would shift the slices and move units
between the arms still running, mixing their samples.)

The scheme is specified for other languages, with test vectors, in docs/assignment.md; any
change to it moves live users between arms, so it gets a new SCHEME_VERSION.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

SCHEME_NAME = "sha256-unit-point"
SCHEME_VERSION = 1
SCHEME = f"{SCHEME_NAME}/{SCHEME_VERSION}"

_SCALE = float(2**64)


def unit_point(experiment_id: int, unit_id: str) -> float:
    """The unit's place in [0, 1] for this experiment: the first 8 bytes of the digest as an
    unsigned integer, rounded to the nearest float64 (Python's int/float does that), over
    2**64. Points of the top 2**10 integers round to exactly 1.0: pick_arm's fallback."""
    digest = hashlib.sha256(f"{experiment_id}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def pick_arm(experiment_id: int, unit_id: str, arms: Sequence[tuple[int, float]]) -> int:
    """The id of the arm whose slice holds this unit. `arms` are (arm_id, weight) pairs of all
    the experiment's arms; they are ordered by arm_id here so the caller's order cannot change
    an assignment."""
    if not arms:
        raise ValueError("pick_arm needs at least one arm")
    ordered = sorted(arms)
    for arm_id, weight in ordered:
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"arm {arm_id} has weight {weight!r}; weights must be > 0")
    # A plain left-to-right float64 sum (not math.fsum, which is exactly rounded and costly to
    # match in other languages): every SDK can repeat it bit for bit, and the total is then
    # exactly the last cumulative sum.
    total = 0.0
    for _, weight in ordered:
        total += weight
    target = unit_point(experiment_id, unit_id) * total
    cumulative = 0.0
    for arm_id, weight in ordered:
        cumulative += weight
        if target < cumulative:
            return arm_id
    return ordered[-1][0]  # target == total: a point of 1.0, or the product rounded up
