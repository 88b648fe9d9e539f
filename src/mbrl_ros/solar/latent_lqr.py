"""SOLAR's policy update: trajopt's KL-constrained LQR on linear-Gaussian dynamics in latent space.

From latent rollouts Z (N, T+1, dz) (encoder means of the images) and actions U (N, T, du) of the
current latent controller, the time-varying local dynamics are fit by ``trajopt``'s Bayesian
linear regression with the global MNIW as the normal-inverse-Wishart prior (SOLAR's local models
conditioned on the global one), the cost is the fitted latent quadratic, and ``kl_update`` gives
the next controller within ``epsilon`` nats of the last — the same code GPS runs on joint states.
"""

from __future__ import annotations

import numpy as np

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.solar.controller import LATENT_LAYOUT
from mbrl_ros.solar.latent_cost import LatentQuadraticCost
from mbrl_ros.solar.latent_dynamics import MNIW
from mbrl_ros.trajopt.kl_update import KLSettings, KLUpdateResult, kl_update
from mbrl_ros.trajopt.local_dynamics import LocalDynamics, fit_bayesian


class _MNIWPrior:
    """``NIWPriorSource`` of an MNIW at a prior strength."""

    def __init__(self, dynamics: MNIW, strength: float):
        self.dynamics, self.strength = dynamics, strength

    def niw_prior(self, points):
        return self.dynamics.niw_prior(points, self.strength)


def initial_latent_controller(
    T: int, dz: int, du: int, std, dt_ns: int, mean=None, joint_names=()
) -> LinearGaussianController:
    """Open-loop exploration u_t ~ N(mean (du,) or 0, diag(std²)) over T steps in latent space
    (``joint_names``: the du joints it commands, as the solar_runner requires)."""
    std = np.broadcast_to(np.asarray(std, float), (du,))
    u = np.zeros((T, du)) if mean is None else np.broadcast_to(np.asarray(mean, float), (T, du))
    cov = np.broadcast_to(np.diag(std**2), (T, du, du))
    return LinearGaussianController.gaussian(
        np.zeros((T, dz)),
        u,
        np.zeros((T, du, dz)),
        None,
        cov,
        dt_ns=dt_ns,
        joint_names=joint_names,
        state_layout=LATENT_LAYOUT,
    )


def fit_latent_dynamics(dynamics: MNIW, Z, U, strength: float = 1.0) -> LocalDynamics:
    """Per-step latent dynamics of rollouts Z (N, T+1, dz), U (N, T, du) under the global
    MNIW as prior (``strength`` scales its pseudo-counts)."""
    return fit_bayesian(Z, U, _MNIWPrior(dynamics, strength))


def latent_update(
    dynamics: MNIW,
    cost: LatentQuadraticCost,
    prev: LinearGaussianController,
    Z,
    U,
    epsilon: float,
    action_weight: float,
    terminal_weight: float = 1.0,
    strength: float = 1.0,
    eta0: float = 1.0,
    settings: KLSettings = KLSettings(),
    entropy: float = 0.0,
) -> KLUpdateResult:
    """One SOLAR iteration on latent rollouts of ``prev``: local fit, then ``kl_update`` (with
    entropy weight ``entropy``)."""
    dyn = fit_latent_dynamics(dynamics, Z, U, strength)
    quad = cost.trajectory_cost(dyn.T, dyn.du, action_weight, terminal_weight)
    return kl_update(quad, dyn, prev, epsilon, eta0, settings, entropy)
