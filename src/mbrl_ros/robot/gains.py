"""Stable joint-space gains for a torque held over a control period, from the robot's inertia.

A torque held for a period h acts like a discrete-time controller, and a damping or stiffness that
is large against the joint's inertia makes it unstable (damping d on inertia I oscillates once
d·h/I > 2: on arm2's 3e-4 kg·m² elbow at 100 Hz, from d = 0.07 N·m·s/rad). ``gain_caps(inertia,
h)`` bounds kd ≤ 0.5·I/h and kp ≤ 0.25·I/h² per joint, with I the effective inertia 1/(M⁻¹)_ii
(coupling and armature included) from ``effective_inertia``; ``robot_gain_caps`` takes I from
the URDF's MuJoCo model over a set of poses. Used by the safety layer, homing, scripted
controllers, the simulator and the per-robot settings.
"""

from __future__ import annotations

import mujoco
import numpy as np

from mbrl_ros.robot.description import RobotDescription, build_mujoco_model, home_position

KD_PER_INERTIA = 0.5  # kd ≤ 0.5·I/h: half of a dead-beat velocity loop
KP_PER_INERTIA = 0.25  # kp ≤ 0.25·I/h²


def effective_inertia(model: mujoco.MjModel, poses) -> np.ndarray:
    """(n,) smallest effective joint inertia 1/(M(q)⁻¹)_ii (kg·m²) over ``poses`` (P, n) rad, for
    a MuJoCo model whose qpos/qvel are exactly the n joints."""
    data = mujoco.MjData(model)
    full = np.zeros((model.nv, model.nv))
    best = np.full(model.nv, np.inf)
    for q in np.atleast_2d(poses):
        data.qpos[:] = q
        mujoco.mj_forward(model, data)
        mujoco.mj_fullM(model, data, full)
        best = np.minimum(best, 1.0 / np.diag(np.linalg.inv(full)))
    return best


def gain_caps(inertia, period: float) -> tuple[np.ndarray, np.ndarray]:
    """(kp_max (n,) N·m/rad, kd_max (n,) N·m·s/rad) that keep a PD law on a joint of effective
    inertia ``inertia`` (n,) kg·m² stable when its torque is held for ``period`` s."""
    inertia = np.asarray(inertia, dtype=np.float64)
    return KP_PER_INERTIA * inertia / period**2, KD_PER_INERTIA * inertia / period


def robot_gain_caps(
    robot: RobotDescription, joint_names, period: float, n_poses: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``gain_caps`` for ``joint_names`` of ``robot`` at control period ``period`` s, with the
    smallest effective inertia over the home pose and ``n_poses`` seeded random poses."""
    model = build_mujoco_model(robot, scene=None)
    lower = np.where(np.isfinite(robot.limits.lower), robot.limits.lower, -np.pi)
    upper = np.where(np.isfinite(robot.limits.upper), robot.limits.upper, np.pi)
    rng = np.random.default_rng(seed)
    poses = np.vstack([home_position(robot), rng.uniform(lower, upper, (n_poses, robot.n_joints))])
    kp, kd = gain_caps(effective_inertia(model, poses), period)
    idx = robot.index_of(joint_names)
    return kp[idx], kd[idx]
