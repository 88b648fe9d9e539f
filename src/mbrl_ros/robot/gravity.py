"""The arm's gravity torque from its URDF (pure core).

For a robot whose effort interface does not compensate the arm's weight, the stack adds g(q) to
every command it sends (``robot_compensates_gravity: false``), so a hold holds position and the
learned dynamics see the same weightless arm as on a robot that compensates. The fitter subtracts
the same g(q) from the recorded commands. ``JointGravity`` gives g in any joint order (the
executor's, a bag's).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace

import mujoco
import numpy as np

from mbrl_ros.robot.description import RobotDescription, RobotDescriptionError, build_mujoco_model


def joints_without_inertia(robot: RobotDescription) -> list[str]:
    """Actuated joints of the chain that move no link with an ``<inertial>`` of positive mass."""
    root = ET.parse(robot.urdf_path).getroot()
    massive = set()
    for link in root.iter("link"):
        mass = link.find("inertial/mass")
        try:
            if mass is not None and float(mass.get("value", "0")) > 0:
                massive.add(link.get("name"))
        except ValueError:
            pass
    chain = robot.chain
    return [
        j.name
        for i, j in enumerate(chain)
        if j.type != "fixed" and not any(later.child in massive for later in chain[i:])
    ]


class GravityModel:
    """g(q): the joint torques (n,) N·m that hold the arm still at q (n,) rad, in
    ``robot.joint_names`` order (MuJoCo's bias forces at zero velocity, from the URDF's masses and
    centres of mass). RobotDescriptionError if a moving link has no mass: such a URDF cannot say
    what the arm weighs."""

    def __init__(self, robot: RobotDescription):
        missing = joints_without_inertia(robot)
        if missing:
            raise RobotDescriptionError(
                f"{robot.urdf_path}: joint(s) {missing} move no link with an <inertial> mass, so "
                f"the arm's "
                f"gravity torque is unknown; add inertials to the URDF, or use it only on a robot "
                f"that compensates gravity itself (robot_compensates_gravity: true)"
            )
        self.robot = robot
        self.model = build_mujoco_model(robot, scene=None)
        self.data = mujoco.MjData(self.model)
        self.n = robot.n_joints

    def torque(self, q) -> np.ndarray:
        """g(q) (n,) N·m for q (n,) rad; ValueError for a wrong shape or non-finite q."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.n,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q must be {self.n} finite joint positions, got {q}")
        self.data.qpos[: self.n] = q
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)
        return self.data.qfrc_bias[: self.n].copy()


class JointGravity:
    """g(q) of a ``GravityModel`` for joints ``names`` (all of the robot's, any order)."""

    def __init__(self, gravity, names: Sequence[str]):
        robot_names = tuple(gravity.robot.joint_names)
        if sorted(robot_names) != sorted(names):
            raise ValueError(
                f"the gravity torque needs the positions of all joints "
                f"{list(robot_names)} of the robot; the data has {list(names)}"
            )
        self.gravity, self.n = gravity, len(names)
        self._order = np.array([list(names).index(j) for j in robot_names])
        self._back = np.argsort(self._order)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        """(n,) N·m in ``names`` order for q (n,) rad in ``names`` order."""
        return self.gravity.torque(q[self._order])[self._back]

    def subtract(self, data):
        """Lockstep data (a ``data.dataset.Dataset``: each command applied at its state s_k):
        actions minus g(q_k)."""
        g = np.stack([self(s[: self.n]) for s in data.states]) if len(data) else 0.0
        return replace(data, actions=data.actions - g)
