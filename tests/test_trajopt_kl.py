"""Trajectory distributions and the KL-constrained update (trajopt.trajectory, trajopt.kl_update)
against Monte Carlo, scipy's Riccati solution and the controller's own log-density."""

import re

import numpy as np
import pytest
from scipy.linalg import solve_discrete_are

from mbrl_ros.control.controller import LinearGaussianController, kl_divergence
from mbrl_ros.planning.lqr import backward_pass
from mbrl_ros.trajopt.kl_update import (
    KLSearchWarning,
    KLSettings,
    KLUpdateError,
    adapt_step,
    kl_cost_terms,
    kl_update,
    solve_for_eta,
)
from mbrl_ros.trajopt.local_dynamics import LocalDynamics
from mbrl_ros.trajopt.trajectory import QuadraticCost, absolute_gains, expected_cost, forward_pass

DX, DU, T = 4, 2, 12
DT_NS = 10_000_000


def problem(seed=0, cost_uu=0.1):
    """A stable random linear-Gaussian system, a Gaussian controller p̄ and a quadratic cost that
    pulls the state towards a goal (terminal row: state only)."""
    rng = np.random.default_rng(seed)
    A = 0.9 * np.eye(DX) + 0.1 * rng.standard_normal((T, DX, DX))
    B = 0.3 * rng.standard_normal((T, DX, DU))
    W = 0.05 * rng.standard_normal((T, DX, DX))
    dyn = LocalDynamics(
        np.concatenate([A, B], axis=2),
        0.1 * rng.standard_normal((T, DX)),
        W @ np.swapaxes(W, 1, 2) + 1e-3 * np.eye(DX),
        rng.standard_normal(DX),
        0.1 * np.eye(DX),
    )
    M = 0.3 * rng.standard_normal((T, DU, DU))
    prev = LinearGaussianController.gaussian(
        rng.standard_normal((T, DX)),
        rng.standard_normal((T, DU)),
        0.2 * rng.standard_normal((T, DU, DX)),
        0.1 * rng.standard_normal((T, DU)),
        M @ np.swapaxes(M, 1, 2) + 0.2 * np.eye(DU),
        dt_ns=DT_NS,
    )
    dz = DX + DU
    C = np.zeros((T + 1, dz, dz))
    C[:, :DX, :DX] = np.eye(DX)
    C[:T, DX:, DX:] = cost_uu * np.eye(DU)
    goal = np.ones(DX)
    c = np.zeros((T + 1, dz))
    c[:, :DX] = -goal
    return dyn, prev, QuadraticCost(C, c, 0.5 * (T + 1) * goal @ goal)


def sample(dyn, ctrl, n, rng):
    """Monte Carlo trajectories X (n, T+1, dx), U (n, T, du) of ``ctrl`` on ``dyn``."""
    X = np.empty((n, T + 1, DX))
    U = np.empty((n, T, DU))
    X[:, 0] = dyn.x0_mean + rng.standard_normal((n, DX)) @ np.linalg.cholesky(dyn.x0_cov).T
    for t in range(T):
        U[:, t] = ctrl.sample(X[:, t], t, rng)
        z = np.concatenate([X[:, t], U[:, t]], axis=1)
        X[:, t + 1] = (
            z @ dyn.Fx[t].T
            + dyn.fx[t]
            + rng.standard_normal((n, DX)) @ np.linalg.cholesky(dyn.cov[t]).T
        )
    return X, U


def test_forward_pass_and_expected_cost_match_monte_carlo():
    dyn, prev, cost = problem()
    traj = forward_pass(dyn, *absolute_gains(prev))
    X, U = sample(dyn, prev, 200_000, np.random.default_rng(1))
    Z = np.concatenate([X, np.concatenate([U, np.zeros((len(U), 1, DU))], axis=1)], axis=2)
    np.testing.assert_allclose(traj.mean, Z.mean(0), atol=0.02)
    mc_cov = np.einsum("nti,ntj->tij", Z - Z.mean(0), Z - Z.mean(0)) / len(Z)
    np.testing.assert_allclose(traj.cov, mc_cov, atol=0.02 * np.abs(traj.cov).max())
    costs = cost(Z)
    assert expected_cost(cost, traj) == pytest.approx(
        costs.mean(), abs=4 * costs.std() / np.sqrt(len(costs))
    )


def test_kl_cost_terms_are_minus_log_density_up_to_a_constant():
    _, prev, _ = problem()
    H, g = kl_cost_terms(prev)
    rng = np.random.default_rng(2)
    x, u = rng.standard_normal((5, T, DX)), rng.standard_normal((5, T, DU))
    z = np.concatenate([x, u], axis=2)
    quad = 0.5 * np.einsum("nti,tij,ntj->nt", z, H, z) + np.einsum("nti,ti->nt", z, g)
    offset = quad + prev.log_prob(u, x, np.arange(T))
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-9)


def test_trajectory_kl_equals_monte_carlo():
    """D_KL(p(τ) ‖ p̄(τ)) = E_p[Σ_t log p(u_t|x_t) − log p̄(u_t|x_t)] (the dynamics cancel)."""
    dyn, prev, cost = problem()
    result = kl_update(cost, dyn, prev, epsilon=3.0)
    X, U = sample(dyn, result.controller, 100_000, np.random.default_rng(3))
    t = np.arange(T)
    log_ratio = (result.controller.log_prob(U, X[:, :T], t) - prev.log_prob(U, X[:, :T], t)).sum(1)
    se = log_ratio.std() / np.sqrt(len(log_ratio))
    assert result.kl == pytest.approx(log_ratio.mean(), abs=4 * se)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0, 50.0])
def test_dual_search_meets_the_trust_region(epsilon):
    dyn, prev, cost = problem()
    before = expected_cost(cost, forward_pass(dyn, *absolute_gains(prev)))
    result = kl_update(cost, dyn, prev, epsilon)
    assert abs(result.kl - epsilon) <= 0.1 * epsilon and result.active
    assert result.expected_cost < before
    # the new controller is the maximum-entropy LQR solution for c/η − log p̄ (Σ = Q̃_uu⁻¹)
    H, g = kl_cost_terms(prev)
    sol = backward_pass(
        dyn.Fx,
        dyn.fx,
        cost.C[:T] / result.eta + H,
        cost.c[:T] / result.eta + g,
        Vxx_T=cost.C[T, :DX, :DX] / result.eta,
        vx_T=cost.c[T, :DX] / result.eta,
    )
    np.testing.assert_allclose(result.controller.cov, sol.Quu_inv, rtol=1e-9, atol=1e-12)
    K, k, _ = absolute_gains(result.controller)
    np.testing.assert_allclose(K, sol.K, atol=1e-9)
    np.testing.assert_allclose(k, sol.k, atol=1e-9)


def test_larger_trust_region_gives_smaller_eta_and_lower_cost():
    dyn, prev, cost = problem()
    results = [kl_update(cost, dyn, prev, eps) for eps in (0.5, 5.0, 50.0)]
    etas = [r.eta for r in results]
    costs = [r.expected_cost for r in results]
    assert etas == sorted(etas, reverse=True) and costs == sorted(costs, reverse=True)


def test_indefinite_quu_is_recovered_by_raising_eta():
    """A cost with negative curvature in u: small η makes Q̃_uu indefinite; the search treats
    that as 'η too small' and still meets ε."""
    dyn, prev, cost = problem(cost_uu=-5.0)
    result = kl_update(cost, dyn, prev, 2.0, eta0=1e-6)
    assert abs(result.kl - 2.0) <= 0.2


def test_eta_at_its_bound_is_an_error():
    dyn, prev, cost = problem()
    with pytest.raises(KLUpdateError, match="η reached its bound"):
        kl_update(cost, dyn, prev, 0.01, settings=KLSettings(eta_min=1e-6, eta_max=1e-3))


def test_search_out_of_iterations_returns_its_best_feasible_controller_with_a_warning():
    """From η far above the solution every iterate is inside the trust region: after 3 iterations
    the update warns and returns the iterate with the largest KL ≤ ε (the smallest η), and the
    warning pairs that η with its own KL."""
    dyn, prev, cost = problem()
    with pytest.warns(KLSearchWarning, match="did not converge in 3 iterations") as caught:
        result = kl_update(cost, dyn, prev, 1.0, eta0=1e8, settings=KLSettings(max_iterations=3))
    assert not result.converged and result.iterations == 3
    etas = [1e8, 1e7]  # the first (bounded) step from one point: ÷ eta_step
    kls = [solve_for_eta(cost, dyn, prev, eta)[-1] for eta in etas]
    assert kls[1] > kls[0]  # the smaller η moves further from p̄
    message = str(caught[0].message)
    eta_used, kl_used = (
        float(v) for v in re.search(r"using η = (\S+) with KL = (\S+)$", message).groups()
    )
    assert result.eta < etas[1] and result.kl < 1.0 and result.kl > kls[1]
    assert eta_used == pytest.approx(result.eta, rel=1e-3)
    assert kl_used == pytest.approx(result.kl, rel=1e-3)
    assert result.kl == pytest.approx(solve_for_eta(cost, dyn, prev, result.eta)[-1], rel=1e-12)
    last_eta, last_kl = (
        float(v) for v in re.search(r"last η = (\S+): KL = (\S+),", message).groups()
    )
    assert last_kl == pytest.approx(solve_for_eta(cost, dyn, prev, last_eta)[-1], rel=1e-3)
    # the controller is the maximum-entropy solution at the returned η
    K, k, _ = absolute_gains(result.controller)
    np.testing.assert_allclose(K, solve_for_eta(cost, dyn, prev, result.eta)[0], atol=1e-12)


def test_search_out_of_iterations_without_a_feasible_controller_is_an_error():
    """From η far below the solution every iterate's KL is above ε: no controller to return;
    the message pairs the last η with its KL."""
    dyn, prev, cost = problem()
    with pytest.raises(KLUpdateError, match="no controller inside the trust region") as caught:
        kl_update(cost, dyn, prev, 1.0, eta0=1e-4, settings=KLSettings(max_iterations=2))
    eta, kl = (
        float(v) for v in re.search(r"last η = (\S+): KL = (\S+),", str(caught.value)).groups()
    )
    assert eta > 1e-4 and kl > 1.0
    assert kl == pytest.approx(solve_for_eta(cost, dyn, prev, eta)[-1], rel=1e-3)


def test_inactive_trust_region_stops_at_the_smallest_eta():
    dyn, prev, cost = problem()
    result = kl_update(cost, dyn, prev, 1e9, settings=KLSettings(eta_min=1e-3))
    assert not result.active and result.eta == 1e-3 and result.kl < 1e9


def test_previous_controller_must_be_gaussian():
    dyn, prev, cost = problem()
    det = LinearGaussianController.feedback(prev.x_hat, prev.u_hat, prev.K, prev.k, dt_ns=DT_NS)
    with pytest.raises(KLUpdateError, match="not positive definite"):
        kl_update(cost, dyn, det, 1.0)
    with pytest.raises(ValueError, match="epsilon must be"):
        kl_update(cost, dyn, prev, -1.0)


def lagrangian(cost, dyn, prev, eta, nu, K, k, Sigma):
    """E_p[Σ c] − ν H(p) + η D_KL(p ‖ p̄) of p = N(K x + k, Σ) (absolute gains), exactly from
    the forward pass; H(p) counts the controller's conditional entropies (the dynamics' own
    entropy does not depend on p)."""
    traj = forward_pass(dyn, K, k, Sigma)
    p = LinearGaussianController.gaussian(np.zeros((T, DX)), k, K, None, Sigma, dt_ns=DT_NS)
    kl = kl_divergence(p, prev, traj.x_mean[:T], traj.x_cov[:T]).sum()
    entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * Sigma)[1].sum()
    return expected_cost(cost, traj) - nu * entropy + eta * kl


@pytest.mark.parametrize("eta, nu", [(0.05, 0.3), (2.0, 0.5), (0.01, 2.0)])
def test_entropy_weighted_solution_is_the_stationary_point_of_its_lagrangian(eta, nu):
    """solve_for_eta with ν > 0 minimises E[c] − νH + η KL (checked by central differences of
    the exact Lagrangian along random directions of K, k and Σ, and by random perturbations)."""
    dyn, prev, cost = problem()
    K, k, Sigma, _, _ = solve_for_eta(cost, dyn, prev, eta, entropy=nu)
    L0 = lagrangian(cost, dyn, prev, eta, nu, K, k, Sigma)
    rng = np.random.default_rng(4)
    h = 1e-5
    for _ in range(6):
        dK, dk = rng.standard_normal(K.shape), rng.standard_normal(k.shape)
        A = rng.standard_normal(Sigma.shape)
        dS = A + np.swapaxes(A, 1, 2)
        up = lagrangian(cost, dyn, prev, eta, nu, K + h * dK, k + h * dk, Sigma + h * dS)
        down = lagrangian(cost, dyn, prev, eta, nu, K - h * dK, k - h * dk, Sigma - h * dS)
        scale = np.abs(up - L0) + np.abs(down - L0) + 1e-12
        assert abs(up - down) / (2 * h) <= 1e-4 * (1 + abs(L0)), "gradient not zero"
        assert up - L0 > -1e-9 * scale and down - L0 > -1e-9 * scale
        big = lagrangian(cost, dyn, prev, eta, nu, K + 0.05 * dK, k + 0.05 * dk, Sigma)
        assert big > L0


def test_entropy_keeps_the_covariance_the_cost_would_shrink_and_still_meets_the_bound():
    """A large trust region lets η fall and the cost shrink Σ = Q̃_uu⁻¹; with ν > 0 the update
    keeps more covariance (larger log|Σ|) at the same KL bound, monotonically in ν."""
    dyn, prev, cost = problem()
    plain = kl_update(cost, dyn, prev, 50.0)
    log_dets = [np.linalg.slogdet(plain.controller.cov)[1].sum()]
    for nu in (0.01, 0.1, 1.0):
        result = kl_update(cost, dyn, prev, 50.0, entropy=nu)
        assert abs(result.kl - 50.0) <= 5.0 and result.active
        log_dets.append(np.linalg.slogdet(result.controller.cov)[1].sum())
        K, k, Sigma, _, _ = solve_for_eta(cost, dyn, prev, result.eta, entropy=nu)
        np.testing.assert_allclose(result.controller.cov, Sigma, rtol=1e-12)
    assert log_dets == sorted(log_dets) and log_dets[-1] > log_dets[0] + 1.0


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_entropy_weight_must_be_finite_and_non_negative(bad):
    dyn, prev, cost = problem()
    with pytest.raises(ValueError, match="entropy must be a finite weight ≥ 0, got"):
        kl_update(cost, dyn, prev, 1.0, entropy=bad)


def test_step_adaptation():
    # the model predicted the improvement exactly: grow by the maximum factor 5
    assert adapt_step(1.0, 10.0, 5.0, 5.0) == 5.0
    # half the predicted improvement came true: keep ε
    assert adapt_step(2.0, 10.0, 6.0, 8.0) == pytest.approx(2.0)
    # the cost went up: 4 / (2 · 6) of the old multiplier
    assert adapt_step(1.0, 10.0, 6.0, 12.0) == pytest.approx(1 / 3)
    # far worse than predicted: shrink by at most 10, and not below the lower bound
    assert adapt_step(2.0, 10.0, 9.9, 20.0) == pytest.approx(0.2)
    assert adapt_step(0.2, 10.0, 9.9, 20.0, bounds=(0.1, 10.0)) == 0.1


def test_backward_pass_converges_to_the_riccati_solution_as_the_horizon_grows():
    """Zero terminal value: the first step's gain approaches scipy's infinite-horizon gain."""
    rng = np.random.default_rng(4)
    A = np.eye(DX) + 0.1 * rng.standard_normal((DX, DX))
    B = rng.standard_normal((DX, DU))
    Q, R = np.eye(DX), 0.5 * np.eye(DU)
    P = solve_discrete_are(A, B, Q, R)
    K_inf = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    errors = []
    for horizon in (2, 10, 40, 300):
        C = np.zeros((horizon, DX + DU, DX + DU))
        C[:, :DX, :DX], C[:, DX:, DX:] = Q, R
        sol = backward_pass(
            np.tile(np.hstack([A, B]), (horizon, 1, 1)),
            np.zeros((horizon, DX)),
            C,
            np.zeros((horizon, DX + DU)),
        )
        errors.append(np.abs(sol.K[0] - K_inf).max())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-9 and errors[0] > 1e-2
