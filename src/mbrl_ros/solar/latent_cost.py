"""SOLAR's quadratic cost in latent space, fitted from observed costs.

    c(z) = ½ zᵀC z + cᵀz + c0,   C ⪰ 0,

with C = L Lᵀ kept positive semidefinite so the LQR subproblem stays convex, either fitted after
the fact by least squares of latents Z (N, dz) against observed scalar costs (N,) (e.g. the task's
cost the robot reports; no state is needed: ``fit_latent_cost``; optionally about a goal latent,
e.g. the encoding of an image of the arm at the goal, which fixes the cost's minimum there), or
learnt with the model as one more observation of the latent, y_t ~ N(c(z_t), σ²) (``CostModel``;
SOLAR's cost model), which shapes the latent so that the cost is quadratic in it. The trajectory
cost for ``trajopt`` adds ½ uᵀ(action_weight·I)u per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mbrl_ros.trajopt.trajectory import QuadraticCost


@dataclass(frozen=True)
class LatentQuadraticCost:
    """C (dz, dz) PSD, c (dz,), c0; ``fit_r2``: R² of the fit on its data."""

    C: np.ndarray
    c: np.ndarray
    c0: float
    fit_r2: float = float("nan")

    def __call__(self, Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        return 0.5 * np.einsum("...i,ij,...j->...", Z, self.C, Z) + Z @ self.c + self.c0

    def r2(self, Z, costs) -> float:
        """R² of this cost on latents Z (N, dz) against observed costs (N,)."""
        y = np.asarray(costs, dtype=np.float64)
        return float(1.0 - np.var(y - self(Z)) / max(np.var(y), 1e-300))

    def trajectory_cost(
        self, T: int, du: int, action_weight: float, terminal_weight: float = 1.0
    ) -> QuadraticCost:
        """``trajopt.QuadraticCost`` over z_t = [z; u] for t = 0..T (row T: terminal_weight·c(z),
        no action)."""
        dz = self.C.shape[0]
        C = np.zeros((T + 1, dz + du, dz + du))
        c = np.zeros((T + 1, dz + du))
        C[:, :dz, :dz] = self.C
        c[:, :dz] = self.c
        C[:T, dz:, dz:] = action_weight * np.eye(du)
        C[T] *= terminal_weight
        c[T] *= terminal_weight
        return QuadraticCost(C, c, self.c0 * (T + terminal_weight))

    def planning_cost(self, action_weight: float, terminal_weight: float = 1.0):
        """The same cost for ``mbrl_ros.planning``'s planners: ``cost(Z (..., H+1, dz), U (..., H,
        du)) → (...)`` torch, Σ_{t=1..H} c(z_t) (the last step × terminal_weight) +
        ½·action_weight·Σ‖u_t‖²."""
        C, c = torch.as_tensor(self.C), torch.as_tensor(self.c)

        def cost(Z: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
            Cz, cz = C.to(Z), c.to(Z)
            per = 0.5 * torch.einsum("...i,ij,...j->...", Z, Cz, Z) + Z @ cz + self.c0
            w = torch.ones(Z.shape[-2], dtype=Z.dtype, device=Z.device)
            w[0], w[-1] = 0.0, terminal_weight
            return (per * w).sum(-1) + 0.5 * action_weight * (U * U).sum((-2, -1))

        return cost


def quadratic_value(Z: torch.Tensor, L: torch.Tensor, c: torch.Tensor, c0) -> torch.Tensor:
    """½ zᵀ(L Lᵀ)z + cᵀz + c0 of latents Z (..., dz) → (...)."""
    return 0.5 * ((Z @ L) ** 2).sum(-1) + Z @ c + c0


class CostModel(nn.Module):
    """SOLAR's cost model: observed costs y_t ~ N(c(z_t), std²) with c(z) = ½ zᵀ(L Lᵀ)z + cᵀz +
    c0, trained with the networks (``SolarModel.fit`` given costs). Starts at C = 0.01·I, c = 0,
    c0 = 0."""

    def __init__(self, dz: int, dtype=torch.float32):
        super().__init__()
        self.L = nn.Parameter(0.1 * torch.eye(dz, dtype=dtype))
        self.c = nn.Parameter(torch.zeros(dz, dtype=dtype))
        self.c0 = nn.Parameter(torch.zeros((), dtype=dtype))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """c(z) (...) of latents (..., dz)."""
        return quadratic_value(z, self.L, self.c, self.c0)

    def log_likelihood(self, z: torch.Tensor, costs: torch.Tensor, std: float) -> torch.Tensor:
        """Σ_t log N(y_t; c(z_t), std²) (B,) of latents (B, T, dz) and costs (B, T)."""
        r = (costs - self(z)) / std
        return -0.5 * (r * r).sum(-1) - costs.shape[-1] * (
            math.log(std) + 0.5 * math.log(2 * math.pi)
        )

    def latent_cost(self) -> LatentQuadraticCost:
        """The cost as a ``LatentQuadraticCost`` (float64)."""
        L = self.L.detach().double().numpy()
        return LatentQuadraticCost(
            L @ L.T, self.c.detach().double().numpy(), float(self.c0.detach())
        )


def quadratic_features(Z: np.ndarray) -> np.ndarray:
    """(N, dz) → (N, dz(dz+1)/2 + dz + 1): z_i z_j for i ≤ j, z, 1."""
    i, j = np.triu_indices(Z.shape[1])
    return np.concatenate([Z[:, i] * Z[:, j], Z, np.ones((len(Z), 1))], axis=1)


def fit_latent_cost(
    Z, costs, ridge: float = 1e-6, iterations: int = 200, goal=None
) -> LatentQuadraticCost:
    """Quadratic cost with C = L Lᵀ ⪰ 0 of latents Z (N, dz) against costs (N,), least squares:
    the unconstrained fit with C clipped to its PSD part starts an L-BFGS fit of (L, c, c0)
    (SOLAR fits its cost model by gradient descent). ``goal`` (dz,): the latent where the cost
    is least (e.g. a goal image's encoding); then c(z) = ½ (z − goal)ᵀC(z − goal) + c0 and only
    C and c0 are fitted. ValueError on non-finite input or fewer samples than coefficients."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(costs, dtype=np.float64)
    if Z.ndim != 2 or y.shape != (len(Z),):
        raise ValueError(f"need latents (N, dz) and costs (N,), got {Z.shape} and {y.shape}")
    if not (np.all(np.isfinite(Z)) and np.all(np.isfinite(y))):
        raise ValueError("latents or costs have non-finite values")
    dz = Z.shape[1]
    if goal is not None:
        goal = np.asarray(goal, dtype=np.float64)
        if goal.shape != (dz,) or not np.all(np.isfinite(goal)):
            raise ValueError(f"the goal latent must be finite of shape ({dz},), got {goal.shape}")
    if len(Z) < (dz + 1) * (dz + 2) // 2:
        raise ValueError(
            f"{len(Z)} samples are too few for a quadratic in {dz} latents "
            f"({(dz + 1) * (dz + 2) // 2} coefficients)"
        )
    # standardised z̃ = S (z − μ), S = diag(1/sd); about the goal without a linear term
    mu, sd = (Z.mean(0) if goal is None else goal), np.maximum(Z.std(0), 1e-9)
    Cs, cs, c0s = _fit_standardised((Z - mu) / sd, y, ridge, iterations, linear=goal is None)
    S = 1.0 / sd
    C = Cs * S[:, None] * S[None, :]
    c = S * cs - C @ mu
    c0 = c0s - (S * cs) @ mu + 0.5 * mu @ C @ mu
    fit = LatentQuadraticCost(0.5 * (C + C.T), c, float(c0))
    return LatentQuadraticCost(fit.C, fit.c, fit.c0, fit.r2(Z, y))


def _fit_standardised(Z, y, ridge: float, iterations: int, linear: bool = True):
    """(C, c, c0) on standardised latents: the better of the clipped least-squares quadratic
    and the constant mean starts L-BFGS on (L, c, c0); ``linear`` False: c = 0."""
    dz = Z.shape[1]
    iu, ju = np.triu_indices(dz)
    Phi = quadratic_features(Z)
    if not linear:
        Phi = np.delete(Phi, np.s_[len(iu) : len(iu) + dz], axis=1)
    w = np.linalg.solve(Phi.T @ Phi + ridge * len(Z) * np.eye(Phi.shape[1]), Phi.T @ y)
    C = np.zeros((dz, dz))
    C[iu, ju] = w[: len(iu)]
    C = C + C.T  # off-diagonal z_i z_j: C_ij; diagonal ½ C_ii z_i² = w_ii z_i²
    ev, V = np.linalg.eigh(C)
    Zt, yt = torch.as_tensor(Z), torch.as_tensor(y)

    def residual(L, c, c0):
        return quadratic_value(Zt, L, c, c0) - yt

    c_ls = w[len(iu) : len(iu) + dz] if linear else np.zeros(dz)
    starts = [
        (V * np.sqrt(np.maximum(ev, 1e-8)), c_ls, w[-1]),
        (1e-3 * np.eye(dz), np.zeros(dz), y.mean()),
    ]
    errors = [
        float((residual(*(torch.as_tensor(np.asarray(a, float)) for a in st)) ** 2).mean())
        for st in starts
    ]
    L0, c_init, c0_init = starts[int(np.argmin(errors))]
    L = torch.tensor(L0, requires_grad=True)
    c = torch.tensor(np.asarray(c_init, float), requires_grad=linear)
    c0 = torch.tensor(float(c0_init), requires_grad=True)
    opt = torch.optim.LBFGS(
        [L, c, c0] if linear else [L, c0], max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def loss():
        opt.zero_grad()
        r = residual(L, c, c0)
        value = (r * r).mean() + ridge * (L * L).sum()
        value.backward()
        return value

    opt.step(loss)
    return (L @ L.T).detach().numpy(), c.detach().numpy().copy(), c0.item()
