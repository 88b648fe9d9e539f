"""End-effector trajectory following as in Nagabandi et al. (2018): stay on the path, move along it.

The path is a polyline of waypoints (M ≥ 2, 3) in m. Each predicted end-effector position p_t is
projected onto its nearest segment: distance d_t (smoothed as √(d² + ε²), ε = 1 mm, so the cost is
twice differentiable on the path) and arc length s_t of the projection. Cost:
    Σ_{t=1..T} w_distance·d_t − w_progress·(s_T − s_0)
plus the shared action and joint-limit penalties. Progress telescopes into per-step terms, so the
cost stays a sum over steps.
"""

from __future__ import annotations

import numpy as np
import torch

from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.tasks.checks import TaskError, nonnegative
from mbrl_ros.tasks.terms import ArmTerms

SMOOTHING_M = 1e-3


class TrackingCost(ArmTerms):
    """cost(states (..., T+1, dx), actions (..., T, du)) → (...) for the path ``waypoints``."""

    _start: torch.Tensor  # buffers: segment starts (S, 3), vectors (S, 3), squared lengths,
    _seg: torch.Tensor  # arc length at each start and lengths (S,)
    _len2: torch.Tensor
    _arc0: torch.Tensor
    _len: torch.Tensor

    def __init__(
        self,
        robot: RobotDescription,
        waypoints,
        *,
        w_distance: float = 10.0,
        w_progress: float = 5.0,
        w_action: float = 1e-3,
        w_limit: float = 1.0,
        limit_margin: float = 0.1,
        velocity_margin: float = 0.5,
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
        self.w_distance = nonnegative("w_distance", w_distance)
        self.w_progress = nonnegative("w_progress", w_progress)
        pts = np.asarray(waypoints, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
            raise TaskError(
                f"waypoints must be (M ≥ 2, 3) finite positions in m, got shape {pts.shape}"
            )
        seg = np.diff(pts, axis=0)
        length = np.linalg.norm(seg, axis=1)
        if np.any(length <= 1e-9):
            raise TaskError(
                f"consecutive waypoints must differ; segment "
                f"{int(np.argmin(length))} has zero length"
            )
        for name, value in (
            ("_start", pts[:-1]),
            ("_seg", seg),
            ("_len2", length**2),
            ("_arc0", np.concatenate([[0.0], np.cumsum(length)[:-1]])),
            ("_len", length),
        ):
            self.register_buffer(name, torch.tensor(value, dtype=dtype))

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance to the path (...) (smoothed, m) and arc length of the nearest point (...)."""
        rel = points[..., None, :] - self._start  # (..., S, 3)
        lam = torch.clamp((rel * self._seg).sum(-1) / self._len2, 0.0, 1.0)
        d2 = ((rel - lam[..., None] * self._seg) ** 2).sum(-1)
        nearest = torch.argmin(d2, dim=-1, keepdim=True)
        d2 = torch.gather(d2, -1, nearest)[..., 0]
        arc = torch.gather(self._arc0 + lam * self._len, -1, nearest)[..., 0]
        return torch.sqrt(d2 + SMOOTHING_M**2), arc

    def position_terms(self, q: torch.Tensor) -> torch.Tensor:
        dist, arc = self.project(self.ee(q))
        return self.w_distance * dist[..., 1:].sum(-1) - self.w_progress * (
            arc[..., -1] - arc[..., 0]
        )
