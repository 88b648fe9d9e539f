"""Mirror-descent GPS (trajopt.mdgps): the S-step loss against weighted least squares in closed
form, the policy linearisation against finite differences, the C-step against the plain
KL-constrained update, and a small MDGPS run on a double integrator."""

import numpy as np
import pytest
import torch

from mbrl_ros.policy.network import GoalPolicy, PolicySignature
from mbrl_ros.trajopt.gps import GPS, GPSConfig, initial_controller
from mbrl_ros.trajopt.mdgps import MDGPS, SStepConfig, linearize_policy, s_step, s_step_loss

DT = 0.1
T = 20


torch.set_num_threads(1)


class LinearPolicy(torch.nn.Module):
    """u = W [x; g] + b, the call signature of GoalPolicy."""

    def __init__(self, dx, du, W=None, b=None):
        super().__init__()
        self.W = torch.nn.Parameter(
            torch.zeros(du, dx + 3, dtype=torch.float64)
            if W is None
            else torch.as_tensor(W, dtype=torch.float64)
        )
        self.b = torch.nn.Parameter(
            torch.zeros(du, dtype=torch.float64)
            if b is None
            else torch.as_tensor(b, dtype=torch.float64)
        )

    def forward(self, x, g):
        shape = torch.broadcast_shapes(x.shape[:-1], g.shape[:-1])
        z = torch.cat([x.expand(*shape, -1), g.expand(*shape, -1)], -1)
        return z @ self.W.T + self.b


def _pairs(rng, n=60, dx=4, du=2):
    X, G, U = rng.normal(size=(n, dx)), rng.normal(size=(n, 3)), rng.normal(size=(n, du))
    L = rng.normal(size=(n, du, du))
    P = L @ np.swapaxes(L, 1, 2) + 0.1 * np.eye(du)  # full (non-diagonal) precisions
    return X, G, U, P


def _closed_form(X, G, U, P):
    """argmin_θ Σ_i (A_i θ − u_i)ᵀ P_i (A_i θ − u_i) for u = W z + b, θ = [vec W (row-major); b]."""
    n, du = U.shape
    Z = np.concatenate([X, G, np.ones((n, 1))], 1)
    A = np.einsum("ij,nk->nijk", np.eye(du), Z).reshape(n, du, du * Z.shape[1])
    H = np.einsum("nia,nij,njb->ab", A, P, A)
    theta = np.linalg.solve(H, np.einsum("nia,nij,nj->a", A, P, U))
    value = np.einsum("ni,nij,nj->n", A @ theta - U, P, A @ theta - U).mean()
    W = theta.reshape(du, -1)
    return W[:, :-1], W[:, -1], value


def test_s_step_loss_is_the_precision_weighted_least_squares_of_a_linear_policy():
    rng = np.random.default_rng(0)
    X, G, U, P = _pairs(rng)
    W, b, value = _closed_form(X, G, U, P)
    tensors = [torch.as_tensor(a) for a in (X, G, U, P)]
    best = LinearPolicy(4, 2, W, b)
    loss = s_step_loss(best, *tensors)
    loss.backward()
    assert loss.item() == pytest.approx(value, rel=1e-12)
    assert torch.linalg.norm(best.W.grad) < 1e-9 and torch.linalg.norm(best.b.grad) < 1e-9
    # the diagonal of P alone gives another minimiser: the off-diagonal weights matter
    W_diag, b_diag, _ = _closed_form(X, G, U, P * np.eye(2))
    assert np.abs(W_diag - W).max() > 1e-2
    # training reaches the closed-form minimum, and the variance is 1/diag(mean P)
    policy = LinearPolicy(4, 2)
    final, var = s_step(policy, X, G, U, P, SStepConfig(train_steps=3000, batch=1000, lr=0.02))
    assert final == pytest.approx(value, rel=1e-4)
    np.testing.assert_allclose(policy.W.detach().numpy(), W, atol=1e-3)
    np.testing.assert_allclose(var, 1.0 / np.diagonal(P.mean(0)), rtol=1e-12)


def _arm_policy(seed=3):
    sig = PolicySignature.for_joints("toy", ["a", "b"], DT)
    policy = GoalPolicy(sig, [5.0, 3.0], (16, 16), seed=seed)
    with torch.no_grad():  # large output weights: a clearly nonlinear policy
        policy.layers[-1].weight.mul_(100.0)
    return policy


def test_policy_linearisation_matches_finite_differences():
    rng = np.random.default_rng(1)
    policy, goal = _arm_policy(), np.array([0.3, -0.2, 0.5])
    X = rng.normal(scale=0.5, size=(5, T + 1, 4))
    like = initial_controller(np.zeros(2), np.zeros(2), T, int(DT * 1e9), 1.0, 0.1, 0.5)
    var = np.array([0.04, 0.09])
    lin = linearize_policy(policy, X, goal, var, like)
    frozen = policy.frozen()
    t, h = 7, 1e-6
    J = np.zeros((5, 2, 4))
    for i in range(5):
        for j in range(4):
            e = np.eye(4)[j] * h
            up, down = X[i, t] + e, X[i, t] - e
            J[i, :, j] = (
                frozen.act(up[:2], up[2:], goal) - frozen.act(down[:2], down[2:], goal)
            ) / (2 * h)
    np.testing.assert_allclose(lin.K[t], J.mean(0), rtol=1e-6, atol=1e-8)
    u = np.stack([frozen.act(x[:2], x[2:], goal) for x in X[:, t]])
    pred = lin.act(X[:, t], t)
    np.testing.assert_allclose(pred.mean(0), u.mean(0), atol=1e-10)  # unbiased on the samples
    spread = (u - pred) - (u - pred).mean(0)
    np.testing.assert_allclose(lin.cov[t], np.diag(var) + spread.T @ spread / 5, atol=1e-10)
    assert np.abs(spread).max() > 1e-3  # the policy is not linear over these samples


class ReachCost(torch.nn.Module):
    """Σ_t 10 (q_t − goal)² + q̇_t² (t = 1..T) + 1e-2 Σ u² on a 1-D double integrator."""

    def __init__(self, goal):
        super().__init__()
        self.goal = goal

    def forward(self, X, U):
        return (10 * (X[..., 1:, 0] - self.goal) ** 2 + X[..., 1:, 1] ** 2).sum(-1) + 1e-2 * (
            U**2
        ).sum((-1, -2))


def _samples(act, rng, n, noise=0.01):
    """n rollouts of act(x, t, rng) on q'' = u, from rest at 0."""
    X, U = np.zeros((n, T + 1, 2)), np.zeros((n, T, 1))
    for i in range(n):
        for t in range(T):
            u = act(X[i, t], t, rng)
            X[i, t + 1] = [
                X[i, t, 0] + DT * X[i, t, 1] + 0.5 * DT**2 * u[0],
                X[i, t, 1] + DT * u[0],
            ]
            X[i, t + 1] += noise * rng.normal(size=2)
            U[i, t] = u
    return X, U


def _learner(goal, seed=0):
    ctrl = initial_controller([0.0], [0.0], T, int(DT * 1e9), 2.0, 1.0, 1.0)
    return GPS(
        ReachCost(goal), [ctrl], GPSConfig(prior="none", kl_step=1.0, max_step_mult=10.0, seed=seed)
    )


def test_c_step_against_a_policy_equal_to_the_controller_is_the_plain_kl_update():
    plain, constrained = _learner(0.5), _learner(0.5)
    ctrl = plain.controller(0)
    X, U = _samples(lambda x, t, rng: ctrl.sample(x, t, rng), np.random.default_rng(2), 5)
    K = ctrl.K[0]
    policy = LinearPolicy(
        2, 1, np.concatenate([K, np.zeros((1, 3))], 1), ctrl.u_hat[0] - K @ ctrl.x_hat[0]
    )
    var = np.diagonal(ctrl.cov[0])
    ref = linearize_policy(policy, X, np.zeros(3), var, ctrl)
    a = plain.update(0, X, U)
    b = constrained.update(0, X, U, reference=ref)
    assert a.kl == pytest.approx(b.kl, rel=1e-9) and a.eta == pytest.approx(b.eta, rel=1e-9)
    x = X[:, :T]
    np.testing.assert_allclose(
        constrained.controller(0).act(x, np.arange(T)),
        plain.controller(0).act(x, np.arange(T)),
        atol=1e-9,
    )
    np.testing.assert_allclose(constrained.controller(0).cov, plain.controller(0).cov, atol=1e-12)
    # a policy that differs from the controller constrains the update differently
    other = _learner(0.5)
    shifted = linearize_policy(
        LinearPolicy(2, 1, policy.W.detach(), policy.b.detach() + 1.0), X, np.zeros(3), var, ctrl
    )
    other.update(0, X, U, reference=shifted)
    assert (
        np.abs(
            other.controller(0).act(x, np.arange(T)) - plain.controller(0).act(x, np.arange(T))
        ).max()
        > 1e-2
    )


def test_mdgps_trains_one_policy_for_two_goals_on_a_double_integrator():
    goals = [0.5, -0.5]
    targets = np.array([[g, 0.0, 0.0] for g in goals])
    sig = PolicySignature.for_joints("toy", ["j"], DT)
    policy = GoalPolicy(sig, [20.0], (32, 32), seed=0)
    mdgps = MDGPS(
        [_learner(g, seed=m) for m, g in enumerate(goals)],
        targets,
        policy,
        SStepConfig(train_steps=300, batch=256, lr=3e-3),
    )
    rng = np.random.default_rng(4)

    def policy_costs():
        frozen = policy.frozen()
        out = []
        for g, target in zip(goals, targets):
            X, U = _samples(lambda x, t, r: frozen.act(x[:1], x[1:], target), rng, 1, 0.0)
            out.append(float(ReachCost(g)(torch.as_tensor(X), torch.as_tensor(U))[0]))
        return np.array(out)

    costs = []
    for it in range(6):
        batch = [
            _samples(lambda x, t, r, m=m: mdgps.controller(m).sample(x, t, r), rng, 5)
            for m in range(2)
        ]
        if it == 0:
            policy.set_normalisation(
                np.concatenate([X[:, :-1].reshape(-1, 2) for X, _ in batch]), targets
            )
        mdgps.iterate(batch)
        costs.append(policy_costs())
    # the goals are 0.5 from the start: staying there costs 10·0.25·T = 50 per goal
    # (seed 4: 29.7 and 49.7 after the first iteration, 10.6 and 14.3 after the sixth)
    assert np.all(costs[-1] < 20.0) and costs[-1].sum() < 0.6 * costs[0].sum(), costs


def test_mdgps_insertion_loop_runs_and_its_policy_is_the_network_artifact():
    """Plumbing of the insertion MDGPS loop on a short variant (the learning figures are the
    benchmark's: benchmarks/gps_insertion.py --policy)."""
    from mbrl_ros.experiments.insertion_gps import InsertionConditions, InsertionSetup
    from mbrl_ros.robot.description import load_robot

    arm7 = load_robot("arm7")
    setup = InsertionSetup([(-0.45, 0.0, 0.2), (-0.43, 0.02, 0.2)], start_height=0.07, T=20)
    conditions = InsertionConditions(
        arm7, setup, GPSConfig(prior="none", kl_step=0.3, max_step_mult=10.0)
    )
    sig = PolicySignature.for_joints(
        arm7.name, arm7.joint_names, conditions.sims[0].config.control_period
    )
    policy = GoalPolicy(sig, arm7.limits.effort, (16,))
    out = conditions.run_mdgps(policy, 2, 3, SStepConfig(train_steps=20))
    assert len(out) == 2 and [len(r.records) for r in out] == [2, 2]
    assert out[-1].records[-1].samples_used == 12
    assert np.array(conditions.policy_depths_train).shape == (2, 2)
    assert (
        np.array(conditions.success()).shape == np.array(conditions.mean_success()).shape == (2, 2)
    )
    assert np.all(np.isfinite([r.s_step_loss for r in out])) and np.all(out[-1].policy_std > 0)
    # the trained network round-trips through the policy artifact and acts the same
    again = GoalPolicy.from_bytes(policy.to_bytes())
    np.testing.assert_array_equal(
        conditions.policy_depths(again, [(-0.44, 0.01, 0.2)]),
        conditions.policy_depths(policy, [(-0.44, 0.01, 0.2)]),
    )
