"""Peg insertion as in guided policy search (Levine, Wagener, Abbeel 2015; cbfinn/gps's cost_fk).

Points on the peg's axis (offsets o_i (3,) m in the end-effector frame, e.g. its tip and its
base) have targets where they are when the peg sits fully inserted: p*_i = bottom + (o_tip,z −
o_i,z)·axis for a hole of floor centre ``bottom`` and outward ``axis``. Per step t = 1..T with
d_t² = Σ_i ‖p_i(q_t) − p*_i‖² (m², several points so that the peg's direction matters):
    ℓ(d²) = ½·w_l2·d² + w_log·log(d² + α),
weighted by the ramp r_t (GPS's RAMP_*: 'constant' 1, 'linear' t/T, 'quadratic' (t/T)², 'final'
0 before T) and ``terminal_weight`` at T, plus w_velocity·‖q̇_T‖² and the shared action and
joint-limit penalties (``terms.ArmTerms``). Success is measured by ``insertion_depth``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import least_squares

from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.tasks.checks import TaskError, nonnegative, point3
from mbrl_ros.tasks.insertion_scene import Hole
from mbrl_ros.tasks.terms import ArmTerms, l2_log, l2_log_weights

RAMPS = ("constant", "linear", "quadratic", "final")


def ramp_weights(option: str, T: int) -> np.ndarray:
    """GPS's time ramp (T,) for steps t = 1..T."""
    if option not in RAMPS:
        raise TaskError(f"ramp must be one of {RAMPS}, got {option!r}")
    s = np.arange(1, T + 1) / T
    return {
        "constant": np.ones(T),
        "linear": s,
        "quadratic": s**2,
        "final": (s == 1.0).astype(float),
    }[option]


def axis_points(points: dict, tip: str = "peg_tip") -> dict[str, np.ndarray]:
    """The peg points as offsets (3,) m; TaskError unless they lie on the end-effector z axis (the
    peg's axis) and include ``tip``."""
    out = {name: point3(f"peg point {name}", p) for name, p in points.items()}
    if tip not in out:
        raise TaskError(f"peg points need the tip '{tip}', got {sorted(out)}")
    off_axis = [name for name, p in out.items() if np.hypot(p[0], p[1]) > 1e-9]
    if off_axis:
        raise TaskError(f"peg points {off_axis} are off the peg's axis (end-effector z)")
    return out


def targets(points: dict[str, np.ndarray], hole: Hole, tip: str = "peg_tip") -> np.ndarray:
    """Targets (P, 3) m of the axis points (``points`` order) with the peg fully inserted."""
    return np.stack([hole.bottom + (points[tip][2] - p[2]) * hole.axis for p in points.values()])


class InsertionCost(ArmTerms):
    """cost(states (..., T+1, dx), actions (..., T, du)) → (...) for inserting the peg whose axis
    points ``points`` (name → offset (3,) m in the end-effector frame) into ``hole``."""

    target: torch.Tensor  # buffer (P, 3): the points' targets

    def __init__(
        self,
        robot: RobotDescription,
        points: dict,
        hole: Hole,
        *,
        w_l2: float = 1.0,
        w_log: float = 1.0,
        alpha: float = 1e-5,
        ramp: str = "constant",
        terminal_weight: float = 10.0,
        w_velocity: float = 0.0,
        w_action: float = 1e-3,
        w_limit: float = 1.0,
        limit_margin: float = 0.1,
        velocity_margin: float = 0.5,
        tip: str = "peg_tip",
        dtype: torch.dtype = torch.float64,
    ):
        super().__init__(
            robot,
            w_action=w_action,
            w_limit=w_limit,
            limit_margin=limit_margin,
            velocity_margin=velocity_margin,
            dtype=dtype,
        )
        self.points = axis_points(points, tip)
        self.tip = tip
        self.w_l2, self.w_log, self.alpha = l2_log_weights(w_l2, w_log, alpha)
        ramp_weights(ramp, 1)
        self.ramp = ramp
        self.terminal_weight = nonnegative("terminal_weight", terminal_weight)
        self.w_velocity = nonnegative("w_velocity", w_velocity)
        self.peg_fk = ForwardKinematics(
            robot, {name: (robot.ee_link, p) for name, p in self.points.items()}, dtype=dtype
        )
        self.register_buffer("target", torch.zeros(len(self.points), 3, dtype=dtype))
        self.set_hole(hole)

    def set_hole(self, hole: Hole) -> None:
        """Aim at ``hole`` (targets of the full insertion)."""
        self.hole = hole
        self.target.copy_(torch.as_tensor(targets(self.points, hole, self.tip)))

    def distance2(self, states: torch.Tensor) -> torch.Tensor:
        """Σ over the points of the squared distance to their targets (...) m², states (..., dx)."""
        p = self.peg_fk.positions(states[..., : self.n]).to(states.dtype)
        return ((p - self.target.to(states.dtype)) ** 2).sum((-1, -2))

    def position_terms(self, q: torch.Tensor) -> torch.Tensor:
        d2 = self.distance2(q[..., 1:, :])
        ell = l2_log(d2, self.w_l2, self.w_log, self.alpha)
        weights = torch.as_tensor(
            ramp_weights(self.ramp, d2.shape[-1]), dtype=d2.dtype, device=d2.device
        )
        weights[-1] *= self.terminal_weight
        return (ell * weights).sum(-1)

    def separable_terms(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        qd_T = states[..., -1, self.n : 2 * self.n]
        return self.w_velocity * (qd_T**2).sum(-1) + super().separable_terms(states, actions)

    def insertion_depth(self, states) -> np.ndarray:
        """``insertion_depth`` of the peg tip for states (..., dx) (array or tensor)."""
        q = torch.as_tensor(np.asarray(states)[..., : self.n])
        with torch.no_grad():
            tip = self.peg_fk.positions(q)[..., list(self.points).index(self.tip), :]
        return insertion_depth(tip.numpy(), self.hole)


def insertion_depth(tip, hole: Hole) -> np.ndarray:
    """How deep (...) m the peg tip (..., 3) m is in ``hole``: its distance below the opening
    along the axis, clipped to [0, depth], and 0 where the tip is not inside the hole's
    cross-section (beside the block)."""
    tip = np.asarray(tip, dtype=np.float64)
    local = (tip - hole.top) @ hole.rotation  # (..., 3) in the hole's frame
    inside = np.all(np.abs(local[..., :2]) <= hole.half_width, axis=-1)
    return np.where(inside, np.clip(-local[..., 2], 0.0, hole.depth), 0.0)


def peg_pose(
    robot: RobotDescription,
    points: dict,
    hole: Hole,
    q0,
    height: float = 0.0,
    offset=(0.0, 0.0, 0.0),
    tip: str = "peg_tip",
    tolerance: float = 1e-4,
) -> np.ndarray:
    """Joint angles (n,) rad within the limits that put the peg on the hole's axis with its tip
    ``height`` m above the hole's floor (0: fully inserted; depth: at the opening) shifted by
    ``offset`` (3,) m, by bounded least squares (dogbox) on the axis points from ``q0``.
    TaskError if it ends farther than ``tolerance`` m (root-sum-square over the points)."""
    points = axis_points(points, tip)
    fk = ForwardKinematics(robot, {name: (robot.ee_link, p) for name, p in points.items()})
    goal = targets(points, hole, tip) + height * hole.axis + point3("offset", offset)

    def residual(q):
        return (fk.positions(torch.as_tensor(q)).numpy() - goal).ravel()

    def jacobian(q):
        return torch.autograd.functional.jacobian(
            lambda q: fk.positions(q).reshape(-1), torch.as_tensor(q)
        ).numpy()

    lim = robot.limits
    q0 = np.clip(np.asarray(q0, dtype=np.float64), lim.lower + 1e-6, lim.upper - 1e-6)
    # dogbox: the residual is rank deficient (a round peg's roll is free), where 'trf' crawls.
    result = least_squares(
        residual,
        q0,
        jacobian,
        bounds=(lim.lower, lim.upper),
        method="dogbox",
        xtol=1e-12,
        ftol=1e-12,
    )
    miss = float(np.linalg.norm(result.fun))
    if miss > tolerance:
        raise TaskError(
            f"no joint angles put the peg {height} m above the floor of the hole at "
            f"{hole.top.tolist()} (inverse kinematics ends {miss:.4f} m away)"
        )
    return result.x
