"""Asymptotic confidence sequences for the difference of two means (normal mixture).

Always-valid means: with probability at least 1 - alpha the interval covers the true
difference at every check at once, however often it is looked at.

The inputs are estimates and the variances of those estimates (for the per-conversation
means of unit-randomised experiments, from optimizer.stats.ratio), and the counts of units.

Derivation (Robbins' normal mixture; Howard et al. 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences"; Waudby-Smith et al. 2021, "Time-uniform central limit
theory and asymptotic confidence sequences"). Let d be the estimated difference with
variance V = Var(m_c) + Var(m_t), I = 1/V the information and S = (d - delta) * I, which
behaves like a Brownian motion in intrinsic time I. For each lambda, exp(lambda*S -
lambda^2*I/2) is a (asymptotic) martingale; mixing lambda over N(0, rho^2) gives

    M = (1 + eta)^(-1/2) * exp(u^2 / 2),   eta = rho^2 / V,   u^2 = S^2 / (I (1 + 1/eta)),

and Ville's inequality gives P(exists check: M >= 1/alpha) <= alpha. Solving M = 1/alpha:

    half_width = sqrt( 2 V (1 + 1/eta) log( sqrt(1 + eta) / alpha ) ).

One-sided (mixing over a half-normal, lambda >= 0), used for guardrails:

    M = 2 (1 + eta)^(-1/2) exp(u^2/2) Phi(u);   half_width = u* sqrt(V (1 + 1/eta)),

where u* solves u^2/2 + log Phi(u) = log(1/alpha) - log 2 + log(1 + eta)/2.

Choice of rho. eta is written without units as eta = K(alpha) * n_eff / CS_TARGET_N, where
n_eff is the harmonic mean of the two arms' counts (n per arm when balanced) and
K(alpha) = -2 log(alpha) + log(1 - 2 log(alpha)); this is Howard et al.'s rho that makes the
boundary tightest at n_eff = CS_TARGET_N (rho^2 = K V* with V* the variance at that size;
asymptotically rho is a constant, as the mixture needs). The width is within a few percent
of its best over a wide range around the target, and valid everywhere.

All functions take numpy arrays (or scalars) and broadcast, so the benchmark can run
thousands of simulated experiments through exactly the code analyze() uses.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr

# Estimates, variances and counts: a number, or an array of them (the benchmark).
Floats = NDArray[np.float64]

# Units per arm at which the interval is tightest. Decisions wait for
# min_runtime_hours (24 h by default) and typical experiments reach a few thousand
# units per arm by then; see benchmarks/aa_ab_simulation.py for the tuning.
CS_TARGET_N = 2500.0


def mixture_k(alpha: ArrayLike) -> Floats:
    la = -2.0 * np.log(alpha)
    k: Floats = la + np.log1p(la)
    return k


def mixture_eta(
    n_control: ArrayLike, n_arm: ArrayLike, alpha: ArrayLike, target_n: float = CS_TARGET_N
) -> Floats:
    """rho^2 / V in units of the sample: K(alpha) * harmonic_mean(n_c, n_t) / target_n."""
    n_c = np.asarray(n_control, dtype=float)
    n_t = np.asarray(n_arm, dtype=float)
    n_eff = 2.0 * n_c * n_t / (n_c + n_t)
    eta: Floats = mixture_k(alpha) * n_eff / target_n
    return eta


def two_sided_halfwidth(var: ArrayLike, eta: ArrayLike, alpha: ArrayLike) -> Floats:
    v = np.asarray(var, dtype=float)
    e = np.asarray(eta, dtype=float)
    half: Floats = np.sqrt(2.0 * v * (1.0 + 1.0 / e) * (0.5 * np.log1p(e) - np.log(alpha)))
    return half


def one_sided_u(eta: ArrayLike, alpha: ArrayLike, iterations: int = 40) -> Floats:
    """Root of u^2/2 + log Phi(u) = log(1/alpha) - log 2 + log(1+eta)/2 (Newton; the left
    side is convex and increasing, and the start lies right of the root)."""
    e = np.asarray(eta, dtype=float)
    c = -np.log(alpha) - np.log(2.0) + 0.5 * np.log1p(e)
    u: Floats = np.sqrt(2.0 * np.maximum(c, 0.0)) + 1.0
    for _ in range(iterations):
        log_phi = -0.5 * u * u - 0.5 * np.log(2.0 * np.pi)
        log_cdf = log_ndtr(u)
        f = 0.5 * u * u + log_cdf - c
        u = u - f / (u + np.exp(log_phi - log_cdf))
    return u


def one_sided_halfwidth(var: ArrayLike, eta: ArrayLike, alpha: ArrayLike) -> Floats:
    v = np.asarray(var, dtype=float)
    e = np.asarray(eta, dtype=float)
    return one_sided_u(e, alpha) * np.sqrt(v * (1.0 + 1.0 / e))


def relative_difference(
    mean_c: float | Floats, var_c: float | Floats, mean_t: float | Floats, var_t: float | Floats
) -> tuple[float | Floats, float | Floats]:
    """arm/control - 1 and its first-order delta-method variance, from the two estimates
    and the variances of those estimates (independent arms):
    Var(m_t/m_c) ~ Var(m_t)/m_c^2 + m_t^2 Var(m_c)/m_c^4."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = mean_t / mean_c - 1.0
        var = var_t / mean_c**2 + mean_t**2 * var_c / mean_c**4
    return rel, var
