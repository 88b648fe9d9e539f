"""End-effector reach: guided policy search's distance cost plus action and joint-limit terms.

Per step t = 1..T with d_t = ‖ee(q_t) − target‖ (m):
    ℓ(d) = ½·w_l2·d² + w_log·log(d² + α),
the last step weighted by ``terminal_weight`` (Levine et al.: the l2 term pulls from far, the log
term sharpens precision near the target). Plus optional velocity terms: w_velocity·‖q̇_T‖² at the
end (arrive at rest) and w_speed·Σ_{t=1..T} ‖q̇_t‖² along the way (rad²/s²: damps the joints the
target does not constrain, such as a wrist a 3-D target leaves free, which a plan from a young
model otherwise swings for a sliver of the log term), and the shared action and joint-limit
penalties (``terms.ArmTerms``).
"""

from __future__ import annotations

import torch

from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.tasks.terms import ArmTerms, l2_log, l2_log_weights, nonnegative, point3


class ReachCost(ArmTerms):
    """cost(states (..., T+1, dx), actions (..., T, du)) → (...). ``target`` (3,) m in the base
    frame, changed with ``set_target``."""

    target: torch.Tensor  # buffer (3,)

    def __init__(
        self,
        robot: RobotDescription,
        target=(0.5, 0.0, 0.5),
        *,
        w_l2: float = 1.0,
        w_log: float = 1.0,
        alpha: float = 1e-4,
        terminal_weight: float = 10.0,
        w_velocity: float = 0.0,
        w_speed: float = 0.0,
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
        self.w_l2, self.w_log, self.alpha = l2_log_weights(w_l2, w_log, alpha)
        self.terminal_weight = nonnegative("terminal_weight", terminal_weight)
        self.w_velocity = nonnegative("w_velocity", w_velocity)
        self.w_speed = nonnegative("w_speed", w_speed)
        self.register_buffer("target", torch.tensor(point3("target", target), dtype=dtype))

    def set_target(self, target) -> None:
        """New target (3,) in m; TaskError if not 3 finite numbers."""
        self.target.copy_(torch.as_tensor(point3("target", target)))

    def distance2(self, states: torch.Tensor) -> torch.Tensor:
        """Squared end-effector distance to the target (...) in m² for states (..., dx)."""
        return ((self.ee(states) - self.target.to(states.dtype)) ** 2).sum(-1)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        self.check(states, actions)
        d2 = self.distance2(states[..., 1:, :])
        ell = l2_log(d2, self.w_l2, self.w_log, self.alpha)
        weights = torch.ones(d2.shape[-1], dtype=d2.dtype, device=d2.device)
        weights[-1] = self.terminal_weight
        qd = states[..., 1:, self.n : 2 * self.n]
        return (
            (ell * weights).sum(-1)
            + self.w_velocity * (qd[..., -1, :] ** 2).sum(-1)
            + self.w_speed * (qd**2).sum((-1, -2))
            + self.action_penalty(actions)
            + self.limit_penalty(states)
        )
