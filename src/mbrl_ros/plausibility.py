"""Plausibility of what arrives from outside (pure core): a well-formed message can still be a lie.

``StateGate`` bounds a joint state by the robot's URDF limits and its stamp by the receiver's
clock; ``TargetGate`` bounds an end-effector target by the arm's reach. Both raise
``MessageError`` naming what is implausible, so callers treat them like malformed messages.

Why bounds beyond "finite": a joint state of 1e308 rad/s is finite but overflows any torque law
computed from it, and one state stamped 1000 s ahead of the clock would make every real state
after it look old.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mbrl_ros.msgconv import JointSample, MessageError

CONTINUOUS_BOUND = 1e4   # rad: the most a continuous joint's position may read (≈ 1600 turns)


@dataclass(frozen=True)
class StateGate:
    """Bounds on joint states (n joints, in the order of the samples checked).

    Positions within [lower − position_slack, upper + position_slack] rad (±CONTINUOUS_BOUND for
    continuous joints), |velocity| ≤ velocity_factor · velocity limit (rad/s), stamp at most
    ``max_ahead_ns`` ahead of the receiver's clock (0 = not checked)."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    position_slack: float = 0.5
    velocity_factor: float = 10.0
    max_ahead_ns: int = 500_000_000

    @classmethod
    def for_joints(cls, robot, joint_names: Sequence[str], **settings) -> "StateGate":
        """The gate for ``joint_names`` of ``robot`` (a RobotDescription)."""
        idx = robot.index_of(list(joint_names))
        lim = robot.limits
        lower = np.where(np.isfinite(lim.lower[idx]), lim.lower[idx], -CONTINUOUS_BOUND)
        upper = np.where(np.isfinite(lim.upper[idx]), lim.upper[idx], CONTINUOUS_BOUND)
        return cls(lower, upper, np.asarray(lim.velocity[idx], float), **settings)

    def check(self, s: JointSample, now_ns: int | None = None) -> None:
        """MessageError if ``s`` is implausible; ``now_ns``: the receiver's clock (None or 0,
        a sim-time clock before its first /clock message, skips the stamp check)."""
        q, qd = s.position, s.velocity
        low, high = self.lower - self.position_slack, self.upper + self.position_slack
        bad = np.flatnonzero((q < low) | (q > high))
        if bad.size:
            i = int(bad[0])
            raise MessageError(f"joint {i} position {q[i]:.6g} rad is beyond its limits "
                               f"[{self.lower[i]:.4g}, {self.upper[i]:.4g}] by more than "
                               f"{self.position_slack:g} rad")
        fast = np.flatnonzero(np.abs(qd) > self.velocity_factor * self.velocity)
        if fast.size:
            i = int(fast[0])
            raise MessageError(f"joint {i} velocity {qd[i]:.6g} rad/s is over "
                               f"{self.velocity_factor:g}× its limit {self.velocity[i]:.4g} rad/s")
        if self.max_ahead_ns and now_ns and s.stamp_ns - now_ns > self.max_ahead_ns:
            raise MessageError(f"stamp {s.stamp_ns * 1e-9:.6f} s is "
                               f"{(s.stamp_ns - now_ns) * 1e-9:.3f} s ahead of this node's clock "
                               f"({now_ns * 1e-9:.6f} s; allowed {self.max_ahead_ns * 1e-9:g} s): "
                               "are the clocks synchronised (use_sim_time)?")


@dataclass(frozen=True)
class TargetGate:
    """End-effector targets (3,) m in the base frame within ``max_distance`` of the base."""

    max_distance: float

    @classmethod
    def for_robot(cls, robot, factor: float = 2.0) -> "TargetGate":
        """Targets within ``factor`` × the arm's reach (the summed lengths of its chain)."""
        return cls(factor * robot.reach())

    def check(self, target: np.ndarray) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise MessageError(f"target {target.tolist()} is not 3 finite coordinates")
        distance = float(np.linalg.norm(target))
        if distance > self.max_distance:
            raise MessageError(f"target {np.round(target, 4).tolist()} m is {distance:.3g} m from "
                               f"the base, beyond {self.max_distance:.3g} m (twice the arm's "
                               "reach)")
        return target
