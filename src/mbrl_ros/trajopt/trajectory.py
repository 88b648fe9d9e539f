"""Trajectory distributions of a linear-Gaussian controller on linear-Gaussian dynamics.

With z_t = [x_t; u_t], the controller u_t ~ N(K_t x_t + k_t, Σ_t) in absolute form and the local
dynamics x_{t+1} ~ N(Fx_t z_t + fx_t, N_t), p(z_t) is Gaussian: the forward pass propagates its
mean and covariance from p(x_0) to the terminal state x_T. Costs are second-order expansions
½ zᵀC z + cᵀz per step plus a constant (``QuadraticCost``), so the expected cost under p(τ) is
closed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.planning.ilqr import cost_derivatives
from mbrl_ros.trajopt.local_dynamics import LocalDynamics


@dataclass(frozen=True)
class QuadraticCost:
    """Σ_t ½ z_tᵀ C_t z_t + c_tᵀ z_t + c0 over t = 0..T: C (T+1, dz, dz) symmetric, c (T+1, dz),
    c0 the total constant. Row T is the terminal state's (its action part is zero)."""

    C: np.ndarray
    c: np.ndarray
    c0: float

    def __call__(self, z) -> np.ndarray:
        """Total cost (...) of z (..., T+1, dz)."""
        z = np.asarray(z, dtype=np.float64)
        return (
            0.5 * np.einsum("...ti,tij,...tj->...", z, self.C, z)
            + np.einsum("...ti,ti->...", z, self.c)
            + self.c0
        )


def expand_cost(cost, X, U, psd: bool = True) -> QuadraticCost:
    """Second-order expansion of a per-step-additive torch cost ``cost(states (T+1, dx), actions
    (T, du))`` (``mbrl_ros.tasks``) at each sample X (N, T+1, dx), U (N, T, du), moved to absolute
    coordinates and averaged (GPS's cost estimate). ``psd``: clip each step's Hessian to its
    positive-semidefinite part (eigenvalues < 0 → 0) so the LQR subproblem stays convex."""
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    U = torch.as_tensor(np.asarray(U, dtype=np.float64))
    N, T, du = U.shape
    Cs, cs, c0 = 0.0, 0.0, 0.0
    for i in range(N):
        value, g, H = cost_derivatives(cost, X[i], U[i])
        g, H = g.detach().numpy(), H.detach().numpy()
        H = 0.5 * (H + np.swapaxes(H, 1, 2))
        if psd:
            w, v = np.linalg.eigh(H)
            H = (v * np.maximum(w, 0.0)[:, None, :]) @ np.swapaxes(v, 1, 2)
        z = np.concatenate([X[i].numpy(), np.concatenate([U[i].numpy(), np.zeros((1, du))])], 1)
        Hz = np.einsum("tij,tj->ti", H, z)
        Cs = Cs + H
        cs = cs + (g - Hz)
        c0 += float(value) - np.einsum("ti,ti->", g, z) + 0.5 * np.einsum("ti,ti->", z, Hz)
    return QuadraticCost(Cs / N, cs / N, c0 / N)


@dataclass(frozen=True)
class TrajectoryDistribution:
    """Gaussian marginals of p(τ): states x_mean (T+1, dx), x_cov (T+1, dx, dx) from the
    forward pass; with the controller u ~ N(K x + k_abs, u_cov) (K (T, du, dx), ...), the joint
    z_t = [x_t; u_t] moments ``mean`` (T+1, dz) and ``cov`` (T+1, dz, dz) follow (u_T ≡ 0: the
    terminal state), computed when first asked for."""

    x_mean: np.ndarray
    x_cov: np.ndarray
    K: np.ndarray
    k_abs: np.ndarray
    u_cov: np.ndarray

    @cached_property
    def mean(self) -> np.ndarray:
        T, du = self.k_abs.shape
        u = np.einsum("tij,tj->ti", self.K, self.x_mean[:T]) + self.k_abs
        return np.concatenate([self.x_mean, np.concatenate([u, np.zeros((1, du))])], axis=1)

    @cached_property
    def cov(self) -> np.ndarray:
        """Blocks P, P Kᵀ, K P, K P Kᵀ + Σ_u (the u rows and columns of step T are zero)."""
        T, du, dx = self.K.shape
        sig = np.zeros((T + 1, dx + du, dx + du))
        sig[:, :dx, :dx] = self.x_cov
        KP = self.K @ self.x_cov[:T]
        sig[:T, dx:, :dx] = KP
        sig[:T, :dx, dx:] = np.swapaxes(KP, 1, 2)
        sig[:T, dx:, dx:] = KP @ np.swapaxes(self.K, 1, 2) + self.u_cov
        return sig


def absolute_gains(ctrl: LinearGaussianController) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The controller as u ~ N(K x + k_abs, Σ): K (T, du, dx), k_abs = k + û − K x̂ (T, du),
    Σ (T, du, du)."""
    k_abs = ctrl.k + ctrl.u_hat - np.einsum("tij,tj->ti", ctrl.K, ctrl.x_hat)
    return ctrl.K, k_abs, ctrl.cov


def controller_from_gains(
    K, k_abs, cov, x_hat, like: LinearGaussianController
) -> LinearGaussianController:
    """u ~ N(K x + k_abs, Σ) as a controller about the nominal states x_hat (T, dx) (û = K x̂ +
    k_abs, k = 0), with ``like``'s timing, joint names and layout."""
    u_hat = np.einsum("tij,tj->ti", K, x_hat) + k_abs
    return LinearGaussianController.gaussian(
        x_hat,
        u_hat,
        K,
        np.zeros_like(k_abs),
        cov,
        dt_ns=like.dt_ns,
        start_ns=like.start_ns,
        joint_names=like.joint_names,
        state_layout=like.state_layout,
    )


def forward_pass(dyn: LocalDynamics, K, k_abs, cov) -> TrajectoryDistribution:
    """p(z_t), t = 0..T, of u_t ~ N(K_t x_t + k_abs_t, cov_t) on ``dyn`` from its p(x_0).
    K (T, du, dx), k_abs (T, du), cov (T, du, du) with T = dyn.T."""
    T, dx, du = dyn.T, dyn.dx, dyn.du
    if np.shape(K) != (T, du, dx) or np.shape(k_abs) != (T, du) or np.shape(cov) != (T, du, du):
        raise ValueError(
            f"controller shapes K {np.shape(K)}, k {np.shape(k_abs)}, Σ "
            f"{np.shape(cov)} do not fit dynamics with T={T}, dx={dx}, du={du}"
        )
    # x_{t+1} = (A + B K) x + (B k + f) + (B ε + w): closed-loop matrices and noise in batch,
    # only the state moments are sequential.
    K, k_abs, cov = (np.asarray(a, dtype=np.float64) for a in (K, k_abs, cov))
    A, B = dyn.Fx[:, :, :dx], dyn.Fx[:, :, dx:]
    Acl = A + B @ K
    off = np.einsum("tij,tj->ti", B, k_abs) + dyn.fx
    W = B @ cov @ np.swapaxes(B, 1, 2) + dyn.cov
    mx = np.empty((T + 1, dx))
    Px = np.empty((T + 1, dx, dx))
    mx[0], Px[0] = dyn.x0_mean, dyn.x0_cov
    # The same products as (A P) Aᵀ + W, written into preallocated rows (no temporaries).
    AclT = np.swapaxes(Acl, 1, 2)
    AP = np.empty((dx, dx))
    for t in range(T):
        np.matmul(Acl[t], mx[t], out=mx[t + 1])
        mx[t + 1] += off[t]
        np.matmul(Acl[t], Px[t], out=AP)
        np.matmul(AP, AclT[t], out=Px[t + 1])
        Px[t + 1] += W[t]
    Px = 0.5 * (Px + np.swapaxes(Px, 1, 2))
    return TrajectoryDistribution(mx, Px, K, k_abs, cov)


def expected_cost(cost: QuadraticCost, traj: TrajectoryDistribution) -> float:
    """E_{p(τ)}[cost] = Σ_t ½ μᵀCμ + cᵀμ + ½ tr(C Σ) + c0."""
    mu = traj.mean
    quadratic = 0.5 * np.einsum("tij,tj->ti", cost.C, mu) + cost.c
    return float(
        np.einsum("ti,ti->", mu, quadratic)
        + 0.5 * np.einsum("tij,tij->", cost.C, traj.cov)
        + cost.c0
    )  # C symmetric
