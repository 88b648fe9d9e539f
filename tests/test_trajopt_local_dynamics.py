"""Local linear-Gaussian dynamics (trajopt.local_dynamics) against the system that made the data,
least squares (numpy.linalg.lstsq) and a hand-built normal-inverse-Wishart prior."""

import numpy as np
import pytest

from mbrl_ros.dynamics.gmm import GMM, GMMConfig
from mbrl_ros.trajopt.local_dynamics import (
    FitError,
    fit_bayesian,
    fit_linear_regression,
    initial_state,
    initial_state_prior,
    transition_points,
)

DX, DU, T = 3, 2, 4


def system(rng):
    """Time-varying A_t, B_t, c_t and noise scale of a known linear-Gaussian system."""
    A = np.eye(DX) + 0.2 * rng.standard_normal((T, DX, DX))
    B = rng.standard_normal((T, DX, DU))
    c = rng.standard_normal((T, DX))
    return A, B, c


def simulate(rng, A, B, c, n, noise=0.05):
    X = np.empty((n, T + 1, DX))
    U = rng.standard_normal((n, T, DU))
    X[:, 0] = rng.standard_normal((n, DX))
    for t in range(T):
        X[:, t + 1] = (
            X[:, t] @ A[t].T + U[:, t] @ B[t].T + c[t] + noise * rng.standard_normal((n, DX))
        )
    return X, U


def test_regression_recovers_the_system_and_its_noise():
    rng = np.random.default_rng(0)
    A, B, c = system(rng)
    X, U = simulate(rng, A, B, c, 4000)
    dyn = fit_linear_regression(X, U, regularization=0.0)
    assert dyn.T == T and dyn.dx == DX and dyn.du == DU
    np.testing.assert_allclose(dyn.Fx, np.concatenate([A, B], axis=2), atol=0.01)
    np.testing.assert_allclose(dyn.fx, c, atol=0.01)
    np.testing.assert_allclose(
        dyn.cov, np.broadcast_to(0.05**2 * np.eye(DX), dyn.cov.shape), atol=2e-4
    )


def test_regression_equals_least_squares_with_intercept():
    rng = np.random.default_rng(1)
    X, U = simulate(rng, *system(rng), 12)
    dyn = fit_linear_regression(X, U, regularization=0.0)
    for t in range(T):
        design = np.concatenate([X[:, t], U[:, t], np.ones((12, 1))], axis=1)
        coef, *_ = np.linalg.lstsq(design, X[:, t + 1], rcond=None)
        np.testing.assert_allclose(dyn.Fx[t], coef[:-1].T, atol=1e-9)
        np.testing.assert_allclose(dyn.fx[t], coef[-1], atol=1e-9)
        resid = X[:, t + 1] - design @ coef
        np.testing.assert_allclose(dyn.cov[t], resid.T @ resid / 12, atol=1e-9)


class HandPrior:
    """A fixed N-IW prior (μ0, Φ, m, n0) that records the points it was asked about."""

    def __init__(self, mu0, Phi, m, n0):
        self.args, self.calls = (mu0, Phi, m, n0), []

    def niw_prior(self, points):
        self.calls.append(points)
        return self.args


def test_bayesian_regression_reduces_to_least_squares_as_the_prior_vanishes():
    rng = np.random.default_rng(2)
    X, U = simulate(rng, *system(rng), 12)
    D = 2 * DX + DU
    M = rng.standard_normal((D, D))
    prior = HandPrior(rng.standard_normal(D), M @ M.T + np.eye(D), 5.0, 40.0)
    ls = fit_linear_regression(X, U, regularization=0.0)
    gaps = []
    for strength in (1.0, 1e-2, 1e-4, 1e-6, 1e-8):
        dyn = fit_bayesian(X, U, prior, strength=strength, regularization=0.0)
        gaps.append(np.abs(dyn.Fx - ls.Fx).max())
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 1e-2 and gaps[-1] < 1e-6
    exact = fit_bayesian(X, U, prior, strength=0.0, regularization=0.0)
    np.testing.assert_allclose(exact.Fx, ls.Fx, atol=1e-10)
    np.testing.assert_allclose(exact.cov, ls.cov, atol=1e-10)
    assert len(prior.calls) == 6 * T and prior.calls[0].shape == (12, D)
    np.testing.assert_array_equal(prior.calls[0], transition_points(X, U)[:, 0])


def test_strong_prior_gives_the_prior_conditional():
    """With huge pseudo-counts the posterior covariance is Φ/n0, so the dynamics are the prior's
    Gaussian conditioned on (x, u)."""
    rng = np.random.default_rng(3)
    X, U = simulate(rng, *system(rng), 6)
    D, dxu = 2 * DX + DU, DX + DU
    M = rng.standard_normal((D, D))
    S0 = M @ M.T + np.eye(D)
    n0 = 1e9
    dyn = fit_bayesian(X, U, HandPrior(np.zeros(D), S0 * n0, 1e9, n0), regularization=0.0)
    gain = np.linalg.solve(S0[:dxu, :dxu], S0[:dxu, dxu:]).T
    np.testing.assert_allclose(dyn.Fx, np.broadcast_to(gain, dyn.Fx.shape), atol=1e-5)
    np.testing.assert_allclose(dyn.cov[0], S0[dxu:, dxu:] - gain @ S0[:dxu, dxu:], atol=1e-5)


def test_gmm_prior_makes_five_samples_enough():
    """With 5 samples (fewer than dx + du + 1 = 6) ridge regression is poorly determined; the
    prior from a GMM fit on plenty of earlier data from the same system recovers A, B."""
    rng = np.random.default_rng(4)
    A, B, c = system(rng)
    A[:], B[:], c[:] = A[0], B[0], c[0]  # one linear system: a single cluster explains it
    old = transition_points(*simulate(rng, A, B, c, 200)).reshape(-1, 2 * DX + DU)
    gmm = GMM(GMMConfig(n_components=2, seed=0))
    gmm.fit(old)

    class Prior:
        def niw_prior(self, points):
            mu0, Phi, m, n0 = gmm.niw_prior(points)
            return mu0.numpy(), Phi.numpy(), m, n0

    X, U = simulate(rng, A, B, c, 5)
    truth = np.concatenate([A, B], axis=2)
    ridge = np.abs(fit_linear_regression(X, U, 1e-6).Fx - truth).max()
    bayes = np.abs(fit_bayesian(X, U, Prior()).Fx - truth).max()
    assert bayes < 0.1 < ridge


def test_initial_state_distribution():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 2, DX)) * [1.0, 2.0, 3.0] + 4.0
    mean, cov = initial_state(X, regularization=0.5)
    np.testing.assert_allclose(mean, X[:, 0].mean(0))
    np.testing.assert_allclose(cov, np.cov(X[:, 0].T, bias=True) + 0.5 * np.eye(DX))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda X, U: (X[:1], U[:1]), "1 sample.* too few for the regression"),
        (lambda X, U: (X, U[:, :-1]), r"X \(N, T\+1, dx\) and U"),
        (lambda X, U: (np.where(X > 2, np.nan, X), U), "X has non-finite"),
    ],
)
def test_bad_samples_are_named(make, message):
    rng = np.random.default_rng(6)
    X, U = simulate(rng, *system(rng), 4)
    with pytest.raises(FitError, match=message):
        fit_linear_regression(*make(X, U))


def test_unregularised_regression_needs_enough_samples():
    rng = np.random.default_rng(7)
    X, U = simulate(rng, *system(rng), DX + DU)
    with pytest.raises(FitError, match="too few for unregularised regression.* at least 6"):
        fit_linear_regression(X, U, regularization=0.0)
    fit_linear_regression(X, U, regularization=1e-6)  # ridge makes it well posed


def test_bad_prior_output_is_named():
    rng = np.random.default_rng(8)
    X, U = simulate(rng, *system(rng), 4)
    D = 2 * DX + DU
    with pytest.raises(FitError, match="the prior gave"):
        fit_bayesian(X, U, HandPrior(np.zeros(D - 1), np.eye(D), 1.0, 1.0))
    with pytest.raises(FitError, match="negative pseudo-counts"):
        fit_bayesian(X, U, HandPrior(np.zeros(D), np.eye(D), -1.0, 1.0))


def conditional(points, regularization, mode, prior=None):
    """Direct Gaussian conditioning of x' on (x, u) at one step, from the points (N, D) of that
    step: mean and covariance (1/N) by numpy, the N-IW MAP covariance if ``prior``, then the
    regulariser on the (x, u) block's diagonal or on every entry of it."""
    N, dxu = len(points), DX + DU
    mu = points.mean(0)
    S = np.cov(points.T, bias=True)
    if prior is not None:
        mu0, Phi, m, n0 = prior
        S = (N * S + Phi + N * m / (N + m) * np.outer(mu - mu0, mu - mu0)) / (N + n0)
    R = np.zeros_like(S)
    R[:dxu, :dxu] = regularization if mode == "block" else regularization * np.eye(dxu)
    S = S + R
    Fx = np.linalg.solve(S[:dxu, :dxu], S[:dxu, dxu:]).T
    return Fx, mu[dxu:] - Fx @ mu[:dxu], S[dxu:, dxu:] - Fx @ S[:dxu, :dxu] @ Fx.T


@pytest.mark.parametrize("mode", ["diagonal", "block"])
def test_regularization_modes_match_the_direct_conditional(mode):
    """'diagonal' (the default) adds the regulariser to the (x, u) covariance's diagonal, 'block'
    (cbfinn/gps) to every entry of it; both with and without a prior."""
    rng = np.random.default_rng(9)
    X, U = simulate(rng, *system(rng), 12)
    D = 2 * DX + DU
    M = rng.standard_normal((D, D))
    prior = (rng.standard_normal(D), M @ M.T + np.eye(D), 3.0, 10.0)
    points = transition_points(X, U)
    fits = {
        "ls": fit_linear_regression(X, U, 0.3, regularization_mode=mode),
        "bayes": fit_bayesian(
            X, U, HandPrior(*prior), regularization=0.3, regularization_mode=mode
        ),
    }
    for name, dyn in fits.items():
        for t in range(T):
            Fx, fx, cov = conditional(points[:, t], 0.3, mode, prior if name == "bayes" else None)
            np.testing.assert_allclose(dyn.Fx[t], Fx, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(dyn.fx[t], fx, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(dyn.cov[t], cov, rtol=1e-10, atol=1e-12)
    other = "block" if mode == "diagonal" else "diagonal"
    assert (
        np.abs(fits["ls"].Fx - fit_linear_regression(X, U, 0.3, regularization_mode=other).Fx).max()
        > 1e-3
    )


def test_block_regularization_is_no_ridge_and_bad_modes_are_named():
    rng = np.random.default_rng(10)
    X, U = simulate(rng, *system(rng), DX + DU)
    with pytest.raises(FitError, match="too few for block-regularised regression.* at least 6"):
        fit_linear_regression(X, U, 1e-6, regularization_mode="block")
    with pytest.raises(FitError, match="regularization_mode must be one of"):
        fit_linear_regression(X, U, 1e-6, regularization_mode="ridge")


def test_initial_state_map_under_the_prior_of_earlier_first_states():
    """x_0's covariance is the N-IW MAP estimate (closed form below) under GPS's prior from
    earlier first states (μ0 = their mean, m = n0 = dx·strength, Φ = m·diag(their variance));
    strength 0 leaves the empirical covariance, a huge strength gives the prior's variance."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((5, 2, DX)) * [0.1, 0.2, 0.3] + 1.0
    earlier = rng.standard_normal((40, DX)) * [0.5, 0.1, 0.05] - 1.0
    mu0, Phi, m, n0 = initial_state_prior(earlier, strength=2.0)
    assert m == n0 == 2.0 * DX
    np.testing.assert_allclose(mu0, earlier.mean(0))
    np.testing.assert_allclose(Phi, m * np.diag(np.var(earlier, axis=0)))
    N, x0 = 5, X[:, 0]
    S = sum(np.outer(x - x0.mean(0), x - x0.mean(0)) for x in x0) / N
    d = x0.mean(0) - mu0
    expected = (N * S + Phi + N * m / (N + m) * np.outer(d, d)) / (N + n0) + 1e-6 * np.eye(DX)
    mean, cov = initial_state(X, 1e-6, (mu0, Phi, m, n0))
    np.testing.assert_allclose(mean, x0.mean(0))
    np.testing.assert_allclose(cov, expected, rtol=1e-12)
    _, plain = initial_state(X, 1e-6, initial_state_prior(earlier, strength=0.0))
    np.testing.assert_allclose(plain, S + 1e-6 * np.eye(DX), rtol=1e-12)
    _, strong = initial_state(X, 0.0, initial_state_prior(earlier, strength=1e12))
    np.testing.assert_allclose(strong, np.diag(np.var(earlier, axis=0)), rtol=1e-6, atol=1e-9)
    Xs, Us = simulate(rng, *system(rng), 5)
    D = 2 * DX + DU
    dyn = fit_bayesian(
        Xs, Us, HandPrior(np.zeros(D), np.eye(D), 1.0, 1.0), x0_prior=(mu0, Phi, m, n0)
    )
    np.testing.assert_allclose(dyn.x0_cov, initial_state(Xs, 1e-6, (mu0, Phi, m, n0))[1])
    assert np.abs(dyn.x0_cov - initial_state(Xs, 1e-6)[1]).max() > 1e-2
    with pytest.raises(FitError, match="initial-state prior gave μ0"):
        initial_state(X, 1e-6, (np.zeros(DX + 1), Phi, m, n0))
