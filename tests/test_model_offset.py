"""Offset-free MPC (``dynamics.offset``): a model shifted by an offset, the residual estimate over
the newest episode's window, its message, and MPC on the simulated arm under a torque bias that
the model does not know: the estimate takes the steady-state error away."""

import numpy as np
import pytest
import torch
from planning_models import LinearModel, TwoLinkArm
from std_msgs.msg import String

from mbrl_ros.common.msgconv import MessageError
from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.dynamics.base import ModelError
from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel
from mbrl_ros.dynamics.offset import ModelOffset, OffsetEstimator
from mbrl_ros.planning import ILQR
from mbrl_ros.planning.mpc import MPC
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.reach import ReachCost

DT = 0.02
DT_NS = 20_000_000
NAMES = ("joint1", "joint2")


def transitions(states, actions, next_states, episode=0, first_stamp=0):
    n = len(states)
    return Dataset(
        states,
        actions,
        next_states,
        np.full(n, episode),
        first_stamp + DT_NS * np.arange(n),
        NAMES,
        DT,
        joint_state_names(NAMES),
    )


@pytest.fixture(scope="module")
def ensemble():
    rng = np.random.default_rng(0)
    model = LinearModel.double_integrator(2, DT)
    s, a = rng.normal(size=(300, 4)), rng.normal(size=(300, 2))
    with torch.no_grad():
        nxt = model.predict(torch.as_tensor(s), torch.as_tensor(a))[0].numpy()
    ens = EnsembleModel(
        model.signature, device="cpu", config=EnsembleConfig(members=2, hidden=16, max_epochs=3)
    )
    ens.fit(transitions(s, a, nxt))
    return ens


def test_an_offset_shifts_every_mean_prediction_and_leaves_the_jacobians(ensemble):
    d = np.array([0.01, -0.02, 0.3, -0.4])
    shifted = ensemble.with_offset(d)
    s, a = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    dt = torch.as_tensor(d)
    for mode in ("mean", "tsinf", "ts1", "sample"):
        torch.manual_seed(3)
        base = ensemble.propagate(s, a, mode, torch.Generator().manual_seed(1))
        torch.manual_seed(3)
        moved = shifted.propagate(s, a, mode, torch.Generator().manual_seed(1))
        torch.testing.assert_close(moved, base + dt, msg=mode)
    (m0, v0), (m1, v1) = ensemble.predict(s, a), shifted.predict(s, a)
    torch.testing.assert_close(m1, m0 + dt)
    torch.testing.assert_close(v1, v0)
    for J0, J1 in zip(ensemble.mean_jacobians(s, a), shifted.mean_jacobians(s, a)):
        torch.testing.assert_close(J1, J0)
    actions = torch.randn(4, 6, 2, dtype=torch.float64)  # the batched rollout: + d every step
    states = [s[:4]]
    for t in range(6):
        states.append(ensemble.propagate(states[-1], actions[:, t]) + dt)
    torch.testing.assert_close(shifted.rollout(s[:4], actions), torch.stack(states, 1))
    np.testing.assert_allclose(shifted.stats.delta_mean - d, ensemble.stats.delta_mean, atol=1e-15)


def test_an_offset_that_does_not_fit_the_model_is_refused(ensemble):
    with pytest.raises(ModelError, match="4 finite values"):
        ensemble.with_offset(np.zeros(3))
    with pytest.raises(ModelError, match="4 finite values"):
        ensemble.with_offset(np.array([0.0, np.nan, 0.0, 0.0]))


def test_the_estimate_is_the_mean_residual_of_the_newest_episode_within_the_window():
    """A double integrator with a constant bias c in every step: the exact model's residual
    estimate is c; rows of older episodes and outside the window do not count."""
    model = LinearModel.double_integrator(2, DT)
    c = np.array([0.001, -0.002, 0.05, -0.1])
    rng = np.random.default_rng(1)

    def episode(n, bias, episode_id, first_stamp):
        s, a = rng.normal(size=(n, 4)), rng.normal(size=(n, 2))
        nxt = s @ model.A.numpy().T + a @ model.B.numpy().T + bias
        return transitions(s, a, nxt, episode_id, first_stamp)

    est = OffsetEstimator(window_ns=5 * DT_NS)
    est.add(episode(20, -c, 0, 0))
    est.add(episode(2, c, 1, 10**9))
    assert est.estimate(model, 7) is None  # 2 < min_transitions
    est.add(episode(4, c, 1, 10**9 + 2 * DT_NS))
    got = est.estimate(model, 7)
    assert got is not None and got.model_version == 7 and got.transitions == 5  # window: 5
    assert got.stamp_ns == 10**9 + 6 * DT_NS  # the newest next state
    np.testing.assert_allclose(got.offset, c, atol=1e-12)


def test_residuals_that_vary_along_the_window_are_shrunk_towards_zero():
    """Per coordinate d_j = r̄_j · max(0, 1 − se_j² / r̄_j²), se_j = std_j / √n (module
    docstring): steady residuals pass unchanged, a mean within its standard error gives 0."""
    model = LinearModel.double_integrator(2, DT)
    s, a = np.zeros((4, 4)), np.zeros((4, 2))
    r = np.array(
        [
            [0.01, 0.3, 0.5, 0.0],
            [0.01, -0.3, 0.7, 0.0],
            [0.01, 0.2, 0.3, 0.0],
            [0.01, -0.1, 0.5, 0.0],
        ]
    )
    est = OffsetEstimator(window_ns=10 * DT_NS)
    est.add(transitions(s, a, r))
    got = est.estimate(model, 0).offset
    mean, se2 = r.mean(0), r.var(0, ddof=1) / 4
    assert got[0] == pytest.approx(0.01) and got[3] == 0.0  # steady; no residual
    assert got[1] == 0.0 and se2[1] > mean[1] ** 2  # a mean inside its standard error
    assert got[2] == pytest.approx(mean[2] * (1 - se2[2] / mean[2] ** 2))  # 0.5 · (1 − 0.027)


def test_model_offset_messages_round_trip_and_bad_ones_are_named():
    o = ModelOffset(3, 10**9, 5, np.array([0.1, -0.2]))
    back = ModelOffset.from_msg(String(data=o.to_json()))
    assert (back.model_version, back.stamp_ns, back.transitions) == (3, 10**9, 5)
    np.testing.assert_array_equal(back.offset, o.offset)
    for text, match in [
        ("nope", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"model_version": -1, "stamp_ns": 0, "transitions": 1, "offset": [0]}', "model_version"),
        ('{"model_version": 1, "stamp_ns": 0, "transitions": 1, "offset": [NaN]}', "offset"),
        ('{"model_version": 1, "stamp_ns": 0, "transitions": 1, "offset": "x"}', "offset"),
        ('{"model_version": 1, "stamp_ns": 0, "transitions": 1}', "offset"),
    ]:
        with pytest.raises(MessageError, match=match):
            ModelOffset.from_msg(String(data=text))


def reach_under_bias(with_offset: bool, bias: np.ndarray) -> list[float]:
    """iLQR MPC of the MuJoCo arm2 through the analytic ``TwoLinkArm`` (no armature, as arm2)
    while the arm receives a constant extra torque ``bias`` (N·m) the model does not know; with
    ``with_offset`` the plans use the estimate over the last 0.2 s of transitions. End-effector
    distances to the target (m), one per 0.02 s step over 1.6 s."""
    robot = load_robot("arm2")
    effort = robot.limits.effort
    model = TwoLinkArm(dt=DT)
    model.armature = 0.0
    mpc = MPC(
        robot,
        robot.joint_names,
        ILQR(15, -effort, effort, seed=0, iterations=5),
        ReachCost(robot, w_action=1e-3),
        dt=DT,
        replan_every=1,
        random_steps=0,
        base_policy=RandomTorquePolicy(effort, 0.3, 2, seed=1),
    )
    mpc.set_model(model)
    sim = ArmSimulator(robot, SimConfig(control_period=DT))
    fk = ForwardKinematics(robot)
    target = fk.ee_position(torch.tensor([0.9, 1.2], dtype=torch.float64)).numpy()
    estimator = OffsetEstimator(window_ns=10 * DT_NS)
    distances = []
    for k in range(80):
        s = sim.measure()
        x = np.concatenate([s.position, s.velocity])
        estimate = estimator.estimate(model, 0) if with_offset else None
        step = mpc.act(
            s.position, s.velocity, k * DT_NS, target, offset=estimate and estimate.offset
        )
        u = np.clip(step.controller.act(x, 0), -effort, effort)
        sim.step(u + bias)
        m = sim.measure()
        estimator.add(
            transitions(
                x[None], u[None], np.concatenate([m.position, m.velocity])[None], 0, k * DT_NS
            )
        )
        distances.append(
            float(np.linalg.norm(fk.ee_position(torch.as_tensor(m.position)).numpy() - target))
        )
    return distances


def test_offset_free_mpc_removes_the_steady_state_error_of_a_biased_model():
    """Under a bias of a third of the effort limits the arm settles 6 mm from the target
    (measured 6.3 mm); with the estimate it settles on it (measured 0.02 mm)."""
    bias = np.array([0.5, -0.4])  # N·m on arm2's joints (limits 1.5 and 1), not in the model
    without = np.mean(reach_under_bias(False, bias)[-20:])
    with_it = np.mean(reach_under_bias(True, bias)[-20:])
    assert without > 0.004 and with_it < 0.001, (without, with_it)
