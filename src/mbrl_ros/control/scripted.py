"""Hand-written controllers, so the executor can drive the arm before any learning exists.

Both are linear-Gaussian controllers of the ``"q,qd"`` layout: PD tracking of a reference joint
trajectory is x̂_t = [q_ref_t, q̇_ref_t], K_t = [−Kp, −Kd], k_t = 0, û_t = a feed-forward torque
(inverse dynamics of the reference from MuJoCo's ``mj_inverse`` when a model is given, which
compensates gravity, inertia and joint damping), clamped to the effort limits. A hold controller is
PD tracking of a constant pose with a constant feed-forward (the gravity torque g(q)).
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

from mbrl_ros.control.controller import MAX_STEPS, LinearGaussianController, concatenate
from mbrl_ros.robot.description import RobotDescription, home_position
from mbrl_ros.robot.gains import robot_gain_caps
from mbrl_ros.robot.gravity import GravityModel


def inverse_dynamics(model: mujoco.MjModel, q, qd, qdd) -> np.ndarray:
    """(T, n) joint torques (N·m) that produce accelerations qdd at states (q, qd), each (T, n),
    for a MuJoCo model whose qpos/qvel are exactly the n joints (``build_mujoco_model``)."""
    q, qd, qdd = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (q, qd, qdd))
    if not (q.shape == qd.shape == qdd.shape) or q.shape[1] != model.nv or model.nq != model.nv:
        raise ValueError(
            f"q, qd, qdd must be (T, {model.nv}) for this model, got {q.shape}, "
            f"{qd.shape}, {qdd.shape}"
        )
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


def pd_tracking_controller(
    joint_names: Sequence[str],
    q_ref,
    kp,
    kd,
    effort,
    *,
    dt_ns: int,
    start_ns: int = 0,
    qd_ref=None,
    qdd_ref=None,
    model: mujoco.MjModel | None = None,
) -> LinearGaussianController:
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
    return _pd_controller(joint_names, q_ref, qd_ref, u_hat, kp, kd, effort, dt_ns, start_ns)


def hold_controller(
    joint_names: Sequence[str],
    position,
    kp,
    kd,
    effort,
    *,
    T: int,
    dt_ns: int,
    start_ns: int = 0,
    u_hold=None,
) -> LinearGaussianController:
    """Hold ``position`` (n,) rad for T steps: PD (kp N·m/rad, kd N·m·s/rad, scalars or (n,))
    with zero reference velocity plus the constant feed-forward ``u_hold`` (n,) N·m (e.g. the
    gravity torque ``mbrl_ros.robot.gravity.GravityModel.torque``; None = zero), clamped to
    ±effort."""
    q_ref = np.tile(np.asarray(position, dtype=np.float64), (T, 1))
    u_hat = (
        np.zeros_like(q_ref)
        if u_hold is None
        else np.tile(np.asarray(u_hold, dtype=np.float64), (T, 1))
    )
    return _pd_controller(
        joint_names, q_ref, np.zeros_like(q_ref), u_hat, kp, kd, effort, dt_ns, start_ns
    )


def _pd_controller(
    joint_names, q_ref, qd_ref, u_hat, kp, kd, effort, dt_ns: int, start_ns: int
) -> LinearGaussianController:
    """x̂ = [q_ref, qd_ref], û = u_hat clamped to ±effort, K = [−diag(kp), −diag(kd)]; arrays
    (T, n), gains and effort scalars or (n,)."""
    T, n = q_ref.shape
    effort = np.broadcast_to(np.asarray(effort, dtype=np.float64), (n,))
    gains = np.concatenate(
        [
            -np.diag(np.broadcast_to(kp, (n,)).astype(float)),
            -np.diag(np.broadcast_to(kd, (n,)).astype(float)),
        ],
        axis=1,
    )
    return LinearGaussianController.feedback(
        np.concatenate([q_ref, qd_ref], axis=1),
        np.clip(u_hat, -effort, effort),
        np.broadcast_to(gains, (T, n, 2 * n)),
        dt_ns=dt_ns,
        start_ns=start_ns,
        joint_names=joint_names,
    )


DEFAULT_GAIN_FRACTIONS = (0.4, 0.6)  # of the stability caps: kp = 0.1·I/dt², kd = 0.3·I/dt


def default_gains(
    robot: RobotDescription, joint_names: Sequence[str], dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """(kp, kd), each (n,), for PD tracking at period dt s: DEFAULT_GAIN_FRACTIONS of the
    stability caps of ``mbrl_ros.robot.gains.robot_gain_caps``."""
    kp_max, kd_max = robot_gain_caps(robot, joint_names, dt)
    return DEFAULT_GAIN_FRACTIONS[0] * kp_max, DEFAULT_GAIN_FRACTIONS[1] * kd_max


def _steps(kind: str, duration: float, hold_after: float, dt: float) -> tuple[int, int]:
    """(move or hold steps, pd's hold steps) of a scripted controller; ValueError for times that
    are not finite and positive (hold_after: ≥ 0) or more than MAX_STEPS steps in all."""
    if not (np.isfinite(duration) and duration > 0 and np.isfinite(hold_after) and hold_after >= 0):
        raise ValueError(
            f"duration {duration:g} s must be > 0 and hold_after {hold_after:g} s ≥ 0, both finite"
        )
    what, total = (
        ("duration + hold_after", duration + hold_after) if kind == "pd" else ("duration", duration)
    )
    if total / dt > MAX_STEPS:
        raise ValueError(
            f"{what} = {total:g} s at dt {dt:g} s is {total / dt:.3g} steps; a "
            f"controller has at most {MAX_STEPS} ({MAX_STEPS * dt:g} s at this dt)"
        )
    return max(2, int(round(duration / dt))), (int(round(hold_after / dt)) if kind == "pd" else 0)


def _checked_gains(label: str, unit: str, value, cap: np.ndarray, names, dt: float) -> np.ndarray:
    """``value`` (1 or n numbers) as (n,); ValueError unless each is in [0, cap], the largest gain
    that is stable at period dt (``mbrl_ros.robot.gains.robot_gain_caps``)."""
    g = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if g.ndim != 1 or g.size not in (1, len(names)):
        raise ValueError(f"{label} needs 1 or {len(names)} values, got {g.size}")
    g = np.broadcast_to(g, (len(names),))
    bad = ~(np.isfinite(g) & (g >= 0) & (g <= cap))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{label} {g[i]:g} {unit} of joint {names[i]} is outside [0, "
            f"{cap[i]:.4g}], the stable range at dt {dt:g} s (maxima: "
            f"{', '.join(f'{c:.4g}' for c in cap)})"
        )
    return g


def scripted_controller(
    kind: str,
    robot: RobotDescription,
    *,
    dt_ns: int,
    start_ns: int = 0,
    position=None,
    goal=None,
    duration: float = 2.0,
    hold_after: float = 1.0,
    kp=None,
    kd=None,
    feedforward: bool = True,
) -> LinearGaussianController:
    """A ready-made controller for all joints of ``robot`` (robot order).

    ``kind`` "hold": hold ``position`` (default: the sim's home pose) for ``duration`` s.
    ``kind`` "pd": minimum-jerk move from ``position`` to ``goal`` in ``duration`` s, then hold
    ``goal`` for ``hold_after`` s. Gains default to ``default_gains`` and may be at most the
    stability caps of ``mbrl_ros.robot.gains.robot_gain_caps``; ``feedforward``: inverse dynamics
    (gravity, inertia, damping) from the robot's MuJoCo model. Everything is checked before any
    array is built (ValueError).
    """
    if kind not in ("hold", "pd"):
        raise ValueError(f"unknown scripted controller '{kind}'; choose hold or pd")
    if isinstance(dt_ns, bool) or int(dt_ns) != dt_ns or dt_ns < 1:
        raise ValueError(f"dt_ns must be a positive integer, got {dt_ns!r}")
    names = robot.joint_names
    n, dt = robot.n_joints, dt_ns * 1e-9
    steps, hold_steps = _steps(kind, duration, hold_after, dt)
    q0 = home_position(robot) if position is None else np.asarray(position, dtype=np.float64)
    q1 = q0 if goal is None else np.asarray(goal, dtype=np.float64)
    for label, q in (("position", q0), ("goal", q1)):
        if q.shape != (n,):
            raise ValueError(f"{label} needs {n} values for {robot.name}, got {q.size}")
        if (
            not np.all(np.isfinite(q))
            or np.any(q < robot.limits.lower)
            or np.any(q > robot.limits.upper)
        ):
            raise ValueError(f"{label} {q.tolist()} is outside the joint limits of {robot.name}")
    kp_max, kd_max = robot_gain_caps(robot, names, dt)
    kp = (
        DEFAULT_GAIN_FRACTIONS[0] * kp_max
        if kp is None
        else _checked_gains("kp", "N·m/rad", kp, kp_max, names, dt)
    )
    kd = (
        DEFAULT_GAIN_FRACTIONS[1] * kd_max
        if kd is None
        else _checked_gains("kd", "N·m·s/rad", kd, kd_max, names, dt)
    )
    gravity = GravityModel(robot) if feedforward else None
    effort = robot.limits.effort
    if kind == "hold":
        return hold_controller(
            names,
            q0,
            kp,
            kd,
            effort,
            T=steps,
            dt_ns=dt_ns,
            start_ns=start_ns,
            u_hold=None if gravity is None else gravity.torque(q0),
        )
    q, qd, qdd = minimum_jerk(q0, q1, steps, dt)
    move = pd_tracking_controller(
        names,
        q,
        kp,
        kd,
        effort,
        dt_ns=dt_ns,
        start_ns=start_ns,
        qd_ref=qd,
        qdd_ref=qdd,
        model=None if gravity is None else gravity.model,
    )
    if hold_steps < 1:
        return move
    rest = hold_controller(
        names,
        q1,
        kp,
        kd,
        effort,
        T=hold_steps,
        dt_ns=dt_ns,
        start_ns=move.end_ns,
        u_hold=None if gravity is None else gravity.torque(q1),
    )
    return concatenate([move, rest])
