"""The last guard before an insight is written: evidence never holds NaN or infinity."""

from __future__ import annotations

import json
import logging
import math

import pytest

from optimizer.patterns.store import evidence_json
from optimizer.stats import finite_only


def test_finite_values_pass_unchanged() -> None:
    evidence = {
        "p_value": 1e-300,
        "df": 12.5,
        "terms": [{"z": 3.1}],
        "n": 7,
        "ok": True,
        "value": "billing",
        "missing": None,
    }
    assert json.loads(evidence_json(evidence, "fp")) == evidence


def test_non_finite_values_become_null_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    evidence = {
        "p_value": math.nan,
        "terms": [{"z": math.inf, "term": "refund"}],
        "pair": (1.0, -math.inf),
    }
    with caplog.at_level(logging.ERROR):
        stored = json.loads(evidence_json(evidence, "theme:statistical"))
    assert stored["p_value"] is None and stored["terms"][0] == {"z": None, "term": "refund"}
    assert stored["pair"] == [1.0, None]
    assert stored["not_finite"]["fields"] == ["p_value", "terms[0].z", "pair[1]"]
    assert "could not be computed" in stored["not_finite"]["reason"]
    assert "non-finite evidence" in caplog.text


def test_a_bare_value() -> None:
    assert finite_only(math.nan) is None and finite_only(0.5) == 0.5 and finite_only(None) is None
