"""The assignment scheme against its committed test vectors (tests/data/assignment_vectors.json),
the same file an SDK in another language checks itself against (docs/assignment.md).

The vectors are frozen: a change of the scheme moves live users between arms, so it must
fail here. Only for a new scheme version (SCHEME_VERSION) regenerate them, with

    .venv/bin/python -m tests.unit.test_assignment_vectors

which rewrites the file from the current code (the cases are fixed in `cases()` below).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.assignment import SCHEME, SCHEME_NAME, SCHEME_VERSION, pick_arm, unit_point

VECTORS = Path(__file__).resolve().parents[1] / "data" / "assignment_vectors.json"

Arms = list[tuple[int, float]]


def _tiny_hit(experiment_id: int, arms: Arms, arm_id: int) -> str:
    """The first unit id "hit-<i>" that lands in `arm_id` (a thin slice worth a vector)."""
    i = 0
    while pick_arm(experiment_id, f"hit-{i}", arms) != arm_id:
        i += 1
    return f"hit-{i}"


def cases() -> list[tuple[int, str, Arms]]:
    """(experiment id, unit id, arms in the order given to pick_arm)."""
    units = [
        "user-42",
        "u0",
        "0",
        "a",
        " leading and trailing spaces ",
        "tab\tinside",
        "line\nbreak",
        "x y/é?&=%20",
        "ü-unit",
        "e\u0301",  # é decomposed: other bytes than the composed "é", so another point
        "é",
        "日本語のユーザー",
        "🙂 emoji (4 UTF-8 bytes)",
        "\u200b",  # zero-width space: not blank for resolve, so a valid unit id
        "a" * 200,  # the longest unit id resolve accepts
        "ßtraße-ΣΑΣ",
        '"quoted" \\ backslash',
        "session:abc:123",  # ':' inside the unit id is just another byte
    ]
    arm_sets: list[Arms] = [
        [(1, 1.0), (2, 1.0)],
        [(10, 1.0), (11, 3.0)],
        [(7, 0.7), (5, 0.1), (6, 0.2)],  # given unsorted: the scheme sorts by arm id
        [(100, 1.0), (101, 1.0), (102, 1.0)],
        [(3, 1e-9), (4, 1.0)],
        [(20, 2.5), (21, 0.5), (22, 0.25), (23, 0.125)],
        [(9, 1.0)],
        [(30, 1 / 3), (31, 1 / 3), (32, 1 / 3)],
        [(40, 0.999), (41, 0.001)],
        [(2**40, 5.0), (2**40 + 1, 1e-3), (2**40 + 2, 95.0)],
    ]
    experiments = [1, 7, 42, 123_456_789, 2**63 - 1]
    found: list[tuple[int, str, Arms]] = []
    for i, unit in enumerate(units):
        for j in range(3):
            experiment = experiments[(i + j) % len(experiments)]
            found.append((experiment, unit, arm_sets[(i * 3 + j) % len(arm_sets)]))
    # Thin slices actually hit.
    for experiment, arms, arm_id in (
        (5, [(40, 0.999), (41, 0.001)], 41),
        (6, [(2**40, 5.0), (2**40 + 1, 1e-3), (2**40 + 2, 95.0)], 2**40 + 1),
        (8, [(7, 0.7), (5, 0.1), (6, 0.2)], 5),
    ):
        found.append((experiment, _tiny_hit(experiment, arms, arm_id), arms))
    return found


def vector(experiment_id: int, unit_id: str, arms: Arms) -> dict[str, Any]:
    digest = hashlib.sha256(f"{experiment_id}:{unit_id}".encode()).digest()
    return {
        "experiment_id": experiment_id,
        "unit_id": unit_id,
        "input_hex": f"{experiment_id}:{unit_id}".encode().hex(),
        "arms": [{"id": arm_id, "weight": weight} for arm_id, weight in arms],
        "point_bytes_hex": digest[:8].hex(),
        "point": unit_point(experiment_id, unit_id),
        "arm_id": pick_arm(experiment_id, unit_id, arms),
    }


def generate() -> dict[str, Any]:
    return {
        "scheme": SCHEME_NAME,
        "version": SCHEME_VERSION,
        "note": "docs/assignment.md; regenerate only for a new scheme version",
        "vectors": [vector(*case) for case in cases()],
    }


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return document


def test_vectors_are_for_this_scheme() -> None:
    document = load()
    assert f"{document['scheme']}/{document['version']}" == SCHEME
    vectors = document["vectors"]
    assert len(vectors) >= 50
    assert len({(v["experiment_id"], v["unit_id"], json.dumps(v["arms"])) for v in vectors}) == len(
        vectors
    )
    # Every arm of the thin slices is reached somewhere, and some arm lists come unsorted.
    assert {41, 2**40 + 1, 5} <= {v["arm_id"] for v in vectors}
    assert any([a["id"] for a in v["arms"]] != sorted(a["id"] for a in v["arms"]) for v in vectors)


# (A missing file fails test_vectors_are_for_this_scheme; the guard lets the generator run.)
@pytest.mark.parametrize(
    "case", load()["vectors"] if VECTORS.exists() else [], ids=lambda v: repr(v["unit_id"])[:40]
)
def test_the_code_gives_each_vector(case: dict[str, Any]) -> None:
    experiment_id, unit_id = case["experiment_id"], case["unit_id"]
    arms = [(arm["id"], arm["weight"]) for arm in case["arms"]]
    assert f"{experiment_id}:{unit_id}".encode().hex() == case["input_hex"]
    digest = hashlib.sha256(bytes.fromhex(case["input_hex"])).digest()
    assert digest[:8].hex() == case["point_bytes_hex"]
    # The documented conversion: the integer to the nearest float64, then / 2**64.
    point = float(int(case["point_bytes_hex"], 16)) / 2.0**64
    assert _from_halves(int(case["point_bytes_hex"], 16)) / 2.0**64 == point
    assert unit_point(experiment_id, unit_id) == point == case["point"]
    assert pick_arm(experiment_id, unit_id, arms) == case["arm_id"]
    assert pick_arm(experiment_id, unit_id, arms[::-1]) == case["arm_id"]


def test_the_file_is_what_the_generator_writes() -> None:
    assert load() == generate()


def _from_halves(n: int) -> float:
    """docs/assignment.md's way without 64-bit integers (JavaScript): two exact doubles, one
    correctly rounded addition."""
    high, low = divmod(n, 2**32)
    return float(high) * 2.0**32 + float(low)


def _from_signed(n: int) -> float:
    """docs/assignment.md's way with signed 64-bit integers only (Java): halve with the low
    bit kept as a sticky bit, convert, double."""
    if n < 2**63:
        return float(n)
    return float((n >> 1) | (n & 1)) * 2.0


@given(st.integers(0, 2**64 - 1) | st.integers(2**64 - 2**12, 2**64 - 1) | st.integers(0, 2**54))
def test_the_documented_conversions_round_like_python(n: int) -> None:
    assert _from_halves(n) == _from_signed(n) == float(n)
    assert (float(n) == 2.0**64) is (n >= 2**64 - 2**10)  # the points that are 1.0


# --- the left-to-right sum (scheme version 1) against math.fsum --------------------------------


def _pick_with_fsum(experiment_id: int, unit_id: str, arms: Sequence[tuple[int, float]]) -> int:
    """pick_arm as it was before the scheme was written down: the total by math.fsum."""
    ordered = sorted(arms)
    target = unit_point(experiment_id, unit_id) * math.fsum(w for _, w in ordered)
    cumulative = 0.0
    for arm_id, weight in ordered:
        cumulative += weight
        if target < cumulative:
            return arm_id
    return ordered[-1][0]


def _typical_weights() -> list[list[float]]:
    rng = random.Random(13)
    weights: list[list[float]] = [
        [1.0, 1.0],
        [1.0, 3.0],
        [2.0, 1.0, 1.0],
        [0.1, 0.2, 0.7],
        [0.7, 0.2, 0.1],
        [1 / 3, 1 / 3, 1 / 3],
        [0.5, 0.25, 0.25],
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.34, 0.33, 0.33],
        [0.01, 0.99],
        [1e-9, 1.0],
    ]
    for _ in range(20):
        arms = rng.randint(2, 5)
        weights.append([round(rng.uniform(0.01, 10), 2) for _ in range(arms)])
    return weights


def test_integer_and_dyadic_weights_sum_exactly_either_way() -> None:
    """The argument for no change at all: when every partial sum is a float64 exactly
    (integer weights, halves, quarters...), both sums are the exact total."""
    rng = random.Random(7)
    for _ in range(1000):
        weights = [rng.randint(1, 10**6) / rng.choice((1, 2, 4, 8, 1024)) for _ in range(6)]
        plain = 0.0
        for weight in weights:
            plain += weight
        assert plain == math.fsum(weights) == sum(weights)


def test_the_plain_sum_moves_no_unit_for_typical_weights() -> None:
    """Elsewhere the sums differ by an ulp or two at most, which moves a unit only if its
    point lies within about 2**-52 of a slice boundary: about one unit in 10**15. None of
    these 30,000 units x 33 weight sets moves."""
    units = [f"user-{i}" for i in range(30_000)]
    for n, weights in enumerate(_typical_weights()):
        arms = [(1000 + k, w) for k, w in enumerate(weights)]
        for unit in units:
            assert pick_arm(n + 1, unit, arms) == _pick_with_fsum(n + 1, unit, arms), (
                weights,
                unit,
            )


if __name__ == "__main__":
    text = json.dumps(generate(), ensure_ascii=False, indent=1) + "\n"
    VECTORS.write_text(text, encoding="utf-8")
    print(f"wrote {len(generate()['vectors'])} vectors to {VECTORS}")
