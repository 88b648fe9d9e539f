"""Known systems for the GP, GMM and physics dynamics tests: a stable linear system and the 2-link
simulated arm under random torques, as ``Dataset`` objects with several episodes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

LINEAR_A = np.array([[1.0, 0.05], [-0.1, 0.95]])
LINEAR_B = np.array([[0.0], [0.1]])


def linear_dataset(
    episodes: int = 6, steps: int = 40, noise: float = 0.0, seed: int = 0
) -> Dataset:
    """s' = A s + B a (+ Gaussian noise), one joint 'j' with state (position, velocity), dt 0.05."""
    rng = np.random.default_rng(seed)
    s_list, a_list, n_list, ep = [], [], [], []
    for e in range(episodes):
        s = rng.uniform(-1, 1, 2)
        for _ in range(steps):
            a = rng.uniform(-1, 1, 1)
            nxt = LINEAR_A @ s + LINEAR_B @ a + noise * rng.standard_normal(2)
            s_list.append(s), a_list.append(a), n_list.append(nxt), ep.append(e)
            s = nxt
    n = len(s_list)
    return Dataset(
        np.array(s_list),
        np.array(a_list),
        np.array(n_list),
        np.array(ep),
        np.arange(n) * 50_000_000,
        ("j",),
        0.05,
        joint_state_names(("j",)),
    )


def arm_dataset(
    robot_name: str = "arm2",
    episodes: int = 8,
    steps: int = 100,
    torque_scale: float = 0.5,
    seed: int = 0,
    config: SimConfig | None = None,
    perturb=None,
) -> Dataset:
    """Random-torque episodes of the simulated arm: torques uniform in ±torque_scale × effort
    limit, held for 5 control periods each, from randomised start poses. ``perturb(mj_model)``
    may change the simulator's physical parameters first."""
    robot = load_robot(robot_name)
    cfg = replace(config or SimConfig(), seed=seed, initial_position_noise=0.5)
    sim = ArmSimulator(robot, cfg)
    if perturb is not None:
        perturb(sim.model)
    rng = np.random.default_rng(seed + 1)
    limit = robot.limits.effort * torque_scale
    s_list, a_list, n_list, ep = [], [], [], []
    for e in range(episodes):
        sim.reset(randomize=True)
        m = sim.measure()
        state = np.concatenate([m.position, m.velocity])
        for t in range(steps):
            if t % 5 == 0:
                torque = rng.uniform(-1, 1, robot.n_joints) * limit
            sim.step(torque)
            m = sim.measure()
            nxt = np.concatenate([m.position, m.velocity])
            s_list.append(state), a_list.append(m.effort), n_list.append(nxt), ep.append(e)
            state = nxt
    n = len(s_list)
    return Dataset(
        np.array(s_list),
        np.array(a_list),
        np.array(n_list),
        np.array(ep),
        np.arange(n) * int(cfg.control_period * 1e9),
        robot.joint_names,
        cfg.control_period,
        joint_state_names(robot.joint_names),
    )


def one_step_rmse(model, data: Dataset) -> np.ndarray:
    """Root-mean-square one-step error of the predicted mean per state column, divided by the
    std of that column's change Δs in ``data``: (dx,)."""
    import torch

    mean, _ = model.predict(torch.as_tensor(data.states), torch.as_tensor(data.actions))
    err = mean.detach().numpy() - data.next_states
    return np.sqrt((err**2).mean(0)) / data.deltas.std(0)
