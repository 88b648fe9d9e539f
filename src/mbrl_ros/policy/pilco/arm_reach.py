"""PILCO on a reach with a simulated arm (``ArmSimulator``, e.g. the planar 2-link 'arm2').

The end-effector target is turned into a joint-space target by inverse kinematics (damped
Gauss-Newton on ``ForwardKinematics``), and the saturating cost is put on the joint state
[q − q*, q̇]: PILCO's expected cost stays closed-form, at the price that the arm is steered to that
one IK solution rather than to any configuration that reaches the point. Start: x_0 ~ N([q_0, 0],
diag(start_std²)); torques bounded by the URDF effort limits through the sine squash.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mbrl_ros.data.dataset import joint_state_names
from mbrl_ros.dynamics.base import Progress
from mbrl_ros.policy.errors import PolicyError
from mbrl_ros.policy.pilco.cost import SaturatingCost
from mbrl_ros.policy.pilco.loop import PilcoConfig, PilcoResult, PilcoTask, run_pilco
from mbrl_ros.policy.pilco.policies import LinearPolicy
from mbrl_ros.robot.description import RobotDescription, load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

MAX_IK_STEP = 0.2  # rad


class ArmSystem:
    """``ArmSimulator`` as a PILCO ``System``: state [q, q̇] (rad, rad/s), torques in N·m."""

    def __init__(self, robot: RobotDescription, config: SimConfig = SimConfig()):
        self.robot = robot
        self.sim = ArmSimulator(robot, config)
        self.joint_names = robot.joint_names
        self.state_names = joint_state_names(robot.joint_names)
        self.dt = float(config.control_period)
        self.effort_limit = robot.limits.effort.copy()

    def _measure(self) -> np.ndarray:
        m = self.sim.measure()
        return np.concatenate([m.position, m.velocity])

    def reset(self, state: np.ndarray) -> np.ndarray:
        """Set [q, q̇] (q clipped to the joint limits); the measured state."""
        n = self.robot.n_joints
        state = np.asarray(state, dtype=float)
        if state.shape != (2 * n,) or not np.all(np.isfinite(state)):
            raise PolicyError(f"arm state must be {2 * n} finite values [q, q̇], got {state}")
        self.sim.set_state(state[:n], state[n:])
        return self._measure()

    def step(self, torque: np.ndarray) -> np.ndarray:
        self.sim.step(np.asarray(torque, dtype=float).reshape(-1))
        return self._measure()


def inverse_kinematics(
    robot: RobotDescription, target, q0, iterations: int = 100, tolerance: float = 1e-4
) -> np.ndarray:
    """Joint angles (n,) rad within the limits that put the end effector on ``target`` (3,) m,
    by damped Gauss-Newton from ``q0`` (steps of at most ``MAX_IK_STEP`` rad); PolicyError if it
    ends farther than ``tolerance`` m."""
    fk = ForwardKinematics(robot)
    target = torch.as_tensor(np.asarray(target, dtype=float))
    lower, upper = (torch.tensor(v) for v in (robot.limits.lower, robot.limits.upper))
    q = torch.as_tensor(np.asarray(q0, dtype=float)).clone()
    for _ in range(iterations):
        err = target - fk.ee_position(q)
        if float(err.norm()) <= 0.1 * tolerance:
            break
        jac = fk.jacobian(q)
        step = torch.linalg.solve(
            jac.T @ jac + 1e-6 * torch.eye(len(q), dtype=q.dtype), jac.T @ err
        )
        length = float(step.norm())
        if length > MAX_IK_STEP:
            step = step * (MAX_IK_STEP / length)
        q = torch.minimum(torch.maximum(q + step, lower), upper)
    miss = float((target - fk.ee_position(q)).norm())
    if miss > tolerance:
        raise PolicyError(
            f"target {target.tolist()} m is out of reach: inverse kinematics ends {miss:.4f} m away"
        )
    return q.numpy()


def reach_task(
    system: ArmSystem,
    target,
    horizon_s: float = 1.5,
    start_std: float = 0.05,
    position_width: float = 0.5,
    velocity_width: float = 5.0,
) -> PilcoTask:
    """Reach ``target`` (3,) m from the simulator's initial pose, cost widths in rad and rad/s."""
    robot = system.robot
    n = robot.n_joints
    q0 = system.sim.initial_position
    q_star = inverse_kinematics(robot, target, q0 + 0.1)
    weight = np.diag([1 / position_width**2] * n + [1 / velocity_width**2] * n)
    return PilcoTask(
        system,
        SaturatingCost(np.concatenate([q_star, np.zeros(n)]), weight),
        np.concatenate([q0, np.zeros(n)]),
        np.eye(2 * n) * start_std**2,
        int(round(horizon_s / system.dt)),
    )


def ee_distance(robot: RobotDescription, states: np.ndarray, target) -> np.ndarray:
    """End-effector distance (T,) m to ``target`` for arm states (T, 2n)."""
    fk = ForwardKinematics(robot)
    q = torch.as_tensor(np.asarray(states)[:, : robot.n_joints])
    return (
        (fk.ee_position(q) - torch.as_tensor(np.asarray(target, dtype=float))).norm(dim=-1).numpy()
    )


def reach(
    target,
    robot: str = "arm2",
    config: PilcoConfig = PilcoConfig(),
    sim: SimConfig = SimConfig(control_period=0.05),
    horizon_s: float = 1.5,
    tolerance: float = 0.02,
    progress: Progress | None = print,
) -> PilcoResult:
    """PILCO with a linear policy on the reach to ``target`` (3,) m; a trial solves it when the
    end effector ends within ``tolerance`` m of the target (last state); the loop ends after
    ``config.solved_streak`` such trials in a row."""
    description = load_robot(robot)
    system = ArmSystem(description, replace(sim, seed=config.seed))
    task = reach_task(system, target, horizon_s)
    policy = LinearPolicy(2 * description.n_joints, description.limits.effort)
    return run_pilco(
        task,
        policy,
        config,
        progress,
        solved=lambda states: ee_distance(description, states[-1:], target)[0] <= tolerance,
    )
