"""Iterative LQR through any DynamicsModel's mean prediction (the lecture's version 1.5, step 3).

Each iteration:
1. linearises the model along the nominal trajectory: A_t = ∂f/∂x, B_t = ∂f/∂u for all t at
   once (``DynamicsModel.mean_jacobians``: batched reverse-mode autograd, or the model's closed
   form);
2. takes the cost's gradient and per-step Hessians by autograd (``cost_derivatives``; the cost is
   a sum of per-step terms, so its Hessian is block diagonal and dx + du batched
   Hessian-vector products give every block; n + 1 for an arm task's cost), each block projected
   onto the positive semidefinite cone (the reach cost's log term and the kinematics curve
   downwards);
3. runs the shared LQR backward pass (``planning.lqr``) with Levenberg–Marquardt regularisation
   μ·I on Q_uu, raising μ until Q_uu is positive definite;
4. handles the torque limits by clamping: torques at a limit whose step k_t points further out
   are held (their δu fixed at 0 by a penalty, their rows of K, k zeroed) and the backward pass
   is repeated for the others; the forward pass clamps u_t = clamp(ū_t + α k_t + K_t (x_t − x̄_t))
   (no box-constrained QP);
5. line-searches α over a geometric series rolled out as one batch, scaled so that no α·k_t
   exceeds the width of the torque box; μ is decreased after an accepted step and increased
   after a rejected one (Tassa et al. 2012).

The result is a feedback controller: x̂ = the final nominal states, û = the nominal torques (k
folded in, k = 0), K_t from the last backward pass; the executor applies K_t between replans.
"""

from __future__ import annotations

import numpy as np
import torch

from mbrl_ros.planning.base import NonFinite, PlanError, Planner, positive_float, positive_int
from mbrl_ros.planning.lqr import lqr_backward
from mbrl_ros.tasks.terms import ArmTerms

DEFAULT_ALPHAS = tuple(0.5**i for i in range(8))


def cost_derivatives(cost, X: torch.Tensor, U: torch.Tensor):
    """Total cost, gradient g (T+1, n) and per-step Hessians H (T+1, n, n) (n = dx + du) of a
    per-step-additive cost at states X (T+1, dx) and actions U (T, du); row T's action part is
    zero (no action at the end). Exact second derivatives: one backward pass with graph, then n
    Hessian-vector products batched into one double-backward pass (``is_grads_batched``); for an
    arm task's cost (``ArmTerms``) ``arm_cost_derivatives``."""
    if isinstance(cost, ArmTerms):
        return arm_cost_derivatives(cost, X, U)
    T, du = U.shape
    dx = X.shape[-1]
    n = dx + du
    with torch.enable_grad():
        Z = torch.cat([X, torch.cat([U, U.new_zeros(1, du)])], dim=-1).detach().requires_grad_()
        value = cost(Z[:, :dx], Z[:T, dx:])
        (g,) = torch.autograd.grad(value, Z, create_graph=True)
        # Direction d: unit entry in column d at every step. Blocks do not couple across steps,
        # so H·v_d stacks column d of every block.
        basis = torch.eye(n, dtype=Z.dtype, device=Z.device)[:, None, :].expand(n, T + 1, n)
        if g.requires_grad:
            (Hv,) = torch.autograd.grad(
                g,
                Z,
                grad_outputs=basis,
                is_grads_batched=True,
                allow_unused=True,
                materialize_grads=True,
            )
        else:  # a linear cost
            Hv = torch.zeros_like(basis)
    return value.detach(), g.detach(), Hv.permute(1, 2, 0)


def arm_cost_derivatives(cost: ArmTerms, X: torch.Tensor, U: torch.Tensor):
    """``cost_derivatives`` of an arm task's cost from its split (``ArmTerms.forward``): the
    separable terms' Hessian is diagonal, so one Hessian-vector product along the all-ones
    direction gives it; the position terms' derivatives on the joint positions come from
    ``position_derivatives`` (the reach cost's in closed form)."""
    cost.check(X, U)
    T, du = U.shape
    dx, n = X.shape[-1], cost.n
    with torch.enable_grad():
        Z = torch.cat([X, torch.cat([U, U.new_zeros(1, du)])], dim=-1).detach().requires_grad_()
        separable = cost.separable_terms(Z[:, :dx], Z[:T, dx:])
        (g,) = torch.autograd.grad(separable, Z, create_graph=True)
        diagonal = (
            torch.autograd.grad(g, Z, grad_outputs=torch.ones_like(g))[0]
            if g.requires_grad
            else torch.zeros_like(g)
        )
    position, gq, Hq = cost.position_derivatives(X[:, :n].detach())
    g = g.detach().clone()
    g[:, :n] += gq
    H = torch.diag_embed(diagonal.detach())
    H[:, :n, :n] += Hq
    return separable.detach() + position, g, H


class ILQR(Planner):
    """iterations (maximum), mu_init / mu_min / mu_max and mu_factor: the Levenberg–Marquardt
    schedule; alphas: line-search step sizes (tried as one batch); tolerance: stop when the
    relative cost decrease of an accepted step, or the one the backward pass predicts for the
    full step after an accepted step, falls below it."""

    name = "ilqr"

    def __init__(
        self,
        horizon,
        action_low,
        action_high,
        *,
        iterations: int = 10,
        mu_init: float = 1e-6,
        mu_min: float = 1e-6,
        mu_max: float = 1e10,
        mu_factor: float = 4.0,
        alphas=DEFAULT_ALPHAS,
        tolerance: float = 1e-4,
        **kw,
    ):
        super().__init__(horizon, action_low, action_high, **kw)
        self.iterations = positive_int("iterations", iterations)
        self.mu_init = positive_float("mu_init", mu_init, allow_zero=True)
        self.mu_min = positive_float("mu_min", mu_min)
        self.mu_max = positive_float("mu_max", mu_max)
        self.mu_factor = positive_float("mu_factor", mu_factor)
        if self.mu_factor <= 1.0:
            raise PlanError(f"mu_factor must be > 1, got {mu_factor}")
        try:
            alphas = tuple(float(a) for a in alphas)
        except (TypeError, ValueError):
            raise PlanError(f"alphas must be step sizes in (0, 1], got {alphas!r}") from None
        if not alphas or not all(0.0 < a <= 1.0 for a in alphas):
            raise PlanError(f"alphas must be step sizes in (0, 1], got {alphas}")
        self.alphas = alphas
        self.tolerance = positive_float("tolerance", tolerance, allow_zero=True)

    def _rollout(self, model, x0, U, low, high, X_ref=None, K=None, k=None, alphas=None):
        """States (B, T+1, dx) and actions (B, T, du) of the feedback law for each α in
        ``alphas`` (B = len(alphas)), or of the open-loop U (B = 1)."""
        B = 1 if alphas is None else alphas.shape[0]

        def policy(t, x):
            u = U[t].expand(B, -1)
            if alphas is not None:
                u = u + alphas[:, None] * k[t] + (x - X_ref[t]) @ K[t].T
            return torch.clamp(u, low, high)

        return model.rollout_policy(x0.expand(B, -1), policy, U.shape[0])

    def _backward(self, F, g, H, mu, hold):
        """LQR backward pass around the nominal, raising μ until Q_uu is positive definite
        (None if not by mu_max). ``hold`` (T, du) bool: torques fixed at δu = 0 by a penalty on
        their diagonal of C_uu, their gains zeroed. Returns (solution, μ)."""
        T, dx, n = F.shape
        C = H[:T]
        if hold is not None:
            C = C.clone()
            lock = 1e8 * (1.0 + float(H[:, dx:, dx:].abs().amax()))
            C[:, dx:, dx:] += torch.diag_embed(hold.to(C.dtype) * lock)
        while True:
            sol = lqr_backward(F, F.new_zeros(T, dx), C, g[:T], H[T, :dx, :dx], g[T, :dx], mu=mu)
            if sol.ok:
                break
            if mu >= self.mu_max:
                return None, mu
            mu = min(max(mu * self.mu_factor, self.mu_min), self.mu_max)
        if hold is not None:
            sol.K[hold], sol.k[hold] = 0.0, 0.0
        return sol, mu

    def _optimise(self, x0, model, cost, init, low, high, generator, stats):
        if model.dx != 2 * self.du:
            raise PlanError(
                f"iLQR feedback needs the state [q, q̇] only (dx = {2 * self.du}); "
                f"the model has dx = {model.dx}"
            )
        T = self.horizon
        X, U = self._rollout(model, x0, init, low, high)
        X, U = X[0], U[0]
        J = float(cost(X, U))
        if not np.isfinite(J) or not torch.isfinite(X).all():
            raise NonFinite("the initial rollout is not finite")
        alphas = torch.tensor(self.alphas, dtype=X.dtype, device=X.device)
        mu, K = self.mu_init, None
        accepted = rejected = 0
        failed = False  # the last line search found no decrease (μ was raised)
        transitions = T
        for iteration in range(1, self.iterations + 1):  # noqa: B007 (reported after the loop)
            A, Bm = model.mean_jacobians(X[:-1], U)
            _, g, H = cost_derivatives(cost, X, U)
            if not (
                torch.isfinite(A).all()
                and torch.isfinite(Bm).all()
                and torch.isfinite(g).all()
                and torch.isfinite(H).all()
            ):
                raise NonFinite("model Jacobians or cost derivatives are not finite")
            F = torch.cat([A, Bm], dim=-1)
            # Gauss–Newton-like safeguard: the cost's per-step Hessians projected onto the
            # positive semidefinite cone (the log term and the kinematics curve downwards).
            w, V = torch.linalg.eigh(H)
            H = (V * w.clamp(min=0).unsqueeze(-2)) @ V.transpose(-1, -2)
            sol, mu = self._backward(F, g, H, mu, None)
            if sol is not None:
                # Torques at a limit whose step k_t pushes further out are held there: their
                # rows of K, k become zero and the other torques are solved with them fixed.
                hold = ((U >= high - 1e-9) & (sol.k > 0)) | ((U <= low + 1e-9) & (sol.k < 0))
                if hold.any():
                    sol, mu = self._backward(F, g, H, mu, hold)
            if sol is None:
                stats["indefinite"] = True
                break
            K, k = sol.K, sol.k
            predicted = -float(sol.dV[0] + sol.dV[1])
            if not failed and predicted <= self.tolerance * max(abs(J), 1e-12):
                stats["converged"] = True
                break
            # No open-loop step larger than the torque box: scale the step sizes down where
            # k_t reaches beyond it (far from the optimum the cost's curvature is small).
            reach = float(((high - low) / k.abs().clamp(min=1e-12)).amin())
            Xs, Us = self._rollout(model, x0, U, low, high, X, K, k, alphas * min(1.0, reach))
            transitions += T * len(self.alphas)
            Js = cost(Xs, Us)
            Js = torch.where(torch.isfinite(Js), Js, torch.full_like(Js, float("inf")))
            best = int(torch.argmin(Js))
            J_new = float(Js[best])
            if J_new < J:
                improvement = (J - J_new) / max(abs(J), 1e-12)
                X, U, J = Xs[best], Us[best], J_new
                mu = max(self.mu_min, mu / self.mu_factor)
                accepted += 1
                failed = False
                if improvement < self.tolerance:
                    stats["converged"] = True
                    break
            else:
                rejected += 1
                failed = True
                mu = max(mu * self.mu_factor, self.mu_min)
                if mu > self.mu_max:
                    break
        stats.update(
            iterations=iteration,
            accepted=accepted,
            rejected=rejected,
            mu=mu,
            transitions=transitions,
        )
        K = np.zeros((T, self.du, 2 * self.du)) if K is None else K.cpu().double().numpy()
        return U, K, X
