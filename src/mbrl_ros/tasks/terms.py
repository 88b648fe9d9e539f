"""Cost terms shared by the tasks. States are laid out [q (n), q̇ (n), optional features]."""

from __future__ import annotations

import numpy as np
import torch

from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.tasks.checks import TaskError, nonnegative


def l2_log_weights(w_l2, w_log, alpha) -> tuple[float, float, float]:
    """Checked weights of ``l2_log`` (TaskError naming a bad one)."""
    w_l2, w_log, alpha = (
        nonnegative("w_l2", w_l2),
        nonnegative("w_log", w_log),
        nonnegative("alpha", alpha),
    )
    if alpha <= 0.0:
        raise TaskError(f"alpha must be > 0 (it keeps log(d² + α) finite), got {alpha}")
    return w_l2, w_log, alpha


def l2_log(d2: torch.Tensor, w_l2: float, w_log: float, alpha: float) -> torch.Tensor:
    """GPS's distance cost ½·w_l2·d² + w_log·log(d² + α) of squared distances ``d2`` (m²): the l2
    term pulls from far, the log term sharpens precision near the target (Levine et al.)."""
    return 0.5 * w_l2 * d2 + w_log * torch.log(d2 + alpha)


class ArmTerms(torch.nn.Module):
    """The robot-dependent pieces every arm task uses: forward kinematics of the end effector,
    torques normalised by the effort limits, and the joint-limit penalty.

    w_action: weight of Σ_j (u_j / effort_j)² per step; w_limit: weight of
    Σ_j (max(0, q_j − (upper_j − m), (lower_j + m) − q_j) / m)² per step with margin m (rad)
    plus Σ_j (max(0, |q̇_j| − (vmax_j − m_v)) / m_v)² with velocity margin m_v (rad/s): plans keep
    clear of the executor's position and velocity guards. Move to another dtype/device with
    ``.to``.
    """

    _effort: torch.Tensor  # buffers (n,): effort limits, guarded positions and speeds
    _lower: torch.Tensor
    _upper: torch.Tensor
    _speed: torch.Tensor

    def __init__(
        self,
        robot: RobotDescription,
        *,
        w_action: float,
        w_limit: float,
        limit_margin: float,
        velocity_margin: float,
        dtype: torch.dtype,
    ):
        super().__init__()
        self.n = robot.n_joints
        self.fk = ForwardKinematics(robot, dtype=dtype)
        self.w_action = nonnegative("w_action", w_action)
        self.w_limit = nonnegative("w_limit", w_limit)
        self.limit_margin = nonnegative("limit_margin", limit_margin)
        self.velocity_margin = nonnegative("velocity_margin", velocity_margin)
        for name, value in (
            ("limit_margin", self.limit_margin),
            ("velocity_margin", self.velocity_margin),
        ):
            if value <= 0.0:
                raise TaskError(f"{name} must be > 0, got {value}")
        lim = robot.limits
        for name, bound in (
            ("effort", lim.effort),
            ("lower", lim.lower + limit_margin),
            ("upper", lim.upper - limit_margin),
            ("speed", np.maximum(lim.velocity - velocity_margin, 0.0)),
        ):
            self.register_buffer(f"_{name}", torch.tensor(bound, dtype=dtype))

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The cost (...) of states (..., T+1, dx) and actions (..., T, du): ``position_terms`` of
        the joint positions plus ``separable_terms``."""
        self.check(states, actions)
        return self.position_terms(states[..., : self.n]) + self.separable_terms(states, actions)

    def position_terms(self, q: torch.Tensor) -> torch.Tensor:
        """The terms that couple joints through the kinematics, of positions q (..., T+1, n) →
        (...). Subclasses implement it."""
        raise NotImplementedError

    def position_derivatives(
        self, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``position_terms`` at positions q (T+1, n): value, gradient (T+1, n) and per-step
        Hessians (T+1, n, n) (the terms are per-step additive). By autograd: one backward pass
        with graph and n Hessian-vector products batched into one; costs with a closed form
        override it."""
        T1, n = q.shape
        with torch.enable_grad():
            Q = q.detach().requires_grad_()
            value = self.position_terms(Q)
            (g,) = torch.autograd.grad(value, Q, create_graph=True)
            basis = torch.eye(n, dtype=Q.dtype, device=Q.device)[:, None, :].expand(n, T1, n)
            (H,) = torch.autograd.grad(
                g,
                Q,
                grad_outputs=basis,
                is_grads_batched=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return value.detach(), g.detach(), H.permute(1, 2, 0)

    def separable_terms(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The terms that are sums of functions of single entries of states and actions, so their
        Hessian is diagonal (``planning.ilqr.cost_derivatives`` relies on it): the action and
        joint-limit penalties; subclasses add their velocity terms."""
        return self.action_penalty(actions) + self.limit_penalty(states)

    def check(self, states: torch.Tensor, actions: torch.Tensor) -> None:
        if (
            states.ndim < 2
            or actions.ndim < 2
            or states.shape[-1] < 2 * self.n
            or actions.shape[-1] != self.n
            or states.shape[-2] != actions.shape[-2] + 1
        ):
            raise TaskError(
                f"cost needs states (..., T+1, ≥{2 * self.n}) and actions "
                f"(..., T, {self.n}); got {tuple(states.shape)} and "
                f"{tuple(actions.shape)}"
            )

    def ee(self, states: torch.Tensor) -> torch.Tensor:
        """End-effector positions (..., 3) in m of states (..., dx) (e.g. a planned path)."""
        return self.fk.ee_position(states[..., : self.n]).to(states.dtype)

    def action_penalty(self, actions: torch.Tensor) -> torch.Tensor:
        """w_action · Σ_t Σ_j (u_tj / effort_j)², shape (...). Leading dimensions that only
        broadcast (a planner's particles sharing their actions) are evaluated once."""
        shape, base = actions.shape[:-2], actions
        while base.ndim > 2 and base.stride(0) == 0:
            base = base[0]
        return (self.w_action * ((base / self._effort) ** 2).sum((-1, -2))).expand(shape)

    def limit_penalty(self, states: torch.Tensor) -> torch.Tensor:
        """w_limit · Σ_{t≥1} Σ_j (distance into the position or velocity margin / margin)²,
        shape (...)."""
        q = states[..., 1:, : self.n]
        qd = states[..., 1:, self.n : 2 * self.n]
        inside = q - torch.clamp(q, self._lower, self._upper)  # signed distance past a limit
        fast = torch.relu_(qd.abs() - self._speed)
        return self.w_limit * (
            (inside * inside).sum((-1, -2)) / self.limit_margin**2
            + (fast * fast).sum((-1, -2)) / self.velocity_margin**2
        )
