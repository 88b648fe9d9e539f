"""Random-torque datasets from the simulated arm (the lecture's base policy π0), offline: for
tests and benchmarks of the dynamics models, without ROS."""

from __future__ import annotations

import numpy as np

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig, simulate


def random_torque_dataset(
    robot: RobotDescription,
    episodes: int,
    steps: int,
    *,
    seed: int = 0,
    scale: float = 0.3,
    hold_steps: int = 5,
    control_period: float = 0.01,
    initial_position_noise: float = 0.5,
) -> Dataset:
    """``episodes`` × ``steps`` transitions of ``robot`` under random torques (±``scale``·effort
    limit, each held ``hold_steps`` periods), every episode from a reset with uniform
    ±``initial_position_noise`` rad on the start pose. Episode ids 0..episodes−1, stamps in ns."""
    sim = ArmSimulator(
        robot,
        SimConfig(
            control_period=control_period, seed=seed, initial_position_noise=initial_position_noise
        ),
    )
    policy = RandomTorquePolicy(robot.limits.effort, scale, hold_steps, seed)
    n = robot.n_joints
    states = np.empty((episodes, steps + 1, 2 * n))
    actions = np.empty((episodes, steps, n))
    for e in range(episodes):
        states[e], actions[e] = simulate(sim, lambda x, t: policy.act(), steps)
    dt_ns = seconds_to_ns(control_period)
    stamps = np.tile(np.arange(steps) * dt_ns, episodes) + np.repeat(
        np.arange(episodes) * (steps + 1) * dt_ns, steps
    )
    return Dataset(
        states[:, :-1].reshape(-1, 2 * n),
        actions.reshape(-1, n),
        states[:, 1:].reshape(-1, 2 * n),
        np.repeat(np.arange(episodes), steps),
        stamps,
        robot.joint_names,
        control_period,
        joint_state_names(robot.joint_names),
        (f"sim:{robot.name}",),
    )
