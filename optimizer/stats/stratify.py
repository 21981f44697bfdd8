"""Post-stratification of a per-conversation mean on a pre-assignment covariate (segment).

Where segments differ in base rate, part of the arms' difference is the luck of which
segments each arm drew. Estimating the mean within each stratum and weighting the strata
by their share of the experiment's conversations (the same weights for both arms) removes
that part of the variance, so decisions come sooner; the estimate stays unbiased because
the segment is fixed before assignment. Strata with fewer than `min_units` units in either
arm are pooled (too few units make a stratum's delta-method variance unreliable); the
pooling looks at counts only, never at outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from optimizer.stats.ratio import EMPTY_RATIO, RatioSums

MIN_STRATUM_UNITS = 50
K = TypeVar("K")


@dataclass(frozen=True)
class Stratified:
    mean_control: float
    var_control: float  # variance of the estimate
    mean_arm: float
    var_arm: float
    strata: int


def pool_strata(
    control: Mapping[K, RatioSums], arm: Mapping[K, RatioSums], min_units: int = MIN_STRATUM_UNITS
) -> list[tuple[RatioSums, RatioSums]]:
    """(control, arm) sums per stratum after pooling the small ones."""
    keys = sorted(set(control) | set(arm), key=repr)
    kept: list[tuple[RatioSums, RatioSums]] = []
    pooled = (EMPTY_RATIO, EMPTY_RATIO)
    for key in keys:
        c, a = control.get(key, EMPTY_RATIO), arm.get(key, EMPTY_RATIO)
        if min(c.units, a.units) >= min_units:
            kept.append((c, a))
        else:
            pooled = (pooled[0] + c, pooled[1] + a)
    if pooled[0].units or pooled[1].units:
        if min(pooled[0].units, pooled[1].units) >= min_units or not kept:
            kept.append(pooled)
        else:
            largest = max(range(len(kept)), key=lambda i: kept[i][0].units + kept[i][1].units)
            kept[largest] = (kept[largest][0] + pooled[0], kept[largest][1] + pooled[1])
    return kept


def post_stratify(
    control: Mapping[K, RatioSums], arm: Mapping[K, RatioSums], min_units: int = MIN_STRATUM_UNITS
) -> Stratified | None:
    """None when fewer than two strata remain (then the plain estimate is the same)."""
    strata = pool_strata(control, arm, min_units)
    total = sum(c.sum_m + a.sum_m for c, a in strata)
    if len(strata) < 2 or total <= 0:
        return None
    mean_c = var_c = mean_a = var_a = 0.0
    for c, a in strata:
        w = (c.sum_m + a.sum_m) / total
        rc, vc = c.moments()
        ra, va = a.moments()
        mean_c, var_c = mean_c + w * rc, var_c + w * w * vc
        mean_a, var_a = mean_a + w * ra, var_a + w * w * va
    return Stratified(mean_c, var_c, mean_a, var_a, len(strata))
