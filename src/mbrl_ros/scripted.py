"""Hand-written controllers, so the executor can drive the arm before any learning exists.

Both are linear-Gaussian controllers of the ``"q,qd"`` layout: PD tracking of a reference joint
trajectory is x̂_t = [q_ref_t, q̇_ref_t], K_t = [−Kp, −Kd], k_t = 0, û_t = a feed-forward torque
(inverse dynamics of the reference from MuJoCo's ``mj_inverse`` when a model is given, which
compensates gravity, inertia and joint damping), clamped to the effort limits. A hold controller is
PD tracking of a constant pose.
"""
from __future__ import annotations

from typing import Sequence

import mujoco
import numpy as np

from mbrl_ros.controller import LinearGaussianController, concatenate
from mbrl_ros.robot import RobotDescription, build_mujoco_model
from mbrl_ros.safety import robot_gain_caps
from mbrl_ros.simulation import home_position


def inverse_dynamics(model: mujoco.MjModel, q, qd, qdd) -> np.ndarray:
    """(T, n) joint torques (N·m) that produce accelerations qdd at states (q, qd), each (T, n),
    for a MuJoCo model whose qpos/qvel are exactly the n joints (``build_mujoco_model``)."""
    q, qd, qdd = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (q, qd, qdd))
    if not (q.shape == qd.shape == qdd.shape) or q.shape[1] != model.nv or model.nq != model.nv:
        raise ValueError(f"q, qd, qdd must be (T, {model.nv}) for this model, got {q.shape}, "
                         f"{qd.shape}, {qdd.shape}")
    data = mujoco.MjData(model)
    tau = np.empty_like(q)
    for t in range(q.shape[0]):
        data.qpos[:], data.qvel[:], data.qacc[:] = q[t], qd[t], qdd[t]
        mujoco.mj_inverse(model, data)
        tau[t] = data.qfrc_inverse
    return tau


def minimum_jerk(q0, q1, T: int, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-jerk move from q0 to q1 (each (n,) rad) over T steps of dt s, at rest at both ends:
    (q, q̇, q̈), each (T, n), sampled at t·dt for t = 0..T−1 (q1 is reached at (T−1)·dt)."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    if T < 2:
        raise ValueError(f"a move needs T ≥ 2 steps, got {T}")
    duration = (T - 1) * dt
    s = np.linspace(0.0, 1.0, T)[:, None]
    d = (q1 - q0)[None, :]
    q = q0 + d * (10 * s**3 - 15 * s**4 + 6 * s**5)
    qd = d * (30 * s**2 - 60 * s**3 + 30 * s**4) / duration
    qdd = d * (60 * s - 180 * s**2 + 120 * s**3) / duration**2
    return q, qd, qdd


def pd_tracking_controller(joint_names: Sequence[str], q_ref, kp, kd, effort, *, dt_ns: int,
                           start_ns: int = 0, qd_ref=None, qdd_ref=None,
                           model: mujoco.MjModel | None = None) -> LinearGaussianController:
    """PD tracking of q_ref (T, n) rad with gains kp (N·m/rad), kd (N·m·s/rad) (scalars or (n,)).

    qd_ref (T, n) defaults to finite differences of q_ref, qdd_ref to those of qd_ref. With a
    MuJoCo ``model`` the feed-forward û is inverse dynamics of the reference, otherwise zero; it
    is clamped to ±effort (n,) N·m.
    """
    q_ref = np.atleast_2d(np.asarray(q_ref, dtype=np.float64))
    T, n = q_ref.shape
    if len(joint_names) != n:
        raise ValueError(f"q_ref has {n} joints, joint_names {len(joint_names)}")
    dt = dt_ns * 1e-9
    if qd_ref is None:
        qd_ref = np.gradient(q_ref, dt, axis=0) if T > 1 else np.zeros_like(q_ref)
    qd_ref = np.asarray(qd_ref, dtype=np.float64)
    if model is None:
        u_hat = np.zeros((T, n))
    else:
        if qdd_ref is None:
            qdd_ref = np.gradient(qd_ref, dt, axis=0) if T > 1 else np.zeros_like(q_ref)
        u_hat = inverse_dynamics(model, q_ref, qd_ref, qdd_ref)
    effort = np.broadcast_to(np.asarray(effort, dtype=np.float64), (n,))
    u_hat = np.clip(u_hat, -effort, effort)
    gains = np.concatenate([-np.diag(np.broadcast_to(kp, (n,)).astype(float)),
                            -np.diag(np.broadcast_to(kd, (n,)).astype(float))], axis=1)
    return LinearGaussianController.feedback(
        np.concatenate([q_ref, qd_ref], axis=1), u_hat, np.broadcast_to(gains, (T, n, 2 * n)),
        dt_ns=dt_ns, start_ns=start_ns, joint_names=joint_names)


def hold_controller(joint_names: Sequence[str], position, kp, kd, effort, *, T: int, dt_ns: int,
                    start_ns: int = 0,
                    model: mujoco.MjModel | None = None) -> LinearGaussianController:
    """Hold ``position`` (n,) rad for T steps: PD with zero reference velocity, plus gravity
    compensation (inverse dynamics at rest) when a MuJoCo ``model`` is given."""
    q_ref = np.tile(np.asarray(position, dtype=np.float64), (T, 1))
    zeros = np.zeros_like(q_ref)
    return pd_tracking_controller(joint_names, q_ref, kp, kd, effort, dt_ns=dt_ns,
                                  start_ns=start_ns, qd_ref=zeros, qdd_ref=zeros, model=model)


def default_gains(robot: RobotDescription, joint_names: Sequence[str],
                  dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(kp, kd), each (n,), for PD tracking at period dt s: 0.4 and 0.6 of the stability caps of
    ``mbrl_ros.safety.robot_gain_caps`` (kp = 0.1·I/dt², kd = 0.3·I/dt)."""
    kp_max, kd_max = robot_gain_caps(robot, joint_names, dt)
    return 0.4 * kp_max, 0.6 * kd_max


def scripted_controller(kind: str, robot: RobotDescription, *, dt_ns: int, start_ns: int = 0,
                        position=None, goal=None, duration: float = 2.0,
                        hold_after: float = 1.0, kp=None, kd=None,
                        feedforward: bool = True) -> LinearGaussianController:
    """A ready-made controller for all joints of ``robot`` (robot order).

    ``kind`` "hold": hold ``position`` (default: the sim's home pose) for ``duration`` s.
    ``kind`` "pd": minimum-jerk move from ``position`` to ``goal`` in ``duration`` s, then hold
    ``goal`` for ``hold_after`` s. Gains default to ``default_gains``; ``feedforward``: inverse
    dynamics (gravity, inertia, damping) from the robot's MuJoCo model.
    """
    names = robot.joint_names
    n, dt = robot.n_joints, dt_ns * 1e-9
    q0 = home_position(robot) if position is None else np.asarray(position, dtype=np.float64)
    q1 = q0 if goal is None else np.asarray(goal, dtype=np.float64)
    for label, q in (("position", q0), ("goal", q1)):
        if q.shape != (n,):
            raise ValueError(f"{label} needs {n} values for {robot.name}, got {q.size}")
        if np.any(q < robot.limits.lower) or np.any(q > robot.limits.upper):
            raise ValueError(f"{label} {q.tolist()} is outside the joint limits of {robot.name}")
    default_kp, default_kd = default_gains(robot, names, dt)
    kp = default_kp if kp is None else kp
    kd = default_kd if kd is None else kd
    model = build_mujoco_model(robot, scene=None) if feedforward else None
    effort = robot.limits.effort
    steps = max(2, int(round(duration / dt)))
    if kind == "hold":
        return hold_controller(names, q0, kp, kd, effort, T=steps, dt_ns=dt_ns,
                               start_ns=start_ns, model=model)
    if kind != "pd":
        raise ValueError(f"unknown scripted controller '{kind}'; choose hold or pd")
    q, qd, qdd = minimum_jerk(q0, q1, steps, dt)
    move = pd_tracking_controller(names, q, kp, kd, effort, dt_ns=dt_ns, start_ns=start_ns,
                                  qd_ref=qd, qdd_ref=qdd, model=model)
    hold_steps = int(round(hold_after / dt))
    if hold_steps < 1:
        return move
    rest = hold_controller(names, q1, kp, kd, effort, T=hold_steps, dt_ns=dt_ns,
                           start_ns=move.end_ns, model=model)
    return concatenate([move, rest])
