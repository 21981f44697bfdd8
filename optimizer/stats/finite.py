"""NaN and infinities become None: JSON has neither (PostgreSQL's json refuses NaN), and
nothing stored or answered may hold one. The one cleaning of analysis output, experiment
checks and pattern-analysis evidence alike."""

from __future__ import annotations

import math
from typing import Any


def finite_only(value: Any, path: str = "", bad: list[str] | None = None) -> Any:
    """`value` with every NaN or infinite float replaced by None, recursively through dicts
    (keys become strings), lists and tuples (which become lists). With `bad`, the paths of
    the replaced values are appended to it ("terms[0].z"), so a caller can report them."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if bad is not None:
            bad.append(path or "(value)")
        return None
    if isinstance(value, dict):
        return {
            str(k): finite_only(v, f"{path}.{k}" if path else str(k), bad) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [finite_only(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    return value
