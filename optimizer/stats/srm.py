"""Anytime-valid sample-ratio-mismatch test (Lindon & Malek 2020, "Anytime-valid
inference for multinomial count data").

Under the null the arms' counts are multinomial with the configured shares p. The
alternative puts a Dirichlet(c * p) prior on the shares. The Bayes factor

    BF = [Gamma(c) / Gamma(c + n)] * prod_k Gamma(c p_k + x_k) / Gamma(c p_k)
         / prod_k p_k^x_k

is a nonnegative martingale with mean 1 under the null (one unit at a time), so by
Ville's inequality P(BF ever >= 1/alpha) <= alpha however often it is checked: a repeated
chi-square test has no such guarantee and raises false alarms at every check.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln

from optimizer.stats.sequential import Floats

SRM_ALPHA = 0.001
# Prior concentration c: the Dirichlet prior has the configured shares as its mean and
# the weight of c pseudo-units. 100 detects a 60/40 split on 50/50 within a few hundred
# units and a 52/48 split within some ten thousand.
SRM_PRIOR_CONCENTRATION = 100.0


def srm_log_bayes_factor(
    counts: ArrayLike, shares: ArrayLike, concentration: float = SRM_PRIOR_CONCENTRATION
) -> Floats:
    """counts: (..., K) arm counts; shares: (K,) positive, summing to 1. Returns log BF."""
    x = np.asarray(counts, dtype=float)
    p = np.asarray(shares, dtype=float)
    a = concentration * p
    n = x.sum(axis=-1)
    log_dm = (
        gammaln(concentration)
        - gammaln(concentration + n)
        + (gammaln(a + x) - gammaln(a)).sum(axis=-1)
    )
    log_mult = (x * np.log(p)).sum(axis=-1)
    log_bf: Floats = log_dm - log_mult
    return log_bf
