"""ArmSimulator (pure core) against MuJoCo stepped by hand."""

import mujoco
import numpy as np
import pytest

from mbrl_ros.common.settings import ConfigError
from mbrl_ros.robot.description import (
    build_mujoco_model,
    home_position,
    load_robot,
    mujoco_joint_indices,
)
from mbrl_ros.robot.gains import robot_gain_caps
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig


def torque_sequence(robot, steps, seed=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (steps, robot.n_joints)) * robot.limits.effort


@pytest.mark.parametrize("name", ["arm2", "arm7"])
def test_matches_mujoco_stepped_by_hand(name):
    robot = load_robot(name)
    cfg = SimConfig(physics_timestep=0.002, control_period=0.01)
    sim = ArmSimulator(robot, cfg)
    model = build_mujoco_model(robot, timestep=0.002)
    data = mujoco.MjData(model)
    qi, di = mujoco_joint_indices(model, robot)
    data.qpos[qi] = home_position(robot)
    mujoco.mj_forward(model, data)
    for tau in torque_sequence(robot, 100):
        sim.step(tau)
        data.ctrl[:] = tau
        for _ in range(5):
            mujoco.mj_step(model, data)
        s = sim.measure()
        np.testing.assert_array_equal(s.position, data.qpos[qi])
        np.testing.assert_array_equal(s.velocity, data.qvel[di])
        np.testing.assert_array_equal(s.effort, tau)


def test_torques_are_clamped_to_effort_limits():
    robot = load_robot("arm2")
    sim = ArmSimulator(robot, SimConfig())
    sim.step(10 * robot.limits.effort)
    np.testing.assert_array_equal(sim.measure().effort, robot.limits.effort)
    sim.step(-10 * robot.limits.effort)
    np.testing.assert_array_equal(sim.measure().effort, -robot.limits.effort)


def test_noise_is_seeded_and_reproducible():
    robot = load_robot("arm2")
    cfg = SimConfig(
        torque_noise_std=0.05,
        position_noise_std=1e-3,
        velocity_noise_std=1e-2,
        initial_position_noise=0.3,
        seed=11,
    )
    runs = []
    for _ in range(2):
        sim = ArmSimulator(robot, cfg)
        sim.reset(randomize=True)
        out = []
        for tau in torque_sequence(robot, 30):
            sim.step(tau)
            out.append(sim.measure().position)
        runs.append(np.array(out))
    np.testing.assert_array_equal(runs[0], runs[1])
    clean = ArmSimulator(robot, SimConfig(seed=11))
    assert not np.allclose(runs[0][0], clean.measure().position)


def test_reset_randomises_within_limits_and_stops_the_arm():
    robot = load_robot("arm7")
    sim = ArmSimulator(robot, SimConfig(initial_position_noise=3.0, seed=1))
    for _ in range(20):
        sim.step(0.3 * robot.limits.effort)
        sim.reset()
        s = sim.measure()
        assert np.all(s.position >= robot.limits.lower) and np.all(s.position <= robot.limits.upper)
        np.testing.assert_array_equal(s.velocity, 0.0)


def test_hold_torque_damps_velocity_with_capped_gain():
    robot = load_robot("arm2")
    sim = ArmSimulator(robot, SimConfig(hold_damping=5.0))
    kd_cap = robot_gain_caps(robot, robot.joint_names, sim.config.control_period)[1]
    np.testing.assert_array_equal(sim.hold_damping, np.minimum(5.0, kd_cap))
    assert np.all(sim.hold_damping < 5.0)
    sim.step(robot.limits.effort)
    qd = sim.measure().velocity
    np.testing.assert_allclose(
        sim.hold_torque(),
        np.clip(-sim.hold_damping * qd, -robot.limits.effort, robot.limits.effort),
    )
    for _ in range(100):  # the capped hold brings the arm to rest without a limit cycle
        sim.step(sim.hold_torque())
    assert np.all(np.abs(sim.measure().velocity) < 1e-2)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (SimConfig(control_period=0.015, physics_timestep=0.002), "whole multiple"),
        (SimConfig(initial_position=(0.0,)), "initial_position has 1"),
        (SimConfig(initial_position=(10.0, 0.0)), "outside the joint limits"),
    ],
)
def test_bad_configuration_is_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        ArmSimulator(load_robot("arm2"), cfg)


def test_settings_are_checked_and_unknown_keys_named():
    with pytest.raises(ConfigError, match=r"'hold_damping' = -1.0 is out of range \[0.0, 1000.0\]"):
        SimConfig(hold_damping=-1.0)
    with pytest.raises(ConfigError, match=r"'initial_position' = .*: element 1 is out of range"):
        SimConfig(initial_position=(0.0, 11.0))
    with pytest.raises(ConfigError, match="unknown SimConfig setting.*'hold_dampng'.*hold_damping"):
        SimConfig.from_mapping({"hold_dampng": 2.0})
    assert SimConfig(initial_position=(0.1, 0.2)).initial_position == [0.1, 0.2]
    assert SimConfig(scene=None).scene is None  # a plain field: no parameter, not checked
    assert "scene" not in {p.name for p in SimConfig.params()}


def test_step_rejects_bad_torque():
    sim = ArmSimulator(load_robot("arm2"), SimConfig())
    with pytest.raises(ValueError):
        sim.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError):
        sim.step(np.zeros(3))


def test_gravity_compensation_cancels_the_arms_weight():
    """With gravity compensation a bent arm under zero torque stays where it is; without, it
    falls (arm7 is vertical-plane loaded)."""
    robot = load_robot("arm7")
    pose = (0.0, -0.3, 0.0, -2.0, 0.0, 1.7, 0.0)
    moved = {}
    for gc in (False, True):
        sim = ArmSimulator(
            robot, SimConfig(control_period=0.05, initial_position=pose, gravity_compensation=gc)
        )
        for _ in range(10):
            sim.step(np.zeros(7))
        moved[gc] = np.abs(sim.measure().position - np.array(pose)).max()
    assert moved[True] < 1e-9 and moved[False] > 0.05


def test_set_state_puts_the_arm_in_a_given_state():
    robot = load_robot("arm2")
    sim = ArmSimulator(robot, SimConfig(control_period=0.05))
    sim.set_state(np.array([0.3, -0.4]), np.array([0.5, 0.0]))
    m = sim.measure()
    np.testing.assert_allclose(m.position, [0.3, -0.4])
    np.testing.assert_allclose(m.velocity, [0.5, 0.0])
    with pytest.raises(ValueError, match="finite"):
        sim.set_state(np.array([np.nan, 0.0]), np.zeros(2))
