"""Sampling planners (random shooting, CEM, iCEM, MPPI) through an exact 2-link arm model with the
reach cost: they improve on the zero-torque plan, respect the torque box, are reproducible, warm
start from the shifted previous plan, and report NaN instead of raising."""

import numpy as np
import pytest
import torch
from planning_models import LinearModel, NaNModel, TwoLinkArm

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.planning import (
    CEM,
    ICEM,
    MPPI,
    PlanError,
    RandomShooting,
    predict_ahead,
    rollout_costs,
)
from mbrl_ros.planning.noise import coloured_noise
from mbrl_ros.robot.description import load_robot
from mbrl_ros.tasks.reach import ReachCost

H = 15
TARGET = (0.15, 0.15, 0.07)  # reachable by arm2 (links 0.15 m and 0.12 m)


@pytest.fixture(scope="module")
def setup():
    robot = load_robot("arm2")
    model = TwoLinkArm()
    cost = ReachCost(robot, TARGET)
    effort = robot.limits.effort
    return model, cost, -effort, effort


def zero_plan_cost(model, cost, x0, horizon=H):
    with torch.no_grad():
        U = torch.zeros(horizon, 2, dtype=torch.float64)
        return float(cost(model.rollout(torch.as_tensor(x0), U), U))


PLANNERS = {
    "random_shooting": lambda lo, hi, **kw: RandomShooting(H, lo, hi, samples=300, **kw),
    "cem": lambda lo, hi, **kw: CEM(H, lo, hi, population=100, elites=10, iterations=3, **kw),
    "icem": lambda lo, hi, **kw: ICEM(H, lo, hi, population=100, elites=10, iterations=3, **kw),
    "mppi": lambda lo, hi, **kw: MPPI(H, lo, hi, samples=100, iterations=3, temperature=2.0, **kw),
}


@pytest.mark.parametrize("name", PLANNERS)
def test_planner_improves_on_zero_torque_within_limits_and_is_reproducible(setup, name):
    model, cost, lo, hi = setup
    x0 = np.array([0.3, -0.5, 0.0, 0.0])
    planner = PLANNERS[name](lo, hi, dtype=torch.float64, seed=3)
    result = planner.plan(x0, model, cost, start_ns=5_000_000_000)
    assert result.ok and result.status == "ok"
    assert result.cost < zero_plan_cost(model, cost, x0) - 20.0
    assert np.all(result.actions >= lo - 1e-12) and np.all(result.actions <= hi + 1e-12)
    c = result.controller
    assert (c.T, c.dx, c.du, c.dt_ns, c.start_ns) == (H, 4, 2, 20_000_000, 5_000_000_000)
    assert c.joint_names == ("joint1", "joint2") and c.state_layout == "q,qd"
    assert not np.any(c.K) and c.deterministic
    np.testing.assert_allclose(c.u_hat, result.actions)
    # The reported states and cost are the model's mean prediction under the plan.
    with torch.no_grad():
        states = model.rollout(torch.as_tensor(x0), torch.as_tensor(result.actions))
    np.testing.assert_allclose(result.states, states.numpy(), atol=1e-12)
    assert result.cost == pytest.approx(float(cost(states, torch.as_tensor(result.actions))))
    assert result.stats["transitions"] > 0 and result.stats["planner"] == name
    again = PLANNERS[name](lo, hi, dtype=torch.float64, seed=3).plan(
        x0, model, cost, start_ns=5_000_000_000
    )
    np.testing.assert_array_equal(again.actions, result.actions)
    other = PLANNERS[name](lo, hi, dtype=torch.float64, seed=4).plan(
        x0, model, cost, start_ns=5_000_000_000
    )
    assert not np.array_equal(other.actions, result.actions)


@pytest.mark.parametrize("name", PLANNERS)
def test_float32_planning_gives_a_float64_controller(setup, name):
    """float32 plans through the float64 cost too (MPPI's weights once failed on it)."""
    model, cost, lo, hi = setup
    result = PLANNERS[name](lo, hi).plan(np.zeros(4), model, cost)
    assert result.ok and result.controller.u_hat.dtype == np.float64


def test_warm_start_is_the_previous_plan_shifted_and_is_never_worse(setup):
    model, cost, lo, hi = setup
    x0 = np.array([0.3, -0.5, 0.0, 0.0])
    first = ICEM(H, lo, hi, population=100, elites=10, iterations=3, dtype=torch.float64).plan(
        x0, model, cost, start_ns=1_000_000_000
    )
    steps = 3
    start = 1_000_000_000 + steps * first.controller.dt_ns
    planner = ICEM(H, lo, hi, population=20, elites=4, iterations=1, dtype=torch.float64)
    init = planner._initial_actions(first.controller, start, first.controller.dt_ns)
    expected = np.concatenate([first.actions[steps:], np.tile(first.actions[-1], (steps, 1))])
    np.testing.assert_allclose(init, expected)
    # Planning from the state the plan predicted: iCEM returns the best sequence it evaluated,
    # and the shifted plan is one of them.
    x_next = first.states[steps]
    warm = planner.plan(x_next, model, cost, warm=first.controller, start_ns=start)
    with torch.no_grad():
        U = torch.as_tensor(expected)
        shifted_cost = float(cost(model.rollout(torch.as_tensor(x_next), U), U))
    assert warm.cost <= shifted_cost + 1e-9
    # A stale warm start (already over) or one of another step length is ignored.
    zero = np.zeros((H, 2))
    np.testing.assert_array_equal(
        planner._initial_actions(first.controller, start + 10**10, first.controller.dt_ns), zero
    )
    np.testing.assert_array_equal(planner._initial_actions(first.controller, start, 123), zero)


def test_nan_from_the_model_gives_status_nan_not_an_exception():
    lo, hi = -np.ones(2), np.ones(2)
    cost = lambda s, a: (s**2).sum((-1, -2)) + (a**2).sum((-1, -2))  # noqa: E731
    for planner in (
        RandomShooting(5, lo, hi, samples=10),
        CEM(5, lo, hi, population=10, elites=2, iterations=2),
        MPPI(5, lo, hi, samples=10, iterations=2),
    ):
        result = planner.plan(np.ones(4), NaNModel(), cost)
        assert result.status == "nan" and not result.ok
        assert result.controller is None and np.isnan(result.cost)
        assert "non-finite" in result.stats["error"]


def test_partly_nan_samples_are_discarded_and_reported():
    """NaN wherever |u| > 0.5: those sequences lose; the plan stays finite and inside |u| ≤ 0.5."""
    lo, hi = -np.ones(2), np.ones(2)
    cost = lambda s, a: ((s - 1.0) ** 2).sum((-1, -2))  # noqa: E731
    result = CEM(5, lo, hi, population=60, elites=6, iterations=3, dtype=torch.float64).plan(
        np.zeros(4), NaNModel(threshold=0.5), cost
    )
    assert result.ok and result.stats["nonfinite_samples"] > 0
    assert np.abs(result.actions).max() <= 0.5


def test_rollout_costs_average_particles_of_the_model():
    """'sample' propagation with P particles: the cost is the mean over P rollouts (explicit loop
    with the same generator as the reference); 'mean' is deterministic."""
    model = LinearModel.double_integrator(noise=0.1)
    cost = lambda s, a: (s**2).sum((-1, -2))  # noqa: E731
    x0 = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    U = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = rollout_costs(model, cost, x0, U, "sample", 8, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    states = model.rollout(x0.expand(8, 3, 4), U.expand(8, 3, 4, 2), "sample", gen)
    np.testing.assert_allclose(got.numpy(), cost(states, None).mean(0).numpy())
    mean = rollout_costs(model, cost, x0, U)
    for i in range(3):
        assert float(mean[i]) == pytest.approx(float(cost(model.rollout(x0, U[i]), None)))


def test_icem_population_schedule():
    planner = ICEM(10, -np.ones(2), np.ones(2), population=400, elites=40, iterations=5)
    assert [planner.population_size(i) for i in range(5)] == [400, 320, 256, 205, 164]
    assert ICEM(10, -np.ones(2), np.ones(2), population=100, elites=40).population_size(4) == 80
    assert CEM(10, -np.ones(2), np.ones(2)).population_size(3) == 400


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("T", [16, 17])
def test_coloured_noise_is_standard_normal_and_correlated_as_its_exponent(beta, T):
    x = coloured_noise(beta, (4000, T, 3), torch.Generator().manual_seed(0), torch.float64)
    assert x.shape == (4000, T, 3)
    var = x.var(dim=0)  # per time step and dimension, over 4000 draws
    assert float(var.mean()) == pytest.approx(1.0, abs=0.03)
    assert float((var - 1).abs().max()) < 0.15
    lag1 = float((x[:, 1:] * x[:, :-1]).mean())
    if beta == 0.0:
        assert abs(lag1) < 0.03
    else:
        assert lag1 > (0.4 if beta == 1.0 else 0.75)
    again = coloured_noise(beta, (4000, T, 3), torch.Generator().manual_seed(0), torch.float64)
    assert torch.equal(x, again)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CEM(0, -np.ones(2), np.ones(2)), "horizon"),
        (lambda: CEM(5, np.ones(2), -np.ones(2)), "low < high"),
        (lambda: CEM(5, -np.ones(2), np.ones(3)), "equal size"),
        (lambda: CEM(5, -np.ones(2), np.ones(2), elites=50, population=10), "elites"),
        (lambda: CEM(5, -np.ones(2), np.ones(2), momentum=1.0), "momentum"),
        (lambda: CEM(5, -np.ones(2), np.ones(2), mode="bogus"), "mode must be"),
        (lambda: CEM(5, -np.ones(2), np.ones(2), particles=4), "particles must be 1"),
        (lambda: MPPI(5, -np.ones(2), np.ones(2), temperature=0.0), "temperature"),
        (lambda: RandomShooting(5, -np.ones(2), np.ones(2), samples=1.5), "samples"),
    ],
)
def test_bad_settings_are_named(make, message):
    with pytest.raises(PlanError, match=message):
        make()


def test_bad_calls_are_named(setup):
    model, cost, lo, hi = setup
    planner = CEM(5, lo, hi, population=10, elites=2, iterations=1)
    with pytest.raises(PlanError, match="x0 must be 4 finite"):
        planner.plan(np.zeros(3), model, cost)
    with pytest.raises(PlanError, match="x0 must be 4 finite"):
        planner.plan(np.array([0, np.nan, 0, 0]), model, cost)
    with pytest.raises(PlanError, match="start_ns"):
        planner.plan(np.zeros(4), model, cost, start_ns=-1)
    with pytest.raises(PlanError, match="warm must be"):
        planner.plan(np.zeros(4), model, cost, warm=np.zeros((5, 2)))
    with pytest.raises(PlanError, match="limits are for 3 joints"):
        CEM(5, -np.ones(3), np.ones(3)).plan(np.zeros(4), model, cost)


def test_the_controller_executes_the_plan(setup):
    """The open-loop controller's act() returns the planned torques at their stamps."""
    model, cost, lo, hi = setup
    result = MPPI(H, lo, hi, samples=50, iterations=2, dtype=torch.float64).plan(
        np.zeros(4), model, cost, start_ns=7
    )
    c: LinearGaussianController = result.controller
    for t in (0, 5, H - 1):
        np.testing.assert_allclose(
            c.act(np.ones(4) * 3, c.index(7 + t * c.dt_ns)), result.actions[t]
        )


def test_predict_ahead_runs_the_controller_on_the_model_then_zero_torque():
    model = LinearModel.double_integrator(n=2, dt=0.05)
    dt_ns = 50_000_000
    rng = np.random.default_rng(0)
    U = rng.uniform(-1, 1, (3, 2))
    c = LinearGaussianController.open_loop(
        U, 4, dt_ns=dt_ns, start_ns=dt_ns, joint_names=("joint1", "joint2")
    )
    x = np.array([0.1, -0.2, 0.3, 0.0])
    got = predict_ahead(model, x, dt_ns, 6 * dt_ns, c, -0.5 * np.ones(2), 0.5 * np.ones(2))
    A, B = model.A.numpy(), model.B.numpy()
    ref = x
    for u in list(np.clip(U, -0.5, 0.5)) + [np.zeros(2), np.zeros(2)]:
        ref = A @ ref + B @ u
    np.testing.assert_allclose(got, ref, atol=1e-12)
    np.testing.assert_array_equal(predict_ahead(model, x, dt_ns, dt_ns, c), x)
    # No controller: zero torque.
    np.testing.assert_allclose(predict_ahead(model, x, 0, dt_ns, None), A @ x, atol=1e-12)
