"""Homing without a reset service (pure core): a smooth move to a start pose and settle detection.

``homing_controller`` builds the LinearGaussianController the episode manager publishes on
``/mbrl/homing_controller``: a minimum-jerk joint trajectory from ``q_from`` to ``q_to`` tracked
by PD gains (K = −[diag kp, diag kd] on x − x̂, x = [q, q̇]), then a hold at ``q_to``; feedforward
zero (a robot that does not compensate gravity gets g(q) from the executor's safety layer).

* min-jerk: q(t) = q0 + Δ·(10s³ − 15s⁴ + 6s⁵), s = t/T: zero velocity and acceleration at both
  ends, peak speed 15/8·|Δ|/T at s = ½.
* duration T: the shortest whole number of control periods (at least ``min_duration``) that keeps
  every joint's peak speed within ``speed_fraction`` of its URDF velocity limit.
* gains: ``gain_fraction`` of ``gains.robot_gain_caps`` (stable for the smallest effective
  inertia at this control period), and below the gain that ``plausibility.ControllerBounds``
  refuses (a joint's effort limit reached for a state error of ``min_saturating_error``).

``SettleDetector`` says when a stream of joint states (stamps in ns, any rate) has stayed within
position and velocity tolerances of the goal for a dwell time, or that it timed out, naming the
joints that did not settle and by how much.

``HomingSettings``: the homing and settling settings of a node that homes the arm between
episodes or samples (``episode_manager``, ``gps_trainer`` declare them as parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.common.settings import Settings, setting
from mbrl_ros.control.controller import MAX_STEPS, LinearGaussianController
from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.robot.gains import robot_gain_caps

MIN_SATURATING_ERROR = 1e-3  # rad or rad/s: ControllerBounds' default


def min_jerk(q_from, q_to, duration: float, t) -> tuple[np.ndarray, np.ndarray]:
    """(q, q̇) of the minimum-jerk move from ``q_from`` to ``q_to`` (n,) rad in ``duration`` s at
    times ``t`` (m,) s (clipped to [0, duration]): each (m, n), rad and rad/s."""
    q0, q1 = np.asarray(q_from, dtype=np.float64), np.asarray(q_to, dtype=np.float64)
    s = np.clip(np.asarray(t, dtype=np.float64) / duration, 0.0, 1.0)[:, None]
    delta = q1 - q0
    q = q0 + delta * (10 * s**3 - 15 * s**4 + 6 * s**5)
    qd = delta / duration * (30 * s**2 - 60 * s**3 + 30 * s**4)
    return q, qd


def homing_gains(
    robot: RobotDescription,
    joint_names: Sequence[str],
    dt: float,
    gain_fraction: float = 0.5,
    min_saturating_error: float = MIN_SATURATING_ERROR,
) -> tuple[np.ndarray, np.ndarray]:
    """(kp (n,) N·m/rad, kd (n,) N·m·s/rad) for ``joint_names`` at control period ``dt`` s."""
    if not 0 < gain_fraction <= 1:
        raise ValueError(f"gain_fraction must be in (0, 1], got {gain_fraction}")
    kp_cap, kd_cap = robot_gain_caps(robot, joint_names, dt)
    bound = robot.limits.effort[robot.index_of(list(joint_names))] / min_saturating_error
    return (np.minimum(gain_fraction * kp_cap, bound), np.minimum(gain_fraction * kd_cap, bound))


def homing_controller(
    q_from,
    q_to,
    start_ns: int,
    dt_ns: int,
    *,
    robot: RobotDescription,
    joint_names: Sequence[str] | None = None,
    speed_fraction: float = 0.2,
    min_duration: float = 0.5,
    hold: float = 2.0,
    gains: tuple[np.ndarray, np.ndarray] | None = None,
    gain_fraction: float = 0.5,
) -> LinearGaussianController:
    """The homing controller from ``q_from`` to ``q_to`` (n,) rad in ``joint_names`` order
    (default: the robot's) starting at ``start_ns``, steps of ``dt_ns``: the min-jerk move, then
    ``hold`` s at ``q_to``. ``gains``: (kp, kd) (n,) to use instead of ``homing_gains`` (which
    builds a MuJoCo model: pass them when homing often). ValueError naming what is wrong (a goal
    beyond the joint limits, non-finite poses, a move too long for one controller)."""
    names = list(joint_names) if joint_names is not None else list(robot.joint_names)
    idx = robot.index_of(names)
    n = len(names)
    q0, q1 = (np.asarray(q, dtype=np.float64) for q in (q_from, q_to))
    if (
        q0.shape != (n,)
        or q1.shape != (n,)
        or not (np.isfinite(q0).all() and np.isfinite(q1).all())
    ):
        raise ValueError(
            f"q_from and q_to must be {n} finite joint positions, got "
            f"{q0.tolist()} and {q1.tolist()}"
        )
    lower, upper = robot.limits.lower[idx], robot.limits.upper[idx]
    outside = [
        f"{names[i]} {q1[i]:.4g} rad not in [{lower[i]:.4g}, {upper[i]:.4g}]"
        for i in np.flatnonzero((q1 < lower) | (q1 > upper))
    ]
    if outside:
        raise ValueError(f"homing goal beyond the joint limits: {'; '.join(outside)}")
    if not (0 < speed_fraction <= 1 and min_duration >= 0 and hold >= 0):
        raise ValueError(
            f"need 0 < speed_fraction ≤ 1, min_duration ≥ 0, hold ≥ 0; got "
            f"{speed_fraction}, {min_duration}, {hold}"
        )
    dt = dt_ns * 1e-9
    speed = speed_fraction * robot.limits.velocity[idx]
    duration = max(min_duration, float(np.max(15 / 8 * np.abs(q1 - q0) / speed)), dt)
    move = math.ceil(duration / dt - 1e-9)
    steps = move + math.ceil(hold / dt - 1e-9)
    if steps > MAX_STEPS:
        raise ValueError(
            f"homing takes {steps} steps of {dt:g} s, more than {MAX_STEPS} in one "
            f"controller: lower the distance or the hold, or raise speed_fraction"
        )
    q, qd = min_jerk(q0, q1, move * dt, np.arange(steps) * dt)
    kp, kd = gains if gains is not None else homing_gains(robot, names, dt, gain_fraction)
    K = np.zeros((steps, n, 2 * n))
    K[:, :, :n] = -np.diag(kp)
    K[:, :, n:] = -np.diag(kd)
    return LinearGaussianController.feedback(
        np.hstack([q, qd]),
        np.zeros((steps, n)),
        K,
        dt_ns=dt_ns,
        start_ns=start_ns,
        joint_names=names,
    )


@dataclass(frozen=True)
class HomingSettings(Settings):
    """How the arm is homed to a start pose and when it counts as settled there."""

    homing_speed: float = setting(
        0.3, "homing: peak joint speed, fraction of the velocity limits", (0.01, 1.0)
    )
    homing_period: float = setting(
        0.01,
        "homing: time step of the homing controller and the period its "
        "PD gains are stable at (s): not shorter than the robot's joint-state period",
        (1e-4, 1.0),
    )
    settle_position_tolerance: float = setting(
        0.02, "homing: settled within this of the start pose (rad)", (1e-4, 1.0)
    )
    settle_velocity_tolerance: float = setting(
        0.05, "homing, service: settled below this speed (rad/s)", (1e-4, 10.0)
    )
    settle_time: float = setting(
        0.2, "homing, service: settled for this long (s of stamps)", (0.0, 60.0)
    )
    homing_timeout: float = setting(
        20.0,
        "homing, service: the run fails if the arm has not settled after this long (s of stamps)",
        (0.1, 3600.0),
    )
    homing_retries: int = setting(
        2,
        "homing: homings from where the arm is after one did not settle, before the run fails",
        (0, 100),
    )

    def settle_detector(self, goal, joint_names: Sequence[str] | None = None) -> SettleDetector:
        """A fresh SettleDetector for ``goal`` (n,) rad with these tolerances and time-out."""
        return SettleDetector(
            goal,
            self.settle_position_tolerance,
            self.settle_velocity_tolerance,
            self.settle_time,
            self.homing_timeout,
            joint_names,
        )


class SettleDetector:
    """Settled once |q − q_goal| ≤ ``position_tol`` (rad) and |q̇| ≤ ``velocity_tol`` (rad/s) on
    every joint for ``dwell`` s of stamps; timed out when not settled ``timeout`` s after the
    first state. Tolerances scalars or (n,); ``joint_names`` name joints in ``message``."""

    def __init__(
        self,
        q_goal,
        position_tol,
        velocity_tol,
        dwell: float,
        timeout: float,
        joint_names: Sequence[str] | None = None,
    ):
        self.goal = np.asarray(q_goal, dtype=np.float64)
        n = self.goal.shape[0]
        self.position_tol = np.broadcast_to(np.asarray(position_tol, float), (n,))
        self.velocity_tol = np.broadcast_to(np.asarray(velocity_tol, float), (n,))
        if not (
            np.all(self.position_tol > 0)
            and np.all(self.velocity_tol > 0)
            and dwell >= 0
            and timeout > 0
        ):
            raise ValueError("tolerances and the timeout must be positive and dwell ≥ 0")
        self.names = (
            list(joint_names) if joint_names is not None else [f"joint {i}" for i in range(n)]
        )
        self.dwell_ns, self.timeout_ns = seconds_to_ns(dwell), seconds_to_ns(timeout)
        self.start_ns: int | None = None
        self.inside_since: int | None = None
        self.last_stamp: int | None = None
        self.error = np.full(n, np.inf)  # |q − goal| of the last state (rad)
        self.speed = np.full(n, np.inf)  # |q̇| of the last state (rad/s)
        self.settled = False
        self.timed_out = False

    def update(self, stamp_ns: int, q, qd) -> bool:
        """Take the joint state at ``stamp_ns``; whether settled. A stamp that goes back is
        ignored; so is everything after settling or timing out."""
        if (
            self.settled
            or self.timed_out
            or (self.last_stamp is not None and stamp_ns <= self.last_stamp)
        ):
            return self.settled
        self.last_stamp = stamp_ns
        if self.start_ns is None:
            self.start_ns = stamp_ns
        self.error = np.abs(np.asarray(q, dtype=np.float64) - self.goal)
        self.speed = np.abs(np.asarray(qd, dtype=np.float64))
        inside = bool(
            np.all(self.error <= self.position_tol) and np.all(self.speed <= self.velocity_tol)
        )
        if not inside:
            self.inside_since = None
        elif self.inside_since is None:
            self.inside_since = stamp_ns
        if self.inside_since is not None and stamp_ns - self.inside_since >= self.dwell_ns:
            self.settled = True
        elif stamp_ns - self.start_ns >= self.timeout_ns:
            self.timed_out = True
        return self.settled

    @property
    def message(self) -> str:
        """What the detector says: settled, still settling, or what did not settle."""
        if self.settled and self.last_stamp is not None:  # (settling takes a stamped state)
            return (
                f"settled at {self.last_stamp * 1e-9:.3f} s (within "
                f"{self.position_tol.max():g} rad, {self.velocity_tol.max():g} rad/s)"
            )
        off = [
            f"{self.names[i]} {self.error[i]:.4g} rad from its goal (tolerance "
            f"{self.position_tol[i]:g})"
            for i in np.flatnonzero(self.error > self.position_tol)
        ]
        fast = np.flatnonzero(self.speed > self.velocity_tol)
        off += [
            f"{self.names[i]} moving at {self.speed[i]:.4g} rad/s (tolerance "
            f"{self.velocity_tol[i]:g})"
            for i in fast
        ]
        if self.timed_out:
            return f"homing did not settle within {self.timeout_ns * 1e-9:g} s: " + (
                "; ".join(off) or "not for the dwell time"
            )
        return "settling" + (f": {'; '.join(off)}" if off else "")
