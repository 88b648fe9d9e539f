"""The uncertainty tube of a plan: the model's predictive variance propagated along the plan's
nominal states under its feedback controller, by linearisation, and mapped to the end effector.

With x_{t+1} = f(x_t, u_t) + w_t, w_t ~ N(0, diag(var_t)) (the model's predictive variance at the
nominal (x̂_t, û_t)) and u_t = û_t + K_t (x_t − x̂_t) + e_t, e_t ~ N(0, Σu_t) (the controller's
exploration), the state covariance obeys
    P_{t+1} = (A_t + B_t K_t) P_t (A_t + B_t K_t)ᵀ + B_t Σu_t B_tᵀ + diag(var_t),   P_0 = 0,
with A_t = ∂f/∂x, B_t = ∂f/∂u at the nominal point; the end effector's covariance is
J(q̂_t) P_t^{qq} J(q̂_t)ᵀ (J: the position Jacobian of the joint angles q = x[:n]).
"""

from __future__ import annotations

import numpy as np
import torch

from mbrl_ros.control.controller import LinearGaussianController


def state_tube(model, states: np.ndarray, controller: LinearGaussianController) -> np.ndarray:
    """State covariances P (T+1, dx, dx) along ``states`` (T+1, dx), the model's mean prediction
    under ``controller`` (T steps; its x_hat = states[:T], u_hat its nominal actions)."""
    x = torch.tensor(states[:-1], dtype=torch.float64, requires_grad=True)
    u = torch.tensor(controller.u_hat, dtype=torch.float64, requires_grad=True)
    mean, var = model.predict(x, u)
    dx = mean.shape[-1]
    rows = [
        torch.autograd.grad(mean[:, i].sum(), (x, u), retain_graph=i < dx - 1) for i in range(dx)
    ]  # sample t's outputs depend on sample t's inputs only
    A = torch.stack([r[0] for r in rows], 1).double().numpy()  # (T, dx, dx)
    B = torch.stack([r[1] for r in rows], 1).double().numpy()  # (T, dx, du)
    var = var.detach().double().cpu().numpy()
    P = np.zeros((len(states), dx, dx))
    for t in range(len(states) - 1):
        closed = A[t] + B[t] @ controller.K[t]
        P[t + 1] = closed @ P[t] @ closed.T + B[t] @ controller.cov[t] @ B[t].T + np.diag(var[t])
    return P


def ee_tube(fk, states: np.ndarray, P: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """End-effector positions (T+1, 3) in m and their covariances (T+1, 3, 3) in m² for states
    (T+1, dx) whose first ``n`` entries are the joint angles of ``fk``'s chain, with state
    covariances P (T+1, dx, dx)."""
    q = torch.as_tensor(states[:, :n], dtype=torch.float64)
    with torch.no_grad():
        ee = fk.ee_position(q).numpy()
        J = fk.jacobian(q).numpy()  # (T+1, 3, n)
    return ee, J @ P[:, :n, :n] @ np.swapaxes(J, 1, 2)
