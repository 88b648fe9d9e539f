"""Plausibility of what arrives from outside (pure core): a well-formed message can still be a lie.

``StateGate`` bounds a joint state by the robot's URDF limits and its stamp by the receiver's
clock; ``TargetGate`` bounds an end-effector target by the arm's reach. Both raise
``MessageError`` naming what is implausible, so callers treat them like malformed messages.

Why bounds beyond "finite": a joint state of 1e308 rad/s is finite but overflows any torque law
computed from it, and one state stamped 1000 s ahead of the clock would make every real state
after it look old.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mbrl_ros.common.msgconv import JointSample, MessageError

CONTINUOUS_BOUND = 1e4  # rad: the most a continuous joint's position may read (≈ 1600 turns)


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
    velocity_factor: float = 100.0  # a simulated arm falling freely reaches ~12× its rating
    max_ahead_ns: int = 500_000_000

    @classmethod
    def for_joints(cls, robot, joint_names: Sequence[str], **settings) -> StateGate:
        """The gate for ``joint_names`` of ``robot`` (a RobotDescription)."""
        idx = robot.index_of(list(joint_names))
        lim = robot.limits
        lower = np.where(np.isfinite(lim.lower[idx]), lim.lower[idx], -CONTINUOUS_BOUND)
        upper = np.where(np.isfinite(lim.upper[idx]), lim.upper[idx], CONTINUOUS_BOUND)
        return cls(lower, upper, np.asarray(lim.velocity[idx], float), **settings)

    def problem(self, q: np.ndarray, qd: np.ndarray) -> str | None:
        """What is implausible about positions ``q`` and velocities ``qd`` (..., n) (the first
        offending joint, and the row when batched), or None."""
        q, qd = np.asarray(q, dtype=np.float64), np.asarray(qd, dtype=np.float64)
        bad_q, bad_qd = self._outside(q, qd)
        for bad, text in (
            (
                bad_q,
                lambda i, at: (
                    f"joint {i} position {q[at]:.6g} rad is beyond its limits "
                    f"[{self.lower[i]:.4g}, {self.upper[i]:.4g}] by more than "
                    f"{self.position_slack:g} rad"
                ),
            ),
            (
                bad_qd,
                lambda i, at: (
                    f"joint {i} velocity {qd[at]:.6g} rad/s is over {self.velocity_factor:g}× "
                    f"its limit {self.velocity[i]:.4g} rad/s"
                ),
            ),
        ):
            where = np.argwhere(bad)
            if where.size:
                at = tuple(int(v) for v in where[0])
                row = f" (row {at[0]})" if len(at) > 1 else ""
                return text(at[-1], at) + row
        return None

    def _outside(self, q: np.ndarray, qd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks (..., n) of positions beyond the limits ± slack and of speeds over the cap
        (NaN counts as outside)."""
        low, high = self.lower - self.position_slack, self.upper + self.position_slack
        return ~((q >= low) & (q <= high)), ~(np.abs(qd) <= self.velocity_factor * self.velocity)

    def first_implausible(self, q: np.ndarray, qd: np.ndarray) -> int | None:
        """Index of the first row of q, qd (T, n) that ``problem`` would name, or None."""
        bad_q, bad_qd = self._outside(np.asarray(q, float), np.asarray(qd, float))
        rows = np.flatnonzero(bad_q.any(axis=-1) | bad_qd.any(axis=-1))
        return int(rows[0]) if rows.size else None

    def check(self, s: JointSample, now_ns: int | None = None) -> None:
        """MessageError if ``s`` is implausible; ``now_ns``: the receiver's clock (None or 0,
        a sim-time clock before its first /clock message, skips the stamp check)."""
        problem = self.problem(s.position, s.velocity)
        if problem:
            raise MessageError(problem)
        if self.max_ahead_ns and now_ns and s.stamp_ns - now_ns > self.max_ahead_ns:
            raise MessageError(
                f"stamp {s.stamp_ns * 1e-9:.6f} s is "
                f"{(s.stamp_ns - now_ns) * 1e-9:.3f} s ahead of this node's clock "
                f"({now_ns * 1e-9:.6f} s; allowed {self.max_ahead_ns * 1e-9:g} s): "
                "are the clocks synchronised (use_sim_time)?"
            )


@dataclass(frozen=True)
class TargetGate:
    """End-effector targets (3,) m in the base frame within ``max_distance`` of the base."""

    max_distance: float

    @classmethod
    def for_robot(cls, robot, factor: float = 2.0) -> TargetGate:
        """Targets within ``factor`` × the arm's reach (the summed lengths of its chain)."""
        return cls(factor * robot.reach())

    def check(self, target: Sequence[float] | np.ndarray) -> np.ndarray:
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise MessageError(f"target {target.tolist()} is not 3 finite coordinates")
        distance = float(np.linalg.norm(target))
        if distance > self.max_distance:
            raise MessageError(
                f"target {np.round(target, 4).tolist()} m is {distance:.3g} m from "
                f"the base, beyond {self.max_distance:.3g} m (twice the arm's "
                "reach)"
            )
        return target


@dataclass(frozen=True)
class ControllerBounds:
    """What a controller may ask of an arm with effort limits ``effort`` (n,) N·m whose states
    ``gate`` bounds, for state layout [q, q̇]:

    * feedforward |û_t + k_t| ≤ ``max_feedforward_ratio`` · effort per joint,
    * feedback: no gain that reaches a joint's effort limit for a state error smaller than
      ``min_saturating_error`` (rad or rad/s): |K_t[i, j]| ≤ effort_i / min_saturating_error,
    * exploration noise: √Σ_t[i, i] ≤ effort_i,
    * nominal states x̂_t within the gate's position and velocity bounds.

    A controller beyond these would be clamped at the limits (bang-bang) by the safety layer,
    so it is refused instead."""

    effort: np.ndarray
    gate: StateGate
    max_feedforward_ratio: float = 2.0
    min_saturating_error: float = 1e-3

    def check(self, c) -> None:
        """MessageError naming the first step and joint beyond a bound of controller ``c``."""
        n = len(self.effort)
        if c.du != n or c.dx != 2 * n:
            raise MessageError(
                f"controller has du = {c.du}, dx = {c.dx}; the arm needs {n} and {2 * n}"
            )
        checks = (
            (
                "feedforward û + k",
                np.abs(c.u_hat + c.k),
                self.max_feedforward_ratio * self.effort,
                "N·m",
            ),
            (
                "feedback gain K",
                np.abs(c.K).max(axis=2),
                self.effort / self.min_saturating_error,
                "N·m per rad or rad/s",
            ),
            (
                "noise std",
                np.sqrt(np.maximum(np.diagonal(c.cov, axis1=1, axis2=2), 0.0)),
                self.effort,
                "N·m",
            ),
        )
        for what, value, bound, unit in checks:
            over = np.argwhere(value > bound)
            if over.size:
                t, i = (int(v) for v in over[0])
                raise MessageError(
                    f"controller {what} of joint {i} at step {t} is "
                    f"{value[t, i]:.4g} {unit}, over the bound {bound[i]:.4g}"
                )
        problem = self.gate.problem(c.x_hat[:, :n], c.x_hat[:, n:])
        if problem:
            raise MessageError(f"controller nominal state x̂: {problem.replace('row', 'step')}")
