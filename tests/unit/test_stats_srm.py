"""The anytime-valid sample-ratio-mismatch test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from optimizer.stats import SRM_ALPHA, ArmData, check_srm
from optimizer.stats.srm import SRM_PRIOR_CONCENTRATION, srm_log_bayes_factor


def _arms(counts, weights, active=None):
    active = active or [True] * len(counts)
    return [
        ArmData(i + 1, i + 1, i == 0, w, a, c, c, {})
        for i, (c, w, a) in enumerate(zip(counts, weights, active, strict=True))
    ]


@pytest.mark.parametrize(
    "counts,shares",
    [
        ([510, 490], [0.5, 0.5]),
        ([60, 40], [0.5, 0.5]),
        ([100, 220, 330], [0.2, 0.3, 0.5]),
        ([0, 0], [0.5, 0.5]),
    ],
)
def test_log_bayes_factor_matches_scipy(counts, shares):
    c = SRM_PRIOR_CONCENTRATION
    n = sum(counts)
    reference = (
        (
            stats.dirichlet_multinomial.logpmf(counts, c * np.array(shares), n)
            - stats.multinomial.logpmf(counts, n, shares)
        )
        if n
        else 0.0
    )
    assert srm_log_bayes_factor(counts, shares) == pytest.approx(reference, abs=1e-9)


def test_balanced_counts_not_flagged_and_mismatch_flagged():
    ok = check_srm(_arms([2510, 2490], [1, 1]))
    assert ok.error is None and not ok.detected and ok.bayes_factor < 1
    bad = check_srm(_arms([3000, 2000], [1, 1]))
    assert bad.detected and bad.bayes_factor >= 1 / SRM_ALPHA
    assert bad.counts == (3000, 2000) and bad.expected_shares == (0.5, 0.5)
    # 60/40 is exactly right for 3:2 weights
    assert not check_srm(_arms([3000, 2000], [3, 2])).detected
    assert check_srm(_arms([300, 200], [1, 1])).detected  # 60/40 visible within 500 units


def test_degenerate_inputs_give_error_codes():
    assert check_srm(_arms([10], [1])).error == "no_arms"
    assert check_srm(_arms([10, 10], [1, 0])).error == "invalid_weights"
    assert check_srm(_arms([10, 10], [1, float("nan")])).error == "invalid_weights"
    # Units are counted by assignment slice, so a stopped arm's slice keeps its share:
    # every arm stays in the test, stopped or not.
    stopped = check_srm(_arms([1010, 990], [1, 1], active=[True, False]))
    assert stopped.error is None and stopped.arm_ids == (1, 2) and not stopped.detected
    skewed = check_srm(_arms([900, 100], [1, 1], active=[True, False]))
    assert skewed.detected


def test_false_alarms_checked_every_15_minutes_for_14_days():
    rng = np.random.default_rng(11)
    per_check = rng.binomial(50, 0.5, size=(1000, 1344))
    n_t = np.cumsum(per_check, axis=1)
    n_c = np.cumsum(50 - per_check, axis=1)
    log_bf = srm_log_bayes_factor(np.stack([n_c, n_t], axis=-1), [0.5, 0.5])
    alarms = (log_bf >= math.log(1 / SRM_ALPHA)).any(axis=1).mean()
    assert alarms <= 0.005
