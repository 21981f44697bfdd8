"""Confidence-sequence arithmetic against independent references, and its coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize

from optimizer.stats.ratio import ratio_moments
from optimizer.stats.sequential import (
    mixture_eta,
    mixture_k,
    one_sided_halfwidth,
    relative_difference,
    two_sided_halfwidth,
)


def moments(n, total, total_sq):
    """Mean and variance of the mean, one observation per unit."""
    return ratio_moments(n, total, n, total_sq, n, total)


def test_one_value_per_unit_moments_match_numpy():
    x = np.random.default_rng(3).normal(5.0, 2.0, size=57)
    mean, var = moments(len(x), x.sum(), (x * x).sum())
    assert mean == pytest.approx(np.mean(x))
    assert var == pytest.approx(np.var(x, ddof=1) / len(x))
    assert np.isnan(moments(1, 2.0, 4.0)[1])


def _mixture_boundary(var: float, rho: float, alpha: float, one_sided: bool) -> float:
    """Half-width from the mixture martingale itself: integrate over lambda numerically and
    find where it reaches 1/alpha (S = d * I, I = 1/var)."""
    info = 1.0 / var

    a = info + 1 / rho**2

    def log_m(d: float) -> float:
        s = d * info
        top = s * s / (2 * a)  # the exponent's maximum, factored out against overflow
        scale = 2.0 if one_sided else 1.0

        def f(lam):
            density = 1 / (rho * math.sqrt(2 * math.pi))
            return scale * density * math.exp(lam * s - lam * lam * a / 2 - top)

        centre, width = s / a, 1 / math.sqrt(a)
        left = max(0.0, centre - 10 * width) if one_sided else centre - 10 * width
        val = integrate.quad(f, left, centre + 10 * width, epsabs=0, epsrel=1e-12, limit=200)[0]
        return top + math.log(val)

    return optimize.brentq(lambda d: log_m(d) - math.log(1 / alpha), 1e-9, 20 * math.sqrt(var))


@pytest.mark.parametrize(
    "var,rho,alpha", [(1e-4, 0.02, 0.1), (2.5e-3, 0.01, 0.05), (0.3, 1.0, 0.025)]
)
def test_halfwidths_match_the_mixture_integral(var, rho, alpha):
    eta = rho**2 / var
    assert two_sided_halfwidth(var, eta, alpha) == pytest.approx(
        _mixture_boundary(var, rho, alpha, one_sided=False), rel=1e-6
    )
    assert one_sided_halfwidth(var, eta, alpha) == pytest.approx(
        _mixture_boundary(var, rho, alpha, one_sided=True), rel=1e-6
    )


def test_one_sided_is_narrower_and_eta_is_tuned_at_the_target():
    assert one_sided_halfwidth(1.0, 5.0, 0.1) < two_sided_halfwidth(1.0, 5.0, 0.1)
    # Howard et al.: with eta = K(alpha) at the target size the width (relative to sqrt(V))
    # is near its smallest over eta.
    alpha = 0.1
    k = float(mixture_k(alpha))
    assert k == pytest.approx(-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha)))
    assert mixture_eta(2500, 2500, alpha, 2500) == pytest.approx(k)
    grid = np.linspace(0.5, 60, 2000)
    best = two_sided_halfwidth(1.0, grid, alpha).min()
    assert two_sided_halfwidth(1.0, k, alpha) <= best * 1.02


def test_relative_difference_delta_method():
    m_c, v_c, n_c, m_t, v_t, n_t = 0.3, 0.21, 900.0, 0.36, 0.2304, 1100.0
    rel, var = relative_difference(m_c, v_c / n_c, m_t, v_t / n_t)
    grad = np.array([-m_t / m_c**2, 1 / m_c])  # d(m_t/m_c)/d(m_c, m_t)
    cov = np.diag([v_c / n_c, v_t / n_t])
    assert rel == pytest.approx(m_t / m_c - 1)
    assert var == pytest.approx(grad @ cov @ grad)


def _coverage_failures(rng, draws_c, draws_t, true_diff, alpha, checks):
    """Fraction of paths where the interval misses the true difference at any check."""
    x_c, x_t = draws_c(rng), draws_t(rng)
    n_c = np.arange(1, x_c.shape[1] + 1)[None, :]
    n_t = np.arange(1, x_t.shape[1] + 1)[None, :]
    c1, c2 = np.cumsum(x_c, axis=1), np.cumsum(x_c**2, axis=1)
    t1, t2 = np.cumsum(x_t, axis=1), np.cumsum(x_t**2, axis=1)
    step_c, step_t = x_c.shape[1] // checks, x_t.shape[1] // checks
    ic, it = np.arange(1, checks + 1) * step_c - 1, np.arange(1, checks + 1) * step_t - 1
    mc, vc = moments(n_c[:, ic], c1[:, ic], c2[:, ic])
    mt, vt = moments(n_t[:, it], t1[:, it], t2[:, it])
    nc, nt = n_c[:, ic].astype(float), n_t[:, it].astype(float)
    var = vc + vt
    half = two_sided_halfwidth(var, mixture_eta(nc, nt, alpha, 2500.0), alpha)
    with np.errstate(invalid="ignore"):
        miss = np.abs(mt - mc - true_diff) > half
    return miss[:, 2:].any(axis=1).mean()  # from the third check on (variance estimable)


def test_bernoulli_coverage_holds_simultaneously_over_checks():
    rng = np.random.default_rng(20240601)
    fail = _coverage_failures(
        rng,
        lambda r: r.binomial(1, 0.3, (400, 6000)).astype(float),
        lambda r: r.binomial(1, 0.35, (400, 6000)).astype(float),
        0.05,
        alpha=0.10,
        checks=240,
    )
    assert fail <= 0.10


def test_unequal_variances_and_sizes_coverage():
    rng = np.random.default_rng(7)
    fail = _coverage_failures(
        rng,
        lambda r: r.normal(10, 1, (300, 4000)),
        lambda r: r.exponential(3.0, (300, 6000)) + 5,
        -2.0,
        alpha=0.05,
        checks=200,
    )
    assert fail <= 0.05
