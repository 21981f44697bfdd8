"""Bayesian reading for people (never used to decide): with a flat prior and the normal
approximation, the improvement delta has posterior N(d, V)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from optimizer.stats.sequential import Floats

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def prob_beat_control(diff: ArrayLike, var: ArrayLike, higher_is_better: bool = True) -> Floats:
    """P(arm better than control) = Phi(d / sqrt(V)), sign flipped when lower is better."""
    z = np.asarray(diff, dtype=float) / np.sqrt(np.asarray(var, dtype=float))
    p: Floats = ndtr(z if higher_is_better else -z)
    return p


def expected_loss(diff: ArrayLike, var: ArrayLike, higher_is_better: bool = True) -> Floats:
    """E[max(0, control better than arm)]: what choosing the arm costs in expectation, in
    the metric's units. For X ~ N(m, s^2): E[max(X, 0)] = m Phi(m/s) + s phi(m/s), with
    X = -(arm - control) when higher is better."""
    s = np.sqrt(np.asarray(var, dtype=float))
    m = -np.asarray(diff, dtype=float) if higher_is_better else np.asarray(diff, dtype=float)
    z = m / s
    loss: Floats = m * ndtr(z) + s * _INV_SQRT_2PI * np.exp(-0.5 * z * z)
    return loss
