"""The hashing scheme sha256-unit-point, version 1, written from docs/assignment.md alone.

A unit's arm is a pure function of the experiment id, the unit id and every arm's id and
weight, so this process, the service and any other SDK place each unit in the same arm
without talking to each other. The service's own implementation is deliberately not
imported: these functions are checked against the published test vectors instead.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Sequence

SCHEME_NAME = "sha256-unit-point"
SCHEME_VERSION = 1

MAX_UNIT_ID_CHARS = 200
_TWO_TO_64 = float(2**64)


def unit_point(experiment_id: int, unit_id: str) -> float:
    """The unit's point in [0, 1]: the first 8 bytes of sha256("<experiment id>:<unit id>")
    as a big-endian unsigned integer, rounded to the nearest float64, over 2**64.

    Python's int / float converts the int with round-half-to-even, which is what the scheme
    asks for; shifting or truncating instead would move units near the slice boundaries."""
    return point_of(f"{experiment_id}:".encode(), unit_id)


def point_of(prefix: bytes, unit_id: str) -> float:
    """unit_point with the experiment's "<id>:" bytes already encoded (the hot path)."""
    digest = hashlib.sha256(prefix + unit_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_TO_64


def cumulative_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """Running sums, plain float64 additions left to right (not math.fsum): the scheme's
    total is exactly the last of them."""
    sums = []
    running = 0.0
    for weight in weights:
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weights must be finite and > 0; got {weight!r}")
        running += weight
        sums.append(running)
    return tuple(sums)


def slice_index(point: float, cumulative: Sequence[float]) -> int:
    """The position of the first arm whose cumulative weight is strictly above
    point * total; the last arm when the product reaches the total (a point of 1.0)."""
    target = point * cumulative[-1]
    return min(bisect_right(cumulative, target), len(cumulative) - 1)


def pick_arm(experiment_id: int, unit_id: str, arms: Sequence[tuple[int, float]]) -> int:
    """The id of the arm whose slice holds the unit; `arms` are (arm id, weight) of every arm
    of the experiment, stopped ones included, in any order (they are sorted by id here)."""
    if not arms:
        raise ValueError("pick_arm needs at least one arm")
    ordered = sorted(arms)
    cumulative = cumulative_weights([weight for _, weight in ordered])
    return ordered[slice_index(unit_point(experiment_id, unit_id), cumulative)][0]


def unit_id_problem(unit_id: object) -> str | None:
    """Why the service would refuse this unit id (resolve and ingest take 1 to 200 code
    points, not only white space, no NUL, no lone surrogate); None when it is fine."""
    if not isinstance(unit_id, str):
        return f"must be a string; got {type(unit_id).__name__}"
    if not unit_id:
        return "is empty"
    if not unit_id.strip():
        return "is blank (only white space)"
    if len(unit_id) > MAX_UNIT_ID_CHARS:
        return f"is {len(unit_id):,} characters; at most {MAX_UNIT_ID_CHARS}"
    if "\x00" in unit_id:
        return "contains a NUL character (\\u0000)"
    if not unit_id.isascii():
        try:
            unit_id.encode()
        except UnicodeEncodeError:
            return "contains a lone surrogate (invalid Unicode)"
    return None
