"""Reaching episodes on the simulated arm, offline (no ROS), and the transitions they give.

An episode resets an ``ArmSimulator``, then for t = 0..T−1 asks a controller ``act(x_t, t)`` for
a torque (x = [q, q̇]), passes it through the ``SafetyLayer`` when one is given (as the executor
and the policy runner do on the robot) and steps the arm one control period. The recorded action is
the torque the arm applied (the simulator clamps to the effort limits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_ros.control.safety import SafetyLayer
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, simulate

Act = Callable[[np.ndarray, int], np.ndarray]  # (x (2n,), step t) → torque (n,) N·m


@dataclass(frozen=True)
class Episode:
    """states (T+1, 2n) [q rad, q̇ rad/s]; actions (T, n) N·m sent; target (3,) m."""

    states: np.ndarray
    actions: np.ndarray
    target: np.ndarray


def run_episode(
    sim: ArmSimulator, act: Act, target, steps: int, start=None, safety: SafetyLayer | None = None
) -> Episode:
    """One episode of ``steps`` control periods towards ``target`` (``simulation.simulate``).
    ``start``: initial joint positions (n,) rad at rest; None = the simulator's reset (its
    configured pose and noise)."""

    def filtered(s, u):
        with np.errstate(invalid="ignore", over="ignore"):
            return safety.filter(s.position, s.velocity, u)[0]

    states, actions = simulate(sim, act, steps, start, None if safety is None else filtered)
    return Episode(states, actions, np.asarray(target, dtype=np.float64))


def final_distance(fk: ForwardKinematics, episode: Episode) -> float:
    """End-effector distance (m) to the target at the episode's last state."""
    n = episode.actions.shape[1]
    ee = fk.ee_position(torch.as_tensor(episode.states[-1, :n])).numpy()
    return float(np.linalg.norm(ee - episode.target))


def episodes_dataset(
    episodes: Sequence[Episode],
    joint_names: Sequence[str],
    dt: float,
    first_id: int = 0,
    source: str = "sim",
) -> Dataset:
    """Transitions (s, a, s') of ``episodes``, episode ids from ``first_id``
    (``Dataset.from_rollout``)."""
    return Dataset.concat(
        [
            Dataset.from_rollout(ep.states, ep.actions, e, joint_names, dt, source=source)
            for e, ep in enumerate(episodes, first_id)
        ]
    )
