"""The SDK's hashing scheme, written from docs/assignment.md alone, against the published test
vectors and the service's implementation; its unit id rule against the service's; and the SDK
as a separate product: it imports nothing of the service and none of its heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_worker_client import assignment as sdk

from optimizer import assignment as service
from optimizer.errors import InvalidInput
from optimizer.resolve import check_unit_id

REPO = Path(__file__).resolve().parents[2]
VECTORS = json.loads((REPO / "tests" / "data" / "assignment_vectors.json").read_text())
SDK_SOURCES = REPO / "clients" / "python" / "src" / "prompt_worker_client"


def test_the_scheme_is_the_one_the_vectors_describe() -> None:
    assert (VECTORS["scheme"], VECTORS["version"]) == (sdk.SCHEME_NAME, sdk.SCHEME_VERSION)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: repr(v["unit_id"])[:40])
def test_vectors(vector: dict) -> None:
    experiment_id, unit_id = vector["experiment_id"], vector["unit_id"]
    assert f"{experiment_id}:{unit_id}".encode().hex() == vector["input_hex"]
    assert sdk.unit_point(experiment_id, unit_id) == vector["point"]  # exactly
    arms = [(arm["id"], arm["weight"]) for arm in vector["arms"]]
    assert sdk.pick_arm(experiment_id, unit_id, arms) == vector["arm_id"]


ids = st.integers(min_value=1, max_value=2**63 - 1)
weights = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(
    experiment_id=ids,
    unit_id=st.text(min_size=1, max_size=200),
    arms=st.dictionaries(ids, weights, min_size=1, max_size=10),
)
def test_same_arm_as_the_service(experiment_id: int, unit_id: str, arms: dict) -> None:
    pairs = list(arms.items())
    try:
        expected = service.pick_arm(experiment_id, unit_id, pairs)
    except UnicodeEncodeError:  # a lone surrogate: neither side can hash it
        with pytest.raises(UnicodeEncodeError):
            sdk.pick_arm(experiment_id, unit_id, pairs)
        return
    assert sdk.pick_arm(experiment_id, unit_id, pairs) == expected
    assert sdk.unit_point(experiment_id, unit_id) == service.unit_point(experiment_id, unit_id)


@given(point=st.floats(min_value=0.0, max_value=1.0), arms=st.lists(weights, min_size=1))
def test_slices_match_the_documented_loop(point: float, arms: list[float]) -> None:
    """The binary search over cumulative sums picks what the docs' linear loop picks, a
    point of exactly 1.0 (the top 1,024 hashes) included."""
    cumulative = sdk.cumulative_weights(arms)
    target, running, expected = point * cumulative[-1], 0.0, len(arms) - 1
    for index, weight in enumerate(arms):
        running += weight
        if target < running:
            expected = index
            break
    assert sdk.slice_index(point, cumulative) == expected


unit_ids = st.one_of(
    st.text(max_size=210),
    st.text(alphabet=st.sampled_from(" \t\n\x00\u00a0\u2003\ud800é"), max_size=5),
    st.integers(),
    st.none(),
)


@given(unit_ids)
def test_unit_id_rule_is_the_services(unit_id: object) -> None:
    try:
        check_unit_id(unit_id)
        refused = None
    except InvalidInput as exc:
        refused = str(exc)
    problem = sdk.unit_id_problem(unit_id)
    assert (problem is None) == (refused is None), (unit_id, problem, refused)
    if problem is not None and isinstance(unit_id, str):
        assert refused is not None and refused.startswith(f"unit_id {problem.split(' (')[0]}")


def test_the_sdk_imports_nothing_of_the_service() -> None:
    code = (
        "import sys, prompt_worker_client\n"
        "banned = ('optimizer', 'models', 'numpy', 'scipy', 'sqlalchemy', 'pydantic', 'aiohttp')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    for source in SDK_SOURCES.glob("*.py"):
        text = source.read_text()
        assert "from optimizer" not in text and "import optimizer" not in text, source
