"""Time-varying linear-Gaussian dynamics fit around the current trajectories (GPS's local models).

    p(x_{t+1} | x_t, u_t) = N(A_t x_t + B_t u_t + c_t, N_t),   Fx_t = [A_t B_t],  fx_t = c_t,

fit per step t from N rollouts. Both fits condition a joint Gaussian over (x_t, u_t, x_{t+1}):
* linear regression (the lecture's version 1.0): the empirical mean and covariance, with
  ``regularization`` added to the (x, u) block's diagonal (ridge regression; ``regularization_mode``
  'block' adds it to every entry of the block instead, as cbfinn/gps's DynamicsLR and
  DynamicsLRPrior do: a rank-one term, not a ridge, so it needs enough samples or a prior);
* Bayesian linear regression (version 2.0): the covariance's MAP estimate under a
  normal-inverse-Wishart prior N-IW(μ0, Φ, m, n0) taken from a global model — GPS's
  DynamicsPriorGMM: a GMM fit on all recent (x, u, x') gives, for the N points of step t, the
  posterior-weighted mean μ0 and scatter Φ of its clusters (any object with ``niw_prior``).

    Σ = (N·S + Φ + N·m/(N + m)·(μ̂ − μ0)(μ̂ − μ0)ᵀ) / (N + n0),   μ = μ̂

With m, n0, Φ → 0 this is the least-squares fit. The initial state x_0 gets the same MAP
estimate under an N-IW prior built from earlier samples' first states (``initial_state_prior``,
GPS's DynamicsPriorGMM.initial_state). Shapes: X (N, T+1, dx) states x_0..x_T,
U (N, T, du) actions u_0..u_{T−1}; the fitted model has T transitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

REGULARIZATION_MODES = ("diagonal", "block")


class FitError(ValueError):
    """The local dynamics cannot be fit from these samples; the message says why."""


class NIWPriorSource(Protocol):
    """A global model that gives a normal-inverse-Wishart prior for a batch of transitions."""

    def niw_prior(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
        """points (N, dx + du + dx) rows [x, u, x'] → (μ0 (D,), Φ (D, D), m, n0), with Φ already
        scaled by m as in GPS (Φ/n0 is the prior covariance's scale)."""


@dataclass(frozen=True)
class LocalDynamics:
    """Fx (T, dx, dx+du), fx (T, dx), cov (T, dx, dx) = N_t; x0_mean (dx,), x0_cov (dx, dx):
    the initial-state distribution p(x_0)."""

    Fx: np.ndarray
    fx: np.ndarray
    cov: np.ndarray
    x0_mean: np.ndarray
    x0_cov: np.ndarray

    @property
    def T(self) -> int:
        """Transitions (controller steps)."""
        return self.Fx.shape[0]

    @property
    def dx(self) -> int:
        return self.Fx.shape[1]

    @property
    def du(self) -> int:
        return self.Fx.shape[2] - self.Fx.shape[1]


def check_samples(X, U, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate rollouts X (N, T+1, dx), U (N, T, du): finite, matching, N ≥ min_samples, T ≥ 1."""
    X = np.asarray(X, dtype=np.float64)
    U = np.asarray(U, dtype=np.float64)
    if (
        X.ndim != 3
        or U.ndim != 3
        or X.shape[0] != U.shape[0]
        or X.shape[1] != U.shape[1] + 1
        or U.shape[1] < 1
    ):
        raise FitError(
            f"samples must be X (N, T+1, dx) and U (N, T, du) with T ≥ 1; got "
            f"{X.shape} and {U.shape}"
        )
    N = X.shape[0]
    if N < min_samples:
        raise FitError(f"{N} sample(s) are too few for the regression: need at least {min_samples}")
    for name, a in (("X", X), ("U", U)):
        if not np.all(np.isfinite(a)):
            raise FitError(f"{name} has non-finite values")
    return X, U


def transition_points(X, U) -> np.ndarray:
    """(N, T, dx+du+dx) rows [x_t, u_t, x_{t+1}] of rollouts X (N, T+1, dx), U (N, T, du)."""
    return np.concatenate([X[:, :-1], U, X[:, 1:]], axis=2)


def initial_state(X, regularization: float = 1e-6, prior=None) -> tuple[np.ndarray, np.ndarray]:
    """p(x_0) from the rollouts' first states: mean x̄ (dx,) and covariance, the empirical S
    (1/N) or, with an N-IW ``prior`` (μ0 (dx,), Φ (dx, dx), m, n0), its MAP estimate
    (N·S + Φ + N·m/(N + m)·(x̄ − μ0)(x̄ − μ0)ᵀ)/(N + n0); plus ``regularization``·I (so one
    sample, or identical starts, still give a PD covariance)."""
    x0 = np.asarray(X, dtype=np.float64)[:, 0]
    N, dx = x0.shape
    mean = x0.mean(axis=0)
    diff = x0 - mean
    cov = diff.T @ diff / N
    if prior is not None:
        mu0, Phi, m, n0 = _check_prior(prior, dx, "the initial-state prior")
        d = mean - mu0
        coef = N * m / (N + m) if m > 0 else 0.0
        cov = (N * cov + Phi + coef * np.outer(d, d)) / (N + n0)
        cov = 0.5 * (cov + cov.T)
    return mean, cov + regularization * np.eye(dx)


def initial_state_prior(x0, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray, float, float]:
    """GPS's N-IW prior on x_0 from earlier samples' first states x0 (M, dx): μ0 their mean,
    m = n0 = dx·strength, Φ = m·diag(their variance (1/M)). ``initial_state`` takes its MAP
    estimate, as the dynamics fit does; cbfinn/gps's own code divides only the mean term by
    N + n0, so there Φ enters undivided (about 1 + dx·strength times wider)."""
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim != 2 or len(x0) < 1 or not np.all(np.isfinite(x0)):
        raise FitError(f"initial-state prior needs finite first states (M, dx), got {x0.shape}")
    if strength < 0 or not np.isfinite(strength):
        raise FitError(f"prior strength must be finite and ≥ 0, got {strength}")
    m = x0.shape[1] * float(strength)
    return x0.mean(axis=0), m * np.diag(x0.var(axis=0)), m, m


def _check_prior(prior, D: int, what: str, where: str = ""):
    """(μ0, Φ, m, n0) as float arrays of sizes (D,), (D, D) and non-negative pseudo-counts;
    errors name ``what`` gave it ``where``."""
    mu0, Phi, m, n0 = prior
    mu0, Phi = np.asarray(mu0, dtype=np.float64), np.asarray(Phi, dtype=np.float64)
    if (
        mu0.shape != (D,)
        or Phi.shape != (D, D)
        or not (np.all(np.isfinite(mu0)) and np.all(np.isfinite(Phi)))
    ):
        raise FitError(
            f"{what} gave μ0 {mu0.shape} / Φ {Phi.shape} (need finite ({D},) and ({D}, {D})){where}"
        )
    m, n0 = float(m), float(n0)
    if not (m >= 0 and n0 >= 0):
        raise FitError(f"{what} gave negative pseudo-counts m={m}, n0={n0}{where}")
    return mu0, Phi, m, n0


def _condition(
    mu, sigma, dxu: int, regularization: float, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint Gaussians over [xu, x'] (T, D) / (T, D, D) → Fx, fx, cov of x' | xu, with
    ``regularization`` on the xu block's diagonal or (mode 'block') on all its entries."""
    sigma = sigma.copy()
    if mode == "block":
        sigma[:, :dxu, :dxu] += regularization
    else:
        idx = np.arange(dxu)
        sigma[:, idx, idx] += regularization
    try:
        Fx = np.swapaxes(np.linalg.solve(sigma[:, :dxu, :dxu], sigma[:, :dxu, dxu:]), 1, 2)
    except np.linalg.LinAlgError:
        raise FitError("the (x, u) covariance is singular: add regularization or samples") from None
    fx = mu[:, dxu:] - np.einsum("tij,tj->ti", Fx, mu[:, :dxu])
    cov = sigma[:, dxu:, dxu:] - Fx @ sigma[:, :dxu, dxu:]
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return Fx, fx, cov


def _moments(points):
    """(N, T, D) → mean (T, D), covariance with 1/N (T, D, D)."""
    mu = points.mean(axis=0)
    diff = points - mu
    return mu, np.einsum("nti,ntj->tij", diff, diff) / points.shape[0]


def _check_regularization(regularization: float, mode: str) -> None:
    if regularization < 0 or not np.isfinite(regularization):
        raise FitError(f"regularization must be finite and ≥ 0, got {regularization}")
    if mode not in REGULARIZATION_MODES:
        raise FitError(f"regularization_mode must be one of {REGULARIZATION_MODES}, got {mode!r}")


def _result(X, Fx, fx, cov, x0_regularization, x0_prior=None) -> LocalDynamics:
    if not np.all(np.isfinite(Fx)) or not np.all(np.isfinite(cov)):
        raise FitError("the fit produced non-finite dynamics")
    x0_mean, x0_cov = initial_state(X, x0_regularization, x0_prior)
    return LocalDynamics(Fx, fx, cov, x0_mean, x0_cov)


def fit_linear_regression(
    X,
    U,
    regularization: float = 1e-6,
    x0_regularization: float = 1e-6,
    regularization_mode: str = "diagonal",
) -> LocalDynamics:
    """Version 1.0: per-step least squares of x_{t+1} on [x_t, u_t, 1] (ridge ``regularization``
    on the (x, u) covariance, or gps's 'block' term). Without a ridge it needs N ≥ dx + du + 1
    samples."""
    X, U = check_samples(X, U)
    N, _, dx = X.shape
    dxu = dx + U.shape[2]
    _check_regularization(regularization, regularization_mode)
    if (regularization == 0 or regularization_mode == "block") and N < dxu + 1:
        kind = "unregularised" if regularization == 0 else "block-regularised"
        raise FitError(
            f"{N} samples are too few for {kind} regression on dx + du = {dxu} "
            f"inputs: need at least {dxu + 1}, or regularization > 0 with "
            f"regularization_mode 'diagonal'"
        )
    mu, sigma = _moments(transition_points(X, U))
    return _result(
        X, *_condition(mu, sigma, dxu, regularization, regularization_mode), x0_regularization
    )


def fit_bayesian(
    X,
    U,
    prior: NIWPriorSource,
    strength: float = 1.0,
    regularization: float = 1e-6,
    x0_regularization: float = 1e-6,
    regularization_mode: str = "diagonal",
    x0_prior=None,
) -> LocalDynamics:
    """Version 2.0: per-step MAP regression under the N-IW prior ``prior.niw_prior`` of that
    step's points; ``strength`` scales the prior's pseudo-counts m, n0 and Φ (0: least squares).
    ``x0_prior``: (μ0, Φ, m, n0) on x_0 (e.g. ``initial_state_prior``), used as given."""
    X, U = check_samples(X, U)
    N, T, du = U.shape
    dx = X.shape[2]
    dxu = dx + du
    if strength < 0 or not np.isfinite(strength):
        raise FitError(f"prior strength must be finite and ≥ 0, got {strength}")
    _check_regularization(regularization, regularization_mode)
    points = transition_points(X, U)
    mu, S = _moments(points)
    D = points.shape[2]
    sigma = np.empty_like(S)
    for t in range(T):
        mu0, Phi, m, n0 = _check_prior(
            prior.niw_prior(points[:, t]), D, "the prior", f" at step {t}"
        )
        m, n0 = strength * m, strength * n0
        d = mu[t] - mu0
        coef = N * m / (N + m) if m > 0 else 0.0
        sigma[t] = (N * S[t] + strength * Phi + coef * np.outer(d, d)) / (N + n0)
    sigma = 0.5 * (sigma + np.swapaxes(sigma, 1, 2))
    return _result(
        X,
        *_condition(mu, sigma, dxu, regularization, regularization_mode),
        x0_regularization,
        x0_prior,
    )
