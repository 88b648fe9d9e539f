"""Task costs against explicit formulas: GPS reach (l2 + log, terminal weight, velocity), the
action and joint-limit penalties, Nagabandi-style path following; batching, gradients, bad input."""

import numpy as np
import pytest
import torch

from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.tasks.checks import TaskError
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.tasks.tracking import TrackingCost


@pytest.fixture(scope="module")
def arm7():
    return load_robot("arm7")


def random_trajectory(robot, rng, T=5, batch=()):
    n = robot.n_joints
    mid = 0.5 * (robot.limits.lower + robot.limits.upper)
    half = 0.5 * (robot.limits.upper - robot.limits.lower)
    q = mid + half * rng.uniform(-0.95, 0.95, (*batch, T + 1, n))
    qd = rng.normal(0, 1, (*batch, T + 1, n))
    u = robot.limits.effort * rng.uniform(-1, 1, (*batch, T, n))
    return torch.as_tensor(np.concatenate([q, qd], -1)), torch.as_tensor(u)


def test_reach_cost_is_the_gps_formula(arm7):
    rng = np.random.default_rng(0)
    target = np.array([0.4, 0.1, 0.5])
    w = dict(
        w_l2=2.0,
        w_log=0.5,
        alpha=1e-3,
        terminal_weight=7.0,
        w_velocity=0.3,
        w_speed=0.2,
        w_action=0.01,
        w_limit=3.0,
        limit_margin=0.2,
        velocity_margin=1.5,
    )
    cost = ReachCost(arm7, target, **w)
    states, actions = random_trajectory(arm7, rng)
    fk = ForwardKinematics(arm7)
    n, lo, hi = 7, arm7.limits.lower + 0.2, arm7.limits.upper - 0.2
    expected = 0.0
    for t in range(1, 6):
        d2 = float(((fk.ee_position(states[t, :n]) - torch.as_tensor(target)) ** 2).sum())
        ell = 0.5 * w["w_l2"] * d2 + w["w_log"] * np.log(d2 + w["alpha"])
        expected += ell * (w["terminal_weight"] if t == 5 else 1.0)
        q = states[t, :n].numpy()
        expected += w["w_limit"] * np.sum(
            (np.maximum(0, q - hi) + np.maximum(0, lo - q)) ** 2 / 0.2**2
        )
        fast = np.maximum(0, np.abs(states[t, n:].numpy()) - (arm7.limits.velocity - 1.5))
        expected += w["w_limit"] * np.sum(fast**2 / 1.5**2)
        expected += w["w_speed"] * float((states[t, n:] ** 2).sum())
    expected += w["w_velocity"] * float((states[5, n:] ** 2).sum())
    expected += w["w_action"] * float(((actions / torch.tensor(arm7.limits.effort)) ** 2).sum())
    assert float(cost(states, actions)) == pytest.approx(expected, rel=1e-12)


def test_reach_cost_is_lowest_at_the_target_and_retargets(arm7):
    cost = ReachCost(arm7, (0.3, 0.0, 0.6), w_action=0.0, w_limit=0.0)
    q = torch.tensor([0.1, 0.2, 0.0, -1.5, 0.0, 1.2, 0.3], dtype=torch.float64)
    ee = ForwardKinematics(arm7).ee_position(q)
    states = torch.cat([q, torch.zeros(7, dtype=torch.float64)]).expand(4, 14)
    actions = torch.zeros(3, 7, dtype=torch.float64)
    far = float(cost(states, actions))
    cost.set_target(ee.numpy())
    at = float(cost(states, actions))
    assert at == pytest.approx((2 + 10.0) * np.log(1e-4), rel=1e-6)  # d = 0 at every step
    assert at < far
    with pytest.raises(TaskError, match="target"):
        cost.set_target([0.0, np.nan, 1.0])


def test_costs_are_batched_and_differentiable(arm7):
    rng = np.random.default_rng(1)
    costs = [
        ReachCost(arm7, (0.4, 0.0, 0.4), w_velocity=0.1, limit_margin=0.5),
        TrackingCost(arm7, [(0.5, -0.2, 0.4), (0.5, 0.2, 0.4), (0.3, 0.3, 0.6)], limit_margin=0.5),
    ]
    states, actions = random_trajectory(arm7, rng, T=4, batch=(3, 2))
    for cost in costs:
        batched = cost(states, actions)
        assert batched.shape == (3, 2)
        for i in range(3):
            for j in range(2):
                assert float(batched[i, j]) == pytest.approx(
                    float(cost(states[i, j], actions[i, j]))
                )
        s, a = states[0, 0].clone().requires_grad_(), actions[0, 0].clone().requires_grad_()
        assert torch.autograd.gradcheck(cost, (s, a))
        # float32 modules give float32 costs
        assert cost.to(torch.float32)(states.float(), actions.float()).dtype == torch.float32
        cost.to(torch.float64)


def test_joint_limit_penalty_is_zero_inside_the_margin_and_grows_outside(arm7):
    cost = ReachCost(arm7, w_l2=0.0, w_log=0.0, w_action=0.0, w_limit=1.0, limit_margin=0.1)
    lower, upper = arm7.limits.lower, arm7.limits.upper
    q_inside = 0.5 * (lower + upper)
    q_edge = q_inside.copy()
    q_edge[3] = upper[3] - 0.05  # half-way into the margin of joint 4
    q_edge[0] = lower[0] + 0.0  # at the lower limit of joint 1

    def value(q, qd=np.zeros(7)):
        s = torch.as_tensor(np.concatenate([q, qd])).expand(2, 14)
        return float(cost(s, torch.zeros(1, 7, dtype=torch.float64)))

    assert value(q_inside) == 0.0
    assert value(q_edge) == pytest.approx(0.5**2 + 1.0**2)
    # velocities: zero up to (limit − 0.5 rad/s), then the squared fraction of the margin
    vmax = arm7.limits.velocity
    qd = np.zeros(7)
    qd[2] = -(vmax[2] - 0.5)
    assert value(q_inside, qd) == 0.0
    qd[2], qd[5] = -(vmax[2] - 0.25), vmax[5] + 0.5
    assert value(q_inside, qd) == pytest.approx(0.5**2 + 2.0**2)


def test_tracking_projects_onto_the_path_and_rewards_progress():
    robot = load_robot("arm2")
    path = [(0.0, 0.0, 0.07), (0.2, 0.0, 0.07), (0.2, 0.1, 0.07)]  # L-shaped, 0.3 m long
    cost = TrackingCost(robot, path, w_distance=2.0, w_progress=3.0, w_action=0.0, w_limit=0.0)
    pts = torch.tensor(
        [
            [0.1, 0.05, 0.07],  # above the first segment
            [0.25, 0.05, 0.07],  # beside the second segment
            [-0.1, 0.0, 0.07],  # before the start
            [0.2, 0.0, 0.07],
        ],
        dtype=torch.float64,
    )  # the corner
    dist, arc = cost.project(pts)
    np.testing.assert_allclose(
        dist.numpy(), np.sqrt(np.array([0.05, 0.05, 0.1, 0.0]) ** 2 + 1e-6), atol=1e-12
    )
    np.testing.assert_allclose(arc.numpy(), [0.1, 0.25, 0.0, 0.2], atol=1e-12)
    # Along a trajectory: distance at steps 1..T, minus the progress between steps 0 and T.
    fk = ForwardKinematics(robot)
    q = torch.tensor([[0.0, 0.0], [0.5, 0.3], [1.0, 0.6]], dtype=torch.float64)
    states = torch.cat([q, torch.zeros(3, 2, dtype=torch.float64)], -1)
    d, s = cost.project(fk.ee_position(q))
    expected = 2.0 * float(d[1:].sum()) - 3.0 * float(s[-1] - s[0])
    assert float(cost(states, torch.zeros(2, 2, dtype=torch.float64))) == pytest.approx(expected)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda r: ReachCost(r, (0, 0)), "target must be 3"),
        (lambda r: ReachCost(r, w_l2=-1.0), "w_l2"),
        (lambda r: ReachCost(r, alpha=0.0), "alpha must be > 0"),
        (lambda r: ReachCost(r, limit_margin=0.0), "limit_margin"),
        (lambda r: ReachCost(r, velocity_margin=0.0), "velocity_margin"),
        (lambda r: ReachCost(r, w_action=float("nan")), "w_action"),
        (lambda r: TrackingCost(r, [(0, 0, 0)]), "waypoints must be"),
        (lambda r: TrackingCost(r, [(0, 0, 0), (0, 0, 0)]), "zero length"),
        (lambda r: TrackingCost(r, [(0, 0, 0), (1, 0, 0)], w_progress=-2), "w_progress"),
    ],
)
def test_bad_settings_are_named(arm7, make, message):
    with pytest.raises(TaskError, match=message):
        make(arm7)


def test_wrong_shapes_are_named(arm7):
    cost = ReachCost(arm7)
    with pytest.raises(TaskError, match="states"):
        cost(torch.zeros(4, 14, dtype=torch.float64), torch.zeros(4, 7, dtype=torch.float64))
    with pytest.raises(TaskError, match="actions"):
        cost(torch.zeros(4, 14, dtype=torch.float64), torch.zeros(3, 6, dtype=torch.float64))
