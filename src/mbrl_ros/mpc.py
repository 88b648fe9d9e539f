"""Model-predictive control through a learned model (the lecture's MBRL v1.5), pure core.

``MPC.act(x, stamp_ns, target)`` returns the controller the executor should run from ``stamp_ns``:
* the base policy π0 (random torques, open loop, ``replan_every`` steps) while there is no model,
  no target, or during the first ``random_steps`` control periods after the first call;
* otherwise a fresh plan from the planner (warm-started from the previous plan);
* if the planner reports NaN: the previous plan when it still covers ``stamp_ns``, else π0 —
  and the step says so (``source``).
The same object serves the planner node and offline experiments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mbrl_ros.controller import LinearGaussianController
from mbrl_ros.data.dataset import joint_state_names
from mbrl_ros.data.features import EE_NAMES
from mbrl_ros.dynamics.base import DynamicsModel, ModelError
from mbrl_ros.planning.base import Planner, PlanResult
from mbrl_ros.policy.random_torque import RandomTorquePolicy
from mbrl_ros.robot import ForwardKinematics, RobotDescription
from mbrl_ros.tasks.reach import ReachCost


@dataclass
class MPCStep:
    """controller to run from the step's stamp; source: 'pi0', 'plan' or 'previous' (after a
    NaN plan); plan: the planner's result when it ran."""

    controller: LinearGaussianController
    source: str
    plan: PlanResult | None = None


class MPC:
    """Receding-horizon control of ``joint_names`` (a subset order of the robot's joints)."""

    def __init__(self, robot: RobotDescription, joint_names: Sequence[str], planner: Planner,
                 cost: ReachCost, *, dt: float, replan_every: int, random_steps: int,
                 base_policy: RandomTorquePolicy):
        if replan_every < 1 or replan_every > planner.horizon:
            raise ValueError(f"replan_every {replan_every} must be in [1, horizon "
                             f"{planner.horizon}]")
        self.robot, self.joint_names = robot, tuple(joint_names)
        self.planner, self.cost = planner, cost
        self.dt_ns = int(round(dt * 1e9))
        self.replan_every, self.random_steps = replan_every, random_steps
        self.base_policy = base_policy
        self.fk = ForwardKinematics(robot)
        self.model: DynamicsModel | None = None
        self.previous: LinearGaussianController | None = None
        self.with_ee = False
        self.first_stamp: int | None = None

    def set_model(self, model: DynamicsModel) -> None:
        """Use ``model`` from now on; ModelError if it is for other joints, another control period
        or a state layout other than [q, q̇] (+ end-effector features)."""
        sig = model.signature
        if tuple(sig.joint_names) != self.joint_names:
            raise ModelError(f"model is for joints {list(sig.joint_names)}, the planner controls "
                             f"{list(self.joint_names)}")
        if abs(sig.dt * 1e9 - self.dt_ns) > 1e3:
            raise ModelError(f"model control period {sig.dt} s differs from the planner's "
                             f"{self.dt_ns / 1e9} s")
        base = joint_state_names(self.joint_names)
        if tuple(sig.state_names) not in (base, base + EE_NAMES):
            raise ModelError(f"model state layout {list(sig.state_names)} is not [q, q̇] "
                             f"(+ {list(EE_NAMES)})")
        self.with_ee = len(sig.state_names) > len(base)
        self.model = model

    def model_state(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """The model's state vector for joint positions and velocities (n,) each."""
        if not self.with_ee:
            return np.concatenate([q, qd])
        ee = self.fk.ee_position(torch.as_tensor(q, dtype=torch.float64)).numpy()
        return np.concatenate([q, qd, ee])

    def act(self, q: np.ndarray, qd: np.ndarray, stamp_ns: int,
            target: np.ndarray | None) -> MPCStep:
        """The controller to run from ``stamp_ns`` (see the module docstring)."""
        if self.first_stamp is None:
            self.first_stamp = stamp_ns
        warming_up = stamp_ns - self.first_stamp < self.random_steps * self.dt_ns
        if self.model is None or target is None or warming_up:
            return MPCStep(self._random(stamp_ns), "pi0")
        self.cost.set_target(target)
        result = self.planner.plan(self.model_state(q, qd), self.model, self.cost,
                                   warm=self.previous, start_ns=stamp_ns)
        if result.ok:
            self.previous = result.controller
            return MPCStep(result.controller, "plan", result)
        if self.previous is not None and self.previous.covers(stamp_ns):
            return MPCStep(self.previous, "previous", result)
        return MPCStep(self._random(stamp_ns), "pi0", result)

    def _random(self, stamp_ns: int) -> LinearGaussianController:
        u = np.stack([self.base_policy.act() for _ in range(self.replan_every)])
        return LinearGaussianController.open_loop(u, 2 * len(self.joint_names), dt_ns=self.dt_ns,
                                                  start_ns=stamp_ns, joint_names=self.joint_names)
