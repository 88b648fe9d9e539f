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
from mbrl_ros.tasks.checks import nonnegative, point3
from mbrl_ros.tasks.terms import ArmTerms, l2_log, l2_log_weights


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

    def position_terms(self, q: torch.Tensor) -> torch.Tensor:
        d2 = self.distance2(q[..., 1:, :])
        ell = l2_log(d2, self.w_l2, self.w_log, self.alpha)
        weights = torch.ones(d2.shape[-1], dtype=d2.dtype, device=d2.device)
        weights[-1] = self.terminal_weight
        return (ell * weights).sum(-1)

    def position_derivatives(
        self, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``ArmTerms.position_derivatives`` in closed form, from the end effector's Jacobian J
        and second derivatives ∇²p (``ForwardKinematics.ee_derivatives``): with e = p − target,
        d² = ‖e‖² and step weight w_t (0 at t = 0), the gradient is w_t·ℓ'·2Jᵀe and the Hessian
        w_t·(4ℓ''·(Jᵀe)(Jᵀe)ᵀ + 2ℓ'·(JᵀJ + Σ_k e_k ∇²p_k)), ℓ' = ½w_l2 + w_log/(d² + α),
        ℓ'' = −w_log/(d² + α)². Revolute joints only (the kinematics' own rule)."""
        p, J, second = self.fk.ee_derivatives(q)
        e = p.to(q.dtype) - self.target.to(q.dtype)
        d2 = (e * e).sum(-1)
        weights = torch.ones_like(d2)
        weights[0], weights[-1] = 0.0, self.terminal_weight
        value = (l2_log(d2[1:], self.w_l2, self.w_log, self.alpha) * weights[1:]).sum()
        slope = weights * (0.5 * self.w_l2 + self.w_log / (d2 + self.alpha))
        curvature = weights * (-self.w_log / (d2 + self.alpha) ** 2)
        Je = (J * e[:, :, None]).sum(-2)  # Jᵀe (T+1, n)
        JJ = J.transpose(-1, -2) @ J
        eH = (second * e[:, :, None, None]).sum(-3)  # Σ_k e_k ∇²p_k
        H = 4 * curvature[:, None, None] * Je[:, :, None] * Je[:, None, :] + 2 * slope[
            :, None, None
        ] * (JJ + eH)
        return value, 2 * slope[:, None] * Je, H

    def separable_terms(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        qd = states[..., 1:, self.n : 2 * self.n]
        return (
            self.w_velocity * (qd[..., -1, :] ** 2).sum(-1)
            + self.w_speed * (qd**2).sum((-1, -2))
            + super().separable_terms(states, actions)
        )
