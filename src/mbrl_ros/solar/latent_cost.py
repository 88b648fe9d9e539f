"""SOLAR's quadratic cost in latent space, fitted from observed costs.

    c(z) = ½ zᵀC z + cᵀz + c0,   C ⪰ 0,

by least squares on the features [z_i z_j (i ≤ j), z, 1] of latents Z (N, dz) against observed
scalar costs (N,) (e.g. the task's cost the robot reports; no state is needed), with a small ridge;
C is then projected to its positive-semidefinite part so the LQR subproblem stays convex. The
trajectory cost for ``trajopt`` adds ½ uᵀ(action_weight·I)u per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_ros.trajopt.trajectory import QuadraticCost


@dataclass(frozen=True)
class LatentQuadraticCost:
    """C (dz, dz) PSD, c (dz,), c0; ``fit_r2``: R² of the unprojected fit on its data."""

    C: np.ndarray
    c: np.ndarray
    c0: float
    fit_r2: float = float("nan")

    def __call__(self, Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        return 0.5 * np.einsum("...i,ij,...j->...", Z, self.C, Z) + Z @ self.c + self.c0

    def trajectory_cost(self, T: int, du: int, action_weight: float,
                        terminal_weight: float = 1.0) -> QuadraticCost:
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


def quadratic_features(Z: np.ndarray) -> np.ndarray:
    """(N, dz) → (N, dz(dz+1)/2 + dz + 1): z_i z_j for i ≤ j, z, 1."""
    i, j = np.triu_indices(Z.shape[1])
    return np.concatenate([Z[:, i] * Z[:, j], Z, np.ones((len(Z), 1))], axis=1)


def fit_latent_cost(Z, costs, ridge: float = 1e-6) -> LatentQuadraticCost:
    """Least-squares quadratic cost of latents Z (N, dz) against costs (N,); ValueError on
    non-finite input or fewer samples than coefficients."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(costs, dtype=np.float64)
    if Z.ndim != 2 or y.shape != (len(Z),):
        raise ValueError(f"need latents (N, dz) and costs (N,), got {Z.shape} and {y.shape}")
    if not (np.all(np.isfinite(Z)) and np.all(np.isfinite(y))):
        raise ValueError("latents or costs have non-finite values")
    dz = Z.shape[1]
    Phi = quadratic_features(Z)
    if len(Z) < Phi.shape[1]:
        raise ValueError(f"{len(Z)} samples are too few for a quadratic in {dz} latents "
                         f"({Phi.shape[1]} coefficients)")
    scale = np.maximum(Phi.std(0), 1e-12)
    scale[-1] = 1.0
    A = Phi / scale
    w = np.linalg.solve(A.T @ A + ridge * len(Z) * np.eye(A.shape[1]), A.T @ y) / scale
    resid = y - Phi @ w
    r2 = 1.0 - resid.var() / max(y.var(), 1e-300)
    iu, ju = np.triu_indices(dz)
    n_quad = len(iu)
    C = np.zeros((dz, dz))
    C[iu, ju] = w[:n_quad]
    C = C + C.T  # off-diagonal z_i z_j = C_ij; diagonal ½ C_ii z_i² = w z_i²
    ev, V = np.linalg.eigh(C)
    C_psd = (V * np.maximum(ev, 0.0)) @ V.T
    return LatentQuadraticCost(C_psd, w[n_quad:n_quad + dz], float(w[-1]), float(r2))
