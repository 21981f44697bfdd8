"""Stable names for findings: the same finding in a later run gets the same fingerprint, so
its row is updated (last_seen_at, occurrences) instead of a new one added.

Forms: "segment:segment=billing:success:24h", "segment:tag=refund:rating:7d",
"regression:success", "theme:statistical", "theme:llm".
The column holds 200 characters; a value long enough to overflow it (segments may have 200
of their own) is cut and followed by a digest of the whole value, so it stays unique.
"""

from __future__ import annotations

import hashlib

from optimizer.patterns.segments import GroupTest

MAX_FINGERPRINT_CHARS = 200
MAX_VALUE_CHARS = 120
THEME_STATISTICAL = "theme:statistical"
THEME_LLM = "theme:llm"


def _value(value: str) -> str:
    if len(value) <= MAX_VALUE_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{value[: MAX_VALUE_CHARS - 18]}~{digest}"


def segment(dimension: str, value: str, metric: str, window: str) -> str:
    return f"segment:{dimension}={_value(value)}:{metric}:{window}"


def regression(metric: str) -> str:
    return f"regression:{metric}"


def of_test(test: GroupTest) -> str:
    if test.kind == "regression":
        return regression(test.metric)
    assert test.dimension is not None and test.value is not None
    return segment(test.dimension, test.value, test.metric, test.window)
