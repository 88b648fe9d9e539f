"""The MPC step logic (pure core): π0 before a model, planning through a model on the simulated
arm, NaN fallback, refusal of incompatible models."""

import numpy as np
import pytest
import torch
from planning_models import LinearModel, NaNModel, TwoLinkArm

from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.dynamics.base import ModelError, ModelSignature
from mbrl_ros.planning import ICEM, ILQR
from mbrl_ros.planning.mpc import MPC
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.reach import ReachCost

DT = 0.02


class Arm2Model(TwoLinkArm):
    """The approximate analytic model of the simulated arm2: ``TwoLinkArm`` without armature.
    arm2's URDF has no transmission, so the MuJoCo arm has no armature; ``TwoLinkArm``'s
    0.005 kg·m² makes the model's joint-2 inertia 9× the arm's (0.0062 against 0.00068 kg·m² at
    q = (0.9, 1.2)). MPC through that model never settles: it switches between full torques and
    swings the arm through the target at ±8 rad/s, so where the end effector is at any one
    instant depends on floating-point rounding (iLQR ended 0.6 cm from the target with MKL's AVX2
    kernels and 4.4 cm with its AVX-512 ones). The model stays approximate: uniform rods instead
    of the URDF's inertias (joint-2 inertia 1.8× the arm's), no friction loss."""

    armature = 0.0


def make_mpc(planner_cls=ICEM, replan_every=1, random_steps=0, **kw):
    robot = load_robot("arm2")
    effort = robot.limits.effort
    planner = planner_cls(15, -effort, effort, seed=0, **kw)
    cost = ReachCost(robot, w_action=1e-3)
    return robot, MPC(
        robot,
        robot.joint_names,
        planner,
        cost,
        dt=DT,
        replan_every=replan_every,
        random_steps=random_steps,
        base_policy=RandomTorquePolicy(effort, 0.3, 2, seed=1),
    )


def test_base_policy_until_a_model_and_a_target_arrive():
    robot, mpc = make_mpc(replan_every=3)
    step = mpc.act(np.zeros(2), np.zeros(2), 0, np.array([0.1, 0.1, 0.07]))
    assert step.source == "pi0" and step.controller.T == 3 and step.plan is None
    assert np.all(np.abs(step.controller.u_hat) <= 0.3 * robot.limits.effort)
    mpc.set_model(TwoLinkArm(dt=DT))
    assert mpc.act(np.zeros(2), np.zeros(2), 1, None).source == "pi0"


def test_random_warm_up_period_then_plans():
    _, mpc = make_mpc(random_steps=2, population=50, elites=5, iterations=2)
    mpc.set_model(TwoLinkArm(dt=DT))
    target = np.array([0.1, 0.1, 0.07])
    sources = [mpc.act(np.zeros(2), np.zeros(2), k * 20_000_000, target).source for k in range(3)]
    assert sources == ["pi0", "pi0", "plan"]


def test_the_warm_up_counts_from_the_first_state_not_from_the_first_model():
    """π0 runs for random_steps periods from the first state the MPC sees, whether or not a
    model and a target exist then; asking whether a stamp is in the warm-up changes nothing."""
    _, mpc = make_mpc(random_steps=3, population=50, elites=5, iterations=2)
    target = np.array([0.1, 0.1, 0.07])
    assert mpc.warming_up(10 * 20_000_000) and mpc.first_stamp is None
    assert [mpc.act(np.zeros(2), np.zeros(2), k * 20_000_000, None).source for k in range(2)] == [
        "pi0",
        "pi0",
    ]
    mpc.set_model(TwoLinkArm(dt=DT))
    sources = [
        mpc.act(np.zeros(2), np.zeros(2), k * 20_000_000, target).source for k in range(2, 5)
    ]
    assert sources == ["pi0", "plan", "plan"]


@pytest.mark.parametrize(
    "planner_cls, kw",
    [(ICEM, dict(population=100, elites=10, iterations=3)), (ILQR, dict(iterations=5))],
)
def test_mpc_through_a_model_reaches_a_target_on_the_simulated_arm(planner_cls, kw):
    """Receding-horizon control of the MuJoCo arm through an (approximate) analytic model of it
    (``Arm2Model``): the end effector reaches the target and stays there. Over the last 0.4 s of
    the 1.2 s run (20 control steps) its mean distance to the target is below 2 cm for iCEM,
    which keeps sampling around it (measured 0.5-1.2 cm: seeds 0-5 here, seed 0 on 9 targets),
    and below 0.5 cm for iLQR, which settles (measured at most 0.2 cm on 9 targets, with MKL's
    AVX2 and AVX-512 kernels; through ``TwoLinkArm``, 9× too heavy at joint 2, 1-2.4 cm)."""
    torch.manual_seed(0)
    robot, mpc = make_mpc(planner_cls, **kw)
    assert np.all(robot.armature == Arm2Model.armature)
    mpc.set_model(Arm2Model(dt=DT))
    sim = ArmSimulator(robot, SimConfig(control_period=DT))
    fk = ForwardKinematics(robot)
    target = fk.ee_position(torch.tensor([0.9, 1.2], dtype=torch.float64)).numpy()
    distances = []
    for k in range(60):
        s = sim.measure()
        step = mpc.act(s.position, s.velocity, k * 20_000_000, target)
        assert step.source == "plan"
        x = np.concatenate([s.position, s.velocity])
        sim.step(np.clip(step.controller.act(x, 0), -robot.limits.effort, robot.limits.effort))
        ee = fk.ee_position(torch.as_tensor(sim.measure().position)).numpy()
        distances.append(float(np.linalg.norm(ee - target)))
    last = np.array(distances[-20:])
    assert last.mean() < (0.005 if planner_cls is ILQR else 0.02), np.round(last, 4).tolist()


def linear_mpc(**feedback):
    """(arm2, iLQR MPC through an exact double integrator for arm2's joint names, the model)."""
    robot = load_robot("arm2")
    base = LinearModel.double_integrator()
    model = LinearModel(base.A, base.B, DT)
    planner = ILQR(10, -robot.limits.effort, robot.limits.effort, iterations=2)
    mpc = MPC(
        robot,
        robot.joint_names,
        planner,
        ReachCost(robot),
        dt=DT,
        replan_every=1,
        random_steps=0,
        base_policy=RandomTorquePolicy(robot.limits.effort, seed=0),
        **feedback,
    )
    mpc.set_model(model)
    return robot, mpc, model


def test_nan_plan_falls_back_to_the_previous_plan_then_pi0():
    _, mpc, good = linear_mpc()
    target = np.array([0.1, 0.1, 0.07])
    first = mpc.act(np.zeros(2), np.zeros(2), 0, target)
    assert first.source == "plan"
    nan = NaNModel()
    nan.signature = ModelSignature(good.signature.joint_names, good.signature.state_names, DT)
    mpc.set_model(nan)
    step = mpc.act(np.zeros(2), np.zeros(2), 20_000_000, target)
    assert step.source == "previous" and step.plan.status == "nan"
    assert step.controller is first.controller
    late = mpc.act(np.zeros(2), np.zeros(2), 10 * 20_000_000, target)
    assert late.source == "pi0"


def test_incompatible_models_are_refused():
    _, mpc = make_mpc()
    other = TwoLinkArm(dt=DT)
    other.signature = ModelSignature(("a", "b"), other.signature.state_names, DT)
    with pytest.raises(ModelError, match="joints"):
        mpc.set_model(other)
    with pytest.raises(ModelError, match="control period"):
        mpc.set_model(TwoLinkArm(dt=0.05))


def test_a_lead_plans_from_the_state_predicted_under_the_previous_plan():
    """With lead_ns, the plan starts ⌈lead/dt⌉ steps later from the model's prediction under the
    previous plan's actions: on an exact linear model that prediction is A²x + ABu₀ + Bu₁."""
    _, mpc, model = linear_mpc()
    target = np.array([0.1, 0.1, 0.07])
    dt_ns = int(DT * 1e9)
    first = mpc.act(np.zeros(2), np.zeros(2), 0, target).controller
    x = np.array([0.2, -0.1, 0.5, 0.3])
    stamp = dt_ns // 2  # mid-step 0 of the first plan
    predicted, start = mpc.predict_ahead(x, stamp, int(1.5 * dt_ns))
    assert start == stamp + 2 * dt_ns
    A, B = model.A.numpy().astype(float), model.B.numpy().astype(float)
    u0 = first.act(x, 0)
    x1 = A @ x + B @ u0
    expected = A @ x1 + B @ first.act(x1, 1)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)
    step = mpc.act(x[:2], x[2:], stamp, target, lead_ns=int(1.5 * dt_ns))
    assert step.source == "plan" and step.controller.start_ns == stamp + 2 * dt_ns
    np.testing.assert_allclose(step.controller.x_hat[0], expected, rtol=1e-5, atol=1e-6)
    assert mpc.predict_ahead(x, stamp, 0) == (x, stamp)


def test_feedback_setting_gives_each_plan_the_gains_the_executor_runs():
    """'plan' keeps iLQR's K; 'none' runs û + k open loop; 'tracking' puts the PD gains on the
    deviation from the same nominal: û + k − kp (q − q̂) − kd (q̇ − q̂̇); 'bounded' keeps K
    with each row's position and velocity parts scaled to L1 norms ≤ kp_j, kd_j. Latency
    prediction runs the previous plan with those gains, clamped to the planner's torque box."""
    target = np.array([0.1, 0.1, 0.07])
    x = np.array([0.2, -0.1, 0.5, 0.3])
    kp, kd = np.array([3.0, 2.0]), np.array([0.3, 0.2])
    plans = {}
    for feedback in ("plan", "none", "tracking", "bounded"):
        _, mpc, model = linear_mpc(feedback=feedback, tracking_gains=(kp, kd))
        plans[feedback] = c = mpc.act(x[:2], x[2:], 0, target).controller
        assert mpc.previous is c
        off = c.x_hat[3] + np.array([0.05, -0.02, 0.1, 0.3])
        expected = {
            "plan": c.K[3] @ (off - c.x_hat[3]) + c.k[3] + c.u_hat[3],
            "none": c.u_hat[3],
            "tracking": c.u_hat[3]
            - kp * (off[:2] - c.x_hat[3, :2])
            - kd * (off[2:] - c.x_hat[3, 2:]),
            "bounded": c.u_hat[3] + c.K[3] @ (off - c.x_hat[3]),
        }.get(feedback)
        if feedback == "bounded":  # iLQR's rows, each scaled to the PD gains' L1 bound
            K = plans["plan"].K[3]
            rows = [
                [min(1.0, cap[j] / np.abs(K[j, part]).sum()) for j in range(2)]
                for part, cap in ((slice(0, 2), kp), (slice(2, 4), kd))
            ]
            np.testing.assert_allclose(c.K[3][:, :2], K[:, :2] * np.array(rows[0])[:, None])
            np.testing.assert_allclose(c.K[3][:, 2:], K[:, 2:] * np.array(rows[1])[:, None])
            assert min(rows[0] + rows[1]) < 1.0  # the bound binds somewhere in this case
            assert np.all(np.abs(c.K[:, :, :2]).sum(-1) <= kp * (1 + 1e-12))
            assert np.all(np.abs(c.K[:, :, 2:]).sum(-1) <= kd * (1 + 1e-12))
            np.testing.assert_allclose(c.u_hat, plans["plan"].u_hat + plans["plan"].k)
        np.testing.assert_allclose(c.act(off, 3), expected, rtol=1e-12, atol=1e-12)
        A, B = model.A.numpy().astype(float), model.B.numpy().astype(float)
        low, high = mpc.planner.action_low, mpc.planner.action_high
        u0 = np.clip(c.act(off, 0), low, high)
        predicted, _ = mpc.predict_ahead(off, 0, int(DT * 1e9))
        np.testing.assert_allclose(predicted, A @ off + B @ u0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plans["none"].u_hat, plans["plan"].u_hat + plans["plan"].k)
    assert not plans["none"].K.any() and np.any(plans["plan"].K)
    with pytest.raises(ValueError, match="tracking_gains"):
        linear_mpc(feedback="tracking")
    with pytest.raises(ValueError, match="must be one of"):
        linear_mpc(feedback="yes")


def test_tracking_damping_scales_only_the_tracking_gains_damping():
    """build_mpc's feedback tracking: kp, kd are homing's gains at the control period (the
    closed-form caps 0.25·I/h², 0.5·I/h, times tracking_gain_fraction); tracking_damping
    multiplies kd alone."""
    from mbrl_ros.control.homing import homing_gains
    from mbrl_ros.planning.mpc import PlannerSettings, build_mpc

    robot = load_robot("arm2")
    base = dict(planner="ilqr", feedback="tracking", control_period=0.05)
    gains = {
        damping: build_mpc(
            robot, range(2), PlannerSettings(**base, tracking_damping=damping)
        ).tracking_gains
        for damping in (1.0, 3.0)
    }
    kp, kd = homing_gains(robot, robot.joint_names, 0.05, PlannerSettings().tracking_gain_fraction)
    np.testing.assert_array_equal(gains[1.0][0], kp)
    np.testing.assert_array_equal(gains[1.0][1], kd)
    np.testing.assert_array_equal(gains[3.0][0], kp)
    np.testing.assert_allclose(gains[3.0][1], 3.0 * kd, rtol=1e-15)
