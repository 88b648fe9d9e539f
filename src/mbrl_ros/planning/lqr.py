"""The one LQR backward pass: time-varying linear dynamics, quadratic costs (iLQR-MPC and GPS).

Over steps t = 0..T−1 with z_t = [x_t; u_t] (dz = dx + du):

    x_{t+1} = Fx_t z_t + fx_t,        cost_t = ½ z_tᵀ Cxx_t z_t + z_tᵀ cx_t,
    terminal value V_T(x) = ½ xᵀ Vxx_T x + xᵀ vx_T (zero unless given),

in absolute coordinates (or deviations: the algebra is the same). The optimal controller is
u_t = K_t x_t + k_t; the maximum-entropy (linear-Gaussian) solution adds Σ_t = Q_uu,t⁻¹ (the
lecture's version 2.0; GPS's KL-constrained update passes its modified cost c̃ through here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg.lapack import dposv


class NotPositiveDefinite(ArithmeticError):
    """Q_uu,t is not positive definite at step ``t``: raise the regularisation (or, in the
    KL-constrained update, the dual variable η) and solve again."""

    def __init__(self, t: int):
        super().__init__(f"Q_uu is not positive definite at step {t}")
        self.t = t


# An LQRSolution array: np.ndarray, or torch.Tensor from lqr_backward given tensors; None in a
# solution with ok=False.
Array = Any


@dataclass(frozen=True)
class LQRSolution:
    """K (T, du, dx), k (T, du): u_t = K_t x_t + k_t. Quu (T, du, du) as regularised,
    Quu_inv (T, du, du) = Σ_t of the maximum-entropy controller. Vxx (T+1, dx, dx), vx (T+1, dx):
    value function ½ xᵀVxx x + xᵀvx (index T is the terminal value). dV (2,): the model's predicted
    cost change of the step αk is α·dV[0] + α²·dV[1] (iLQR line search; dV[0] = Σ kᵀq_u,
    dV[1] = Σ ½ kᵀQ_uu k)."""

    K: Array
    k: Array
    Quu: Array
    Quu_inv: Array
    Vxx: Array
    vx: Array
    dV: Array
    ok: bool = True


def lqr_backward(Fx, fx, Cxx, cx, Vxx_T=None, vx_T=None, *, mu: float = 0.0):
    """``backward_pass`` for callers that iterate on the regularisation (iLQR through torch
    models): ``mu`` is the Levenberg–Marquardt term; a Q_uu that is not positive definite gives
    ``LQRSolution`` with ok=False (arrays None) instead of raising. Inputs may be torch tensors:
    the arrays then come back as tensors with Fx's dtype and device."""
    like = Fx if isinstance(Fx, torch.Tensor) else None
    arrays = [
        a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
        for a in (Fx, fx, Cxx, cx, Vxx_T, vx_T)
    ]
    try:
        sol = backward_pass(*arrays[:4], reg=float(mu), Vxx_T=arrays[4], vx_T=arrays[5])
    except NotPositiveDefinite:
        return LQRSolution(None, None, None, None, None, None, None, ok=False)
    if like is None:
        return sol
    K, k, Quu, Quu_inv, Vxx, vx, dV = (
        torch.as_tensor(a, dtype=like.dtype, device=like.device)
        for a in (sol.K, sol.k, sol.Quu, sol.Quu_inv, sol.Vxx, sol.vx, sol.dV)
    )
    return LQRSolution(K, k, Quu, Quu_inv, Vxx, vx, dV)


def _check(name: str, a, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values")
    return a


def backward_pass(Fx, fx, Cxx, cx, *, reg: float = 0.0, Vxx_T=None, vx_T=None) -> LQRSolution:
    """Solve the LQR problem above. Fx (T, dx, dz), fx (T, dx), Cxx (T, dz, dz) symmetric,
    cx (T, dz); ``reg`` ≥ 0 is added to Q_uu's diagonal (Levenberg–Marquardt). Raises
    NotPositiveDefinite(t) at the first (latest) step whose Q_uu has no Cholesky factor,
    ValueError on inconsistent shapes or non-finite input."""
    Fx = np.asarray(Fx, dtype=np.float64)
    if Fx.ndim != 3 or Fx.shape[2] <= Fx.shape[1]:
        raise ValueError(f"Fx must be (T, dx, dx + du) with du ≥ 1, got {Fx.shape}")
    T, dx, dz = Fx.shape
    du = dz - dx
    Fx = _check("Fx", Fx, (T, dx, dz))
    fx = _check("fx", fx, (T, dx))
    Cxx = _check("Cxx", Cxx, (T, dz, dz))
    cx = _check("cx", cx, (T, dz))
    if not np.isfinite(reg) or reg < 0:
        raise ValueError(f"reg must be a finite number ≥ 0, got {reg}")
    V = np.zeros((dx, dx)) if Vxx_T is None else _check("Vxx_T", Vxx_T, (dx, dx))
    v = np.zeros(dx) if vx_T is None else _check("vx_T", vx_T, (dx,))
    # Homogeneous form z̃ = [x; 1; u]: Q̃ = C̃ + F̃ᵀ Ṽ F̃ carries Q, q (and a constant) in one
    # matrix, so each step is a few small products; Ṽ is the value as ½ [x; 1]ᵀ Ṽ [x; 1].
    a = dx + 1
    Fa = np.empty((T, a, a + du))  # every block written: [F_x f F_u; 0 1 0]
    Fa[:, :dx, :dx], Fa[:, :dx, dx], Fa[:, :dx, a:] = Fx[:, :, :dx], fx, Fx[:, :, dx:]
    Fa[:, dx] = 0.0
    Fa[:, dx, dx] = 1.0
    FaT = np.ascontiguousarray(np.swapaxes(Fa, 1, 2))
    Fh = np.multiply(Fa, 0.5, out=Fa)  # in place: Fa is not needed again
    Ca = np.empty((T, a + du, a + du))  # every block written, the constant's corner zero
    Ca[:, dx, dx] = 0.0
    Ca[:, :dx, :dx], Ca[:, :dx, a:] = Cxx[:, :dx, :dx], Cxx[:, :dx, dx:]
    Ca[:, a:, :dx], Ca[:, a:, a:] = Cxx[:, dx:, :dx], Cxx[:, dx:, dx:]
    Ca[:, :dx, dx] = Ca[:, dx, :dx] = cx[:, :dx]
    Ca[:, a:, dx] = Ca[:, dx, a:] = cx[:, dx:]
    Va = np.zeros((a, a))
    Va[:dx, :dx], Va[:dx, dx], Va[dx, :dx] = V, v, v
    if reg:
        Ca[:, a:, a:] += reg * np.eye(du)
    # Few calls per step, into preallocated blocks: Q̃ of every step is kept (Q_uu and q_u are
    # views of it); one LAPACK call factors Q_uu and solves for the gains. Vs holds 2Ṽ = Ṽ' + Ṽ'ᵀ
    # (symmetric: rounding asymmetry grows through the recursion otherwise), its ½ carried by the
    # halved F̃ of the next product (exact in binary floating point).
    gains = np.empty((T, du, a))  # [K_t | k_t]
    Qs = np.empty((T, a + du, a + du))
    Vs = np.empty((T + 1, a, a))
    Vs[T] = 2.0 * Va
    VF = np.empty((a, a + du))
    Vn = np.empty((a, a))
    for t in range(T - 1, -1, -1):
        Q = Qs[t]
        np.matmul(Vs[t + 1], Fh[t], out=VF)
        np.matmul(FaT[t], VF, out=Q)
        Q += Ca[t]
        _, sol, info = dposv(Q[a:, a:], Q[a:, :a], lower=1)
        if info != 0:
            raise NotPositiveDefinite(t)
        g = gains[t]
        np.negative(sol, out=g)
        if reg:  # the exact value of the regularised controller under the unregularised Q
            Qg = Q[a:, a:] @ g - reg * g
            Vn = Q[:a, :a] + g.T @ Qg + g.T @ Q[a:, :a] + Q[:a, a:] @ g
        else:
            np.matmul(Q[:a, a:], sol, out=Vn)
            np.subtract(Q[:a, :a], Vn, out=Vn)
        np.add(Vn, Vn.T, out=Vs[t])
    Vs *= 0.5
    Quu, qu = Qs[:, a:, a:], Qs[:, a:, dx]
    Vxx, vx = Vs[:, :dx, :dx], Vs[:, :dx, dx]
    K, k = gains[:, :, :dx], gains[:, :, dx]
    Quu_inv = np.linalg.inv(Quu)
    Quu_inv = 0.5 * (Quu_inv + np.swapaxes(Quu_inv, 1, 2))
    Quu_true = Quu - reg * np.eye(du) if reg else Quu
    dV = np.array([np.einsum("ti,ti->", k, qu), 0.5 * np.einsum("ti,tij,tj->", k, Quu_true, k)])
    return LQRSolution(K, k, Quu, Quu_inv, Vxx, vx, dV)
