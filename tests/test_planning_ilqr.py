"""iLQR through DynamicsModels: the linear-quadratic case against scipy's Riccati solution (one
iteration is optimal, K_t is the LQR gain), model Jacobians and cost Hessians against finite
differences and full autograd Hessians, the nonlinear 2-link arm, limits and NaN handling."""

import numpy as np
import pytest
import torch
from planning_models import LinearModel, NaNModel, TwoLinkArm
from scipy.linalg import solve_discrete_are

from mbrl_ros.planning import ILQR, PlanError
from mbrl_ros.planning.ilqr import cost_derivatives
from mbrl_ros.robot.description import load_robot
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.tasks.tracking import TrackingCost


class Quadratic(torch.nn.Module):
    """Σ_t ½ x_tᵀQx_t + ½ u_tᵀRu_t for t < T, plus ½ x_Tᵀ P x_T."""

    def __init__(self, Q, R, P):
        super().__init__()
        self.Q, self.R, self.P = (torch.as_tensor(a, dtype=torch.float64) for a in (Q, R, P))

    def forward(self, s, a):
        quad = lambda x, M: 0.5 * torch.einsum("...i,ij,...j->...", x, M, x)  # noqa: E731
        return (
            quad(s[..., :-1, :], self.Q).sum(-1)
            + quad(a, self.R).sum(-1)
            + quad(s[..., -1, :], self.P)
        )


def test_linear_quadratic_problem_is_solved_in_one_iteration_with_the_riccati_gain():
    model = LinearModel.double_integrator(n=2, dt=0.05)
    A, B = model.A.numpy(), model.B.numpy()
    Q, R = np.diag([1.0, 2.0, 0.1, 0.1]), np.diag([0.01, 0.02])
    P = solve_discrete_are(A, B, Q, R)
    K_lqr = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    x0 = np.array([1.0, -0.5, 0.2, 0.3])
    big = 1e6 * np.ones(2)
    result = ILQR(25, -big, big, iterations=1, mu_init=0.0, dtype=torch.float64).plan(
        x0, model, Quadratic(Q, R, P)
    )
    assert result.ok and result.stats["accepted"] == 1
    # The terminal cost is the Riccati solution, so the optimum is the stationary LQR law.
    assert result.cost == pytest.approx(0.5 * x0 @ P @ x0, rel=1e-9)
    c = result.controller
    np.testing.assert_allclose(c.K, np.broadcast_to(-K_lqr, (25, 2, 4)), atol=1e-8)
    np.testing.assert_allclose(c.k, 0.0)
    np.testing.assert_allclose(c.x_hat, result.states[:-1])
    x = x0
    for t in range(25):
        np.testing.assert_allclose(result.actions[t], -K_lqr @ x, atol=1e-8)
        x = A @ x + B @ result.actions[t]


def test_feedback_gains_match_finite_differences_of_the_replanned_action():
    """K_0 is the derivative of the optimal first action with respect to x0: replan from
    perturbed states (a linear system, so central differences are exact to rounding)."""
    model = LinearModel.double_integrator(n=2, dt=0.05)
    Q, R = np.diag([1.0, 1.0, 0.1, 0.1]), np.diag([0.05, 0.05])
    cost = Quadratic(Q, R, 3 * Q)
    big = 1e6 * np.ones(2)
    planner = ILQR(10, -big, big, iterations=1, mu_init=0.0, dtype=torch.float64)
    x0 = np.array([0.5, 0.2, -0.1, 0.0])
    K0 = planner.plan(x0, model, cost).controller.K[0]
    eps = 1e-3
    fd = np.stack(
        [
            (
                planner.plan(x0 + eps * e, model, cost).actions[0]
                - planner.plan(x0 - eps * e, model, cost).actions[0]
            )
            / (2 * eps)
            for e in np.eye(4)
        ],
        axis=1,
    )
    np.testing.assert_allclose(K0, fd, atol=1e-7)


def test_model_jacobians_match_finite_differences():
    model = TwoLinkArm()
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(0, 0.5, (4, 4)))
    U = torch.as_tensor(rng.normal(0, 0.5, (4, 2)))
    A, B = model.mean_jacobians(X, U)
    eps = 1e-6
    for t in range(4):
        f = lambda z: model.predict(z[:4], z[4:])[0]  # noqa: E731
        z = torch.cat([X[t], U[t]])
        fd = torch.stack(
            [
                (f(z + eps * e) - f(z - eps * e)) / (2 * eps)
                for e in torch.eye(6, dtype=torch.float64)
            ],
            -1,
        )
        np.testing.assert_allclose(torch.cat([A[t], B[t]], -1).numpy(), fd.numpy(), atol=1e-6)


class GenericCost(torch.nn.Module):
    """A cost the planners know nothing about (``cost_derivatives``' generic path)."""

    def __init__(self, cost):
        super().__init__()
        self.cost = cost

    def forward(self, states, actions):
        return self.cost(states, actions)


@pytest.mark.parametrize(
    "make_cost",
    [
        lambda r: ReachCost(r, (0.1, 0.1, 0.07), w_velocity=0.3, w_limit=5.0, limit_margin=1.0),
        lambda r: ReachCost(r, (0.1, 0.1, 0.07), w_speed=0.2, w_velocity=0.5, w_limit=0.0),
        lambda r: TrackingCost(r, [(0.27, 0.0, 0.07), (0.1, 0.2, 0.07), (0.0, 0.25, 0.07)]),
        lambda r: GenericCost(ReachCost(r, (0.1, 0.1, 0.07), w_speed=0.2, limit_margin=1.0)),
    ],
)
def test_cost_derivatives_are_the_blocks_of_the_full_hessian(make_cost):
    """The arm tasks' split derivatives (``arm_cost_derivatives``: separable terms by their
    diagonal, position terms on q only) and the generic ones (any cost) against autograd's full
    Hessian and Jacobian."""
    cost = make_cost(load_robot("arm2"))
    rng = np.random.default_rng(1)
    T = 4
    X = torch.as_tensor(rng.normal(0, 1.0, (T + 1, 4)))
    U = torch.as_tensor(rng.normal(0, 0.5, (T, 2)))
    value, g, H = cost_derivatives(cost, X, U)
    flat = lambda x, u: cost(x, u)  # noqa: E731
    full = torch.autograd.functional.hessian(flat, (X, U))
    gx, gu = torch.autograd.functional.jacobian(flat, (X, U))
    assert float(value) == pytest.approx(float(cost(X, U)))
    np.testing.assert_allclose(g[:, :4].numpy(), gx.numpy(), atol=1e-10)
    np.testing.assert_allclose(g[:T, 4:].numpy(), gu.numpy(), atol=1e-10)
    np.testing.assert_allclose(g[T, 4:].numpy(), 0.0)
    for t in range(T + 1):
        np.testing.assert_allclose(H[t, :4, :4].numpy(), full[0][0][t, :, t, :].numpy(), atol=1e-9)
        if t < T:
            np.testing.assert_allclose(
                H[t, 4:, 4:].numpy(), full[1][1][t, :, t, :].numpy(), atol=1e-9
            )
            np.testing.assert_allclose(
                H[t, :4, 4:].numpy(), full[0][1][t, :, t, :].numpy(), atol=1e-9
            )
    # The cost is additive over steps: no coupling between different steps.
    off = full[0][0].clone()
    for t in range(T + 1):
        off[t, :, t, :] = 0
    assert float(off.abs().max()) < 1e-12


@pytest.mark.parametrize("robot_name", ["arm2", "arm6", "arm7"])
def test_closed_form_reach_derivatives_match_autograd(robot_name):
    """``ForwardKinematics.ee_derivatives`` against autograd's Jacobian and Hessian of the end
    effector, and the reach cost's closed-form position derivatives against ``ArmTerms``'
    autograd ones, at random poses (arm6 and arm7: fixed joints in the chain)."""
    from mbrl_ros.robot.kinematics import ForwardKinematics
    from mbrl_ros.tasks.terms import ArmTerms

    robot = load_robot(robot_name)
    n = robot.n_joints
    rng = np.random.default_rng(4)
    q = torch.as_tensor(rng.uniform(-1.5, 1.5, (5, n)))
    fk = ForwardKinematics(robot)
    p, J, second = fk.ee_derivatives(q)
    for b in range(5):
        f = lambda x: fk.ee_position(x)  # noqa: E731
        np.testing.assert_allclose(p[b].numpy(), f(q[b]).numpy(), atol=1e-12)
        np.testing.assert_allclose(
            J[b].numpy(), torch.autograd.functional.jacobian(f, q[b]), atol=1e-12
        )
        for k in range(3):
            hk = torch.autograd.functional.hessian(lambda x: f(x)[k], q[b])
            np.testing.assert_allclose(second[b, k].numpy(), hk.numpy(), atol=1e-12)
    cost = ReachCost(robot, (0.3, -0.1, 0.4), w_l2=100.0, terminal_weight=7.0, alpha=1e-3)
    got = cost.position_derivatives(q)
    want = ArmTerms.position_derivatives(cost, q)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def arm():
    robot = load_robot("arm2")
    return robot, TwoLinkArm(), ReachCost(robot, (0.15, 0.15, 0.07))


def test_reaches_with_the_nonlinear_arm_within_limits(arm):
    robot, model, cost = arm
    x0 = np.array([0.3, -0.5, 0.0, 0.0])
    eff = robot.limits.effort
    planner = ILQR(20, -0.5 * eff, 0.5 * eff, iterations=15, dtype=torch.float64)
    result = planner.plan(x0, model, cost, start_ns=1_000_000)
    assert result.ok and result.stats["accepted"] >= 3
    with torch.no_grad():
        U0 = torch.zeros(20, 2, dtype=torch.float64)
        zero_cost = float(cost(model.rollout(torch.as_tensor(x0), U0), U0))
    assert result.cost < zero_cost - 50
    final = np.sqrt(float(cost.distance2(torch.as_tensor(result.states))[-1]))
    assert final < 0.01  # m
    assert np.all(np.abs(result.actions) <= 0.5 * eff + 1e-12)
    assert np.any(np.abs(result.actions) >= 0.5 * eff - 1e-9)  # the clamp was active
    c = result.controller
    assert np.any(c.K) and c.deterministic and c.start_ns == 1_000_000
    again = planner.plan(x0, model, cost, start_ns=1_000_000)
    np.testing.assert_array_equal(again.actions, result.actions)


def test_feedback_corrects_a_disturbance_better_than_the_open_loop_plan(arm):
    """Execute the plan on the true (here: the same) dynamics from a disturbed start: the
    controller with K_t ends closer to the target than the open-loop torques."""
    robot, model, cost = arm
    x0 = np.array([0.3, -0.5, 0.0, 0.0])
    eff = robot.limits.effort
    result = ILQR(20, -eff, eff, iterations=15, dtype=torch.float64).plan(x0, model, cost)
    c = result.controller
    x_fb = x_ol = x0 + np.array([0.05, -0.05, 0.3, 0.0])
    for t in range(20):
        u_fb = np.clip(c.act(x_fb, t), -eff, eff)
        x_fb = model.predict(torch.as_tensor(x_fb), torch.as_tensor(u_fb))[0].numpy()
        x_ol = model.predict(torch.as_tensor(x_ol), torch.as_tensor(result.actions[t]))[0].numpy()
    d = lambda x: float(cost.distance2(torch.as_tensor(x)[None])[0]) ** 0.5  # noqa: E731
    assert d(x_fb) < 0.5 * d(x_ol)


def test_warm_start_from_the_previous_plan_converges_faster(arm):
    robot, model, cost = arm
    x0 = np.array([0.3, -0.5, 0.0, 0.0])
    eff = robot.limits.effort
    planner = ILQR(20, -eff, eff, iterations=20, dtype=torch.float64)
    first = planner.plan(x0, model, cost, start_ns=0)
    dt = first.controller.dt_ns
    cold = planner.plan(first.states[2], model, cost, start_ns=2 * dt)
    warm = planner.plan(first.states[2], model, cost, warm=first.controller, start_ns=2 * dt)
    assert warm.stats["iterations"] < cold.stats["iterations"]
    # It starts from the shifted plan and never ends worse; the two may settle in different
    # local optima of the (non-convex) reach cost.
    shifted = planner._initial_actions(first.controller, 2 * dt, dt)
    with torch.no_grad():
        U = torch.as_tensor(shifted)
        shifted_cost = float(cost(model.rollout(torch.as_tensor(first.states[2]), U), U))
    assert warm.cost <= shifted_cost
    assert warm.cost < cold.cost + 0.05 * abs(cold.cost)


def test_nan_from_the_model_gives_status_nan_not_an_exception():
    cost = lambda s, a: (s**2).sum((-1, -2)) + (a**2).sum((-1, -2))  # noqa: E731
    result = ILQR(5, -np.ones(2), np.ones(2)).plan(np.ones(4), NaNModel(), cost)
    assert result.status == "nan" and result.controller is None
    assert "not finite" in result.stats["error"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ILQR(5, -np.ones(2), np.ones(2), mu_factor=1.0), "mu_factor"),
        (lambda: ILQR(5, -np.ones(2), np.ones(2), alphas=(2.0,)), "alphas"),
        (lambda: ILQR(5, -np.ones(2), np.ones(2), iterations=0), "iterations"),
    ],
)
def test_bad_settings_are_named(make, message):
    with pytest.raises(PlanError, match=message):
        make()
