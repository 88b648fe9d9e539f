"""The KL-constrained controller update (the lecture's "DGD with iterative LQR").

    min_p E_p[Σ c]  s.t.  D_KL(p(τ) ‖ p̄(τ)) ≤ ε

Its Lagrangian, divided by the dual variable η, is the maximum-entropy LQR problem with the cost
c̃ = c/η − log p̄(u|x); the backward pass (``mbrl_ros.planning.lqr``) gives p = N(K x + k,
Q̃_uu⁻¹). The dual's gradient is dg/dη = D_KL(p ‖ p̄) − ε, so η goes up while the KL is too large
and down while it is too small: geometric steps (chosen by the secant of log KL on log η, between
×/÷ 1.5 and ``eta_step``, ``eta_step``³ once a secant exists) until the sign changes, then steps
inside the bracket by the same secant (bisection in log η as a safeguard), until
|KL − ε| ≤ rel_tol·ε. A Q̃_uu that is not positive definite means η is too small: it counts as
"KL too large". A search that runs out of iterations returns its best controller inside the trust
region with a warning (as GPS does). ε (``epsilon``) is the trust region in nats over the whole
trajectory; ``adapt_step`` rescales it from predicted against actual improvement, as guided policy
search does.

With an entropy weight ν > 0 (``entropy``; cbfinn/gps's ``max_ent_traj``) the objective is
E_p[Σ c] − ν H(p) under the same bound. Its Lagrangian divided by η + ν has the cost
c/(η+ν) − η/(η+ν) log p̄(u|x): as η → 0, Σ = Q̃_uu⁻¹ tends to the cost's maximum-entropy
covariance ν·Q_uu⁻¹ instead of to 0. ν = 0 is the plain update, bit for bit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from mbrl_ros.control.controller import LinearGaussianController, kl_divergence
from mbrl_ros.planning.lqr import NotPositiveDefinite, backward_pass
from mbrl_ros.trajopt.local_dynamics import LocalDynamics
from mbrl_ros.trajopt.trajectory import (
    QuadraticCost,
    TrajectoryDistribution,
    absolute_gains,
    controller_from_gains,
    expected_cost,
    forward_pass,
)


class KLUpdateError(RuntimeError):
    """The update found no controller inside the trust region (η at its bound, or no Q̃_uu
    positive definite); nothing should be published."""


class KLSearchWarning(RuntimeWarning):
    """The η search ran out of iterations; the update returned its best controller inside the
    trust region instead of one with KL ≈ ε."""


@dataclass(frozen=True)
class KLSettings:
    """η search: bounds, first geometric step factor, relative tolerance on KL − ε, iterations."""

    eta_min: float = 1e-8
    eta_max: float = 1e16
    eta_step: float = 10.0
    rel_tol: float = 0.1
    max_iterations: int = 50

    def __post_init__(self):
        if not 0 < self.eta_min < self.eta_max < math.inf:
            raise ValueError(
                f"need 0 < eta_min < eta_max < inf, got {self.eta_min}, {self.eta_max}"
            )
        if not self.eta_step > 1:
            raise ValueError(f"eta_step must be > 1, got {self.eta_step}")
        if not 0 < self.rel_tol < 1:
            raise ValueError(f"rel_tol must be in (0, 1), got {self.rel_tol}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be ≥ 1, got {self.max_iterations}")


@dataclass(frozen=True)
class KLUpdateResult:
    """The new controller (about its predicted mean states), its predicted trajectory
    distribution and expected cost (sum over t) under the local dynamics, η, the KL (nats),
    iterations, ``active``: False when even η = eta_min stays inside the trust region, and
    ``converged``: False when the search ran out and this is its best feasible controller."""

    controller: LinearGaussianController
    trajectory: TrajectoryDistribution
    expected_cost: float
    eta: float
    kl: float
    iterations: int
    active: bool
    converged: bool = True


def kl_cost_terms(prev: LinearGaussianController) -> tuple[np.ndarray, np.ndarray]:
    """−log p̄(u|x) as ½ zᵀH z + gᵀz + const: H (T, dz, dz) = Mᵀ Σ̄⁻¹ M with M = [−K̄ I],
    g (T, dz) = −Mᵀ Σ̄⁻¹ k̄ (absolute k̄). Needs every Σ̄_t positive definite."""
    if prev.inv_cov is None:
        raise KLUpdateError(
            "the previous controller's covariance is not positive definite: "
            "the KL to it is infinite"
        )
    K, k_abs, _ = absolute_gains(prev)
    M = np.concatenate([-K, np.broadcast_to(np.eye(prev.du), (prev.T, prev.du, prev.du))], axis=2)
    PM = prev.inv_cov @ M
    H = np.swapaxes(M, 1, 2) @ PM
    return 0.5 * (H + np.swapaxes(H, 1, 2)), -np.einsum("tij,ti->tj", PM, k_abs)


def solve_for_eta(
    cost: QuadraticCost,
    dyn: LocalDynamics,
    prev: LinearGaussianController,
    eta: float,
    terms=None,
    entropy: float = 0.0,
):
    """argmin_p of the Lagrangian at η with entropy weight ν = ``entropy`` (module docstring):
    (absolute K, k, Σ, trajectory, KL in nats); raises NotPositiveDefinite when Q̃_uu is not.
    The terminal row of ``cost`` is the value at x_T."""
    H, g = kl_cost_terms(prev) if terms is None else terms
    T, dx = dyn.T, dyn.dx
    scale, prior = eta + entropy, eta / (eta + entropy)  # ν = 0: η and exactly 1
    if prior != 1.0:
        H, g = prior * H, prior * g
    sol = backward_pass(
        dyn.Fx,
        dyn.fx,
        cost.C[:T] / scale + H,
        cost.c[:T] / scale + g,
        Vxx_T=cost.C[T, :dx, :dx] / scale,
        vx_T=cost.c[T, :dx] / scale,
    )
    traj = forward_pass(dyn, sol.K, sol.k, sol.Quu_inv)
    p = LinearGaussianController.gaussian(
        np.zeros((T, dx)), sol.k, sol.K, None, sol.Quu_inv, dt_ns=prev.dt_ns
    )
    kl = float(kl_divergence(p, prev, traj.x_mean[:T], traj.x_cov[:T]).sum())
    return sol.K, sol.k, sol.Quu_inv, traj, kl


def kl_update(
    cost: QuadraticCost,
    dyn: LocalDynamics,
    prev: LinearGaussianController,
    epsilon: float,
    eta0: float = 1.0,
    settings: KLSettings = KLSettings(),
    entropy: float = 0.0,
) -> KLUpdateResult:
    """The KL-constrained update of ``prev`` (Gaussian, PD Σ̄, T = dyn.T steps) on the local
    dynamics ``dyn`` and the cost expansion ``cost``, with trust region ``epsilon`` nats, starting
    the dual search at ``eta0`` (e.g. the last iteration's η), with entropy weight ``entropy``
    (ν ≥ 0, in cost units per nat; module docstring). When the search runs out of
    iterations it returns the best controller found inside the trust region (the largest KL ≤ ε)
    with ``converged`` False and a KLSearchWarning, as GPS does. Raises KLUpdateError when η
    reaches eta_max with the KL still above ε (or Q̃_uu never positive definite), or the search
    ends without a controller inside the trust region; ValueError on bad input."""
    if prev.T != dyn.T or prev.dx != dyn.dx or prev.du != dyn.du:
        raise ValueError(
            f"controller (T, dx, du) = {(prev.T, prev.dx, prev.du)} does not match "
            f"the local dynamics {(dyn.T, dyn.dx, dyn.du)}"
        )
    if not np.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive number of nats, got {epsilon}")
    if not np.isfinite(entropy) or entropy < 0:
        raise ValueError(f"entropy must be a finite weight ≥ 0, got {entropy}")
    s = settings
    terms = kl_cost_terms(prev)
    eta = min(max(float(eta0), s.eta_min), s.eta_max)
    lo = hi = None  # (log η, log KL) of the largest η seen too small / smallest seen too large
    last = None  # the previous iteration's (log η, log KL)
    best = None  # (η, solution) with the largest KL ≤ ε so far
    converged = False
    for it in range(1, s.max_iterations + 1):
        try:
            solution = solve_for_eta(cost, dyn, prev, eta, terms, entropy)
            kl = solution[-1]
        except NotPositiveDefinite:
            solution, kl = None, math.inf
        if kl <= epsilon and (best is None or kl > best[1][-1]):
            best = (eta, solution)
        if solution is not None and abs(kl - epsilon) <= s.rel_tol * epsilon:
            converged = True
            break
        if solution is not None and kl < epsilon and eta <= s.eta_min:
            converged = True
            break  # the trust region is inactive: the unconstrained step is inside it
        too_small = kl > epsilon
        if too_small and eta >= s.eta_max:
            what = (
                "Q̃_uu is not positive definite"
                if solution is None
                else f"KL {kl:.4g} > ε = {epsilon:.4g}"
            )
            raise KLUpdateError(f"η reached its bound {s.eta_max:g} and {what}")
        point = (math.log(eta), math.log(kl) if 0 < kl < math.inf else None)
        if too_small:
            lo = point
        else:
            hi = point
        if lo is None or hi is None:
            x = _outside(point, last, math.log(epsilon), too_small, math.log(s.eta_step))
            next_eta = min(max(math.exp(x), s.eta_min), s.eta_max)
        else:
            next_eta = math.exp(_inside(lo, hi, math.log(epsilon)))
        if it < s.max_iterations:
            eta, last = next_eta, point
    if not converged:
        what = "Q̃_uu not positive definite" if solution is None else f"KL = {kl:.4g}"
        message = (
            f"η search did not converge in {s.max_iterations} iterations (last η = "
            f"{eta:.4g}: {what}, ε = {epsilon:.4g})"
        )
        if best is None:
            raise KLUpdateError(message + "; no controller inside the trust region")
        warnings.warn(
            f"{message}; using η = {best[0]:.4g} with KL = {best[1][-1]:.4g}",
            KLSearchWarning,
            stacklevel=2,
        )
        eta, solution = best
    K, k, Sigma, traj, kl = solution
    ctrl = controller_from_gains(K, k, Sigma, traj.x_mean[:-1], prev)
    return KLUpdateResult(
        ctrl,
        traj,
        expected_cost(cost, traj),
        eta,
        kl,
        it,
        active=kl >= (1 - s.rel_tol) * epsilon,
        converged=converged,
    )


def _outside(point, last, log_eps: float, up: bool, log_step: float) -> float:
    """Next log η before the bracket closes (``up``: the KL is too large). The secant of log KL
    on log η through the last two points, or with one point the slope −1.5 (the KL falls between
    η⁻¹, its covariance part, and η⁻², its mean part), moving by a factor between 1.5 and the
    step (the step cubed along a secant: far from the solution log KL is close to linear in
    log η); the full step where Q̃_uu was not positive definite."""
    (a, fa), sign = point, (1.0 if up else -1.0)
    if fa is None:
        return a + sign * log_step
    slope, limit = -1.5, log_step
    if last is not None and last[1] is not None and last[0] != a:
        secant = (fa - last[1]) / (a - last[0])
        if secant < 0:
            slope, limit = secant, 3.0 * log_step
    move = abs((log_eps - fa) / slope)
    return a + sign * min(max(move, math.log(1.5)), limit)


def _inside(lo, hi, log_eps: float) -> float:
    """Next log η in the bracket (lo too small, hi too large): the secant of log KL on log η,
    kept in the bracket's middle 80 %; bisection where a KL is missing (not PD)."""
    (a, fa), (b, fb) = lo, hi
    mid = 0.5 * (a + b)
    if fa is None or fb is None or fa == fb:
        return mid
    x = a + (log_eps - fa) * (b - a) / (fb - fa)
    margin = 0.1 * (b - a)
    return min(max(x, min(a, b) + margin), max(a, b) - margin)


def adapt_step(
    step_mult: float,
    previous_cost: float,
    predicted_cost: float,
    actual_cost: float,
    bounds: tuple[float, float] = (0.1, 10.0),
) -> float:
    """GPS's trust-region adaptation. previous_cost: the old controller's expected cost on the
    old local model; predicted_cost: the new controller's on the old model; actual_cost: the new
    controller's on the new model. The multiplier of ε becomes step_mult · clip(predicted /
    (2·max(predicted − actual, 1e-4)), 0.1, 5) within ``bounds``."""
    predicted = previous_cost - predicted_cost
    actual = previous_cost - actual_cost
    ratio = predicted / (2.0 * max(1e-4, predicted - actual))
    new = step_mult * min(max(ratio, 0.1), 5.0)
    return float(min(max(new, bounds[0]), bounds[1]))
