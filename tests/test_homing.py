"""Homing (pure core): the min-jerk move against its closed form, the homing controller's timing,
gains within the stability caps and ControllerBounds, tracking on the simulated arm, and the settle
detector on synthetic streams at irregular rates."""

import numpy as np
import pytest

from mbrl_ros.control.homing import SettleDetector, homing_controller, homing_gains, min_jerk
from mbrl_ros.control.plausibility import ControllerBounds, StateGate
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.robot.description import home_position, load_robot
from mbrl_ros.robot.gains import robot_gain_caps
from mbrl_ros.robot.gravity import GravityModel
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

MS = 1_000_000


def test_min_jerk_matches_its_closed_form():
    q0, q1, T = np.array([0.2, -1.0, 0.0]), np.array([1.0, 0.5, 0.0]), 1.6
    t = np.linspace(0.0, T, 1601)
    q, qd = min_jerk(q0, q1, T, t)
    np.testing.assert_allclose(q[0], q0) and np.testing.assert_allclose(q[-1], q1)
    np.testing.assert_allclose(qd[[0, -1]], 0.0, atol=1e-15)
    s = t / T  # acceleration: the derivative of the velocity, zero at both ends
    acc = (q1 - q0) / T**2 * (60 * s - 180 * s**2 + 120 * s**3)[:, None]
    np.testing.assert_allclose(np.gradient(qd, t, axis=0)[1:-1], acc[1:-1], atol=1e-4)
    np.testing.assert_allclose(acc[[0, -1]], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(qd).max(axis=0), 15 / 8 * np.abs(q1 - q0) / T, rtol=1e-6)
    np.testing.assert_allclose(q[800], (q0 + q1) / 2)  # symmetric about the middle
    # velocity is the derivative of position (central differences)
    np.testing.assert_allclose(np.gradient(q, t, axis=0)[1:-1], qd[1:-1], atol=1e-5)
    q_after, qd_after = min_jerk(q0, q1, T, [T + 1.0])  # after the end: at rest at the goal
    np.testing.assert_allclose(q_after[0], q1) and np.testing.assert_allclose(qd_after[0], 0.0)


@pytest.mark.parametrize("name", ["arm2", "arm7"])
def test_homing_controller_timing_speed_and_gains(name):
    robot = load_robot(name)
    dt_ns, dt = 10 * MS, 0.01
    q0 = home_position(robot)
    q1 = np.clip(q0 + 0.6, robot.limits.lower, robot.limits.upper)
    c = homing_controller(q0, q1, 5_000 * MS, dt_ns, robot=robot, speed_fraction=0.2, hold=1.0)
    n = robot.n_joints
    speed = 0.2 * robot.limits.velocity
    T = max(0.5, np.max(15 / 8 * np.abs(q1 - q0) / speed))
    move = int(np.ceil(T / dt - 1e-9))
    assert c.T == move + 100 and c.start_ns == 5_000 * MS and c.valid_until_ns == c.end_ns
    np.testing.assert_allclose(c.x_hat[0, :n], q0)
    np.testing.assert_allclose(c.x_hat[move:, :n], np.tile(q1, (100, 1)))
    np.testing.assert_allclose(c.x_hat[move:, n:], 0.0, atol=1e-12)
    assert np.all(np.abs(c.x_hat[:, n:]) <= speed + 1e-12)  # within the speed limit
    assert not c.u_hat.any() and not c.k.any() and c.deterministic  # no feedforward
    kp_cap, kd_cap = robot_gain_caps(robot, robot.joint_names, dt)
    kp, kd = -np.diagonal(c.K[0, :, :n]), -np.diagonal(c.K[0, :, n:])
    assert np.all(kp > 0) and np.all(kp <= kp_cap) and np.all(kd > 0) and np.all(kd <= kd_cap)
    assert np.count_nonzero(c.K[0]) == 2 * n  # decoupled PD
    ControllerBounds(robot.limits.effort, StateGate.for_joints(robot, robot.joint_names)).check(c)
    np.testing.assert_allclose((kp, kd), homing_gains(robot, robot.joint_names, dt))


def test_homing_controller_refuses_bad_goals():
    robot = load_robot("arm2")
    q0 = home_position(robot)
    with pytest.raises(ValueError, match="beyond the joint limits: shoulder|beyond the joint"):
        homing_controller(q0, robot.limits.upper + 0.1, 0, 10 * MS, robot=robot)
    with pytest.raises(ValueError, match="finite"):
        homing_controller(q0, [np.nan, 0.0], 0, 10 * MS, robot=robot)
    with pytest.raises(ValueError, match="more than"):
        homing_controller(q0, q0, 0, MS, robot=robot, hold=1000.0)


def test_homing_tracks_on_the_arm_without_gravity_compensation():
    """arm7 in MuJoCo without gravity compensation, the homing controller behind the safety layer
    with the URDF's gravity: the arm reaches the goal and the detector says settled."""
    robot = load_robot("arm7")
    sim = ArmSimulator(robot, SimConfig(control_period=0.01, gravity_compensation=False))
    q0 = sim.measure().position
    goal = np.clip(
        q0 + np.array([0.4, -0.3, 0.3, 0.4, -0.5, 0.3, 0.6]),
        robot.limits.lower + 0.1,
        robot.limits.upper - 0.1,
    )
    c = homing_controller(q0, goal, 0, 10 * MS, robot=robot, hold=1.5)
    s = SafetyLayer(
        robot.limits.lower,
        robot.limits.upper,
        robot.limits.velocity,
        robot.limits.effort,
        SafetyConfig(),
        robot_gain_caps(robot, robot.joint_names, 0.01),
        GravityModel(robot).torque,
    )
    detector = SettleDetector(goal, 0.01, 0.05, 0.3, 10.0, robot.joint_names)
    for t in range(c.T):
        m = sim.measure()
        detector.update(t * 10 * MS, m.position, m.velocity)
        x = np.concatenate([m.position, m.velocity])
        sim.step(s.filter(m.position, m.velocity, c.act(x, t))[0])
    assert detector.settled, detector.message
    assert np.abs(sim.measure().position - goal).max() < 0.01


def _stream(rng, duration_s, settle_at_s, goal, rate_hz=500):
    """Jittered, dropped joint states: ringing around the goal until ``settle_at_s``, then at
    rest within 1e-4 rad."""
    t, out = 0.0, []
    while t < duration_s:
        t += rng.uniform(0.5, 1.5) / rate_hz * (3 if rng.random() < 0.05 else 1)  # drops
        if t < settle_at_s:
            q, qd = goal + 0.05 * np.sin(40 * t), np.full_like(goal, 2.0 * np.cos(40 * t))
        else:
            q, qd = (
                goal + rng.uniform(-1e-4, 1e-4, goal.shape),
                rng.uniform(-1e-3, 1e-3, goal.shape),
            )
        out.append((int(t * 1e9) + 10**18, q, qd))
    return out


def test_settle_detector_needs_the_dwell_time_at_any_rate():
    rng = np.random.default_rng(0)
    goal = np.array([0.3, -0.2])
    d = SettleDetector(goal, 0.01, 0.05, dwell=0.25, timeout=5.0, joint_names=["a", "b"])
    settled_at = None
    for stamp, q, qd in _stream(rng, 3.0, 1.0, goal):
        if d.update(stamp, q, qd) and settled_at is None:
            settled_at = stamp
    start = 10**18
    # inside from the first state after 1.0 s on: settled within one sample after 1.25 s
    assert 1.25e9 <= settled_at - start < 1.25e9 + 10e6 and d.settled and not d.timed_out
    assert "settled" in d.message


def test_settle_detector_restarts_the_dwell_when_it_leaves_the_tolerance():
    goal = np.zeros(1)
    d = SettleDetector(goal, 0.01, 0.05, dwell=0.1, timeout=5.0)
    for k in range(8):  # 70 ms inside
        assert not d.update(k * 10 * MS, [0.0], [0.0])
    d.update(80 * MS, [0.02], [0.0])  # out
    for k in range(9, 19):  # 90 ms inside again: not yet
        assert not d.update(k * 10 * MS, [0.0], [0.0])
    assert d.update(190 * MS, [0.0], [0.0])  # 100 ms since 90 ms
    d.update(50 * MS, [1.0], [1.0])  # going back is ignored (and so is all after settling)
    assert d.settled


def test_settle_detector_times_out_naming_the_joints_and_by_how_much():
    goal = np.array([0.0, 0.0, 0.0])
    d = SettleDetector(
        goal,
        [0.01, 0.01, 0.02],
        0.05,
        dwell=0.2,
        timeout=2.0,
        joint_names=["shoulder", "elbow", "wrist"],
    )
    for k in range(0, 211, 3):  # 30 ms steps: the elbow is 0.031 rad off, the wrist moves
        d.update(5 * 10**9 + k * 10 * MS, [0.0, 0.031, 0.015], [0.0, 0.0, 0.2])
    assert d.timed_out and not d.settled
    assert d.message.startswith("homing did not settle within 2 s")
    assert "elbow 0.031 rad from its goal (tolerance 0.01)" in d.message
    assert "wrist moving at 0.2 rad/s" in d.message and "shoulder" not in d.message
    with pytest.raises(ValueError):
        SettleDetector(goal, 0.0, 0.05, 0.1, 1.0)
