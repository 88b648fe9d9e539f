"""PILCO policies with analytic moment propagation (Deisenroth & Rasmussen 2011, §3 and the
PILCO book chapter): a linear policy and an RBF network, each followed by the sine squash
u = u_max·sin(ũ), which keeps torques within ±u_max and has closed-form Gaussian moments.

For a Gaussian state x ~ N(m (..., dx), S (..., dx, dx)) a policy returns ``PolicyMoments``:
the mean (..., du) and covariance (..., du, du) of u and the cross-covariance Cov[x, u]
(..., dx, du), so (x, u) can be moment-matched to a joint Gaussian. The pre-squash moments are
exact for both policies (linear: trivially; RBF: the GP-mean integrals of ``gp_moments``). The
squash moments are exact for a Gaussian ũ; Cov[x, u] = Cov[x, ũ]·E[u_max cos ũ] (Stein's lemma) is
exact when (x, ũ) is jointly Gaussian (linear policy) and PILCO's approximation otherwise.
Everything is float64 and differentiable in the policy parameters (torch autograd).

``forward(x)`` evaluates u = π(x) for a batch of states (torch) and ``act(x)`` for numpy
arrays, without moments: what a policy runner executes. Units: the state's and N·m.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_ros.dynamics.gp import F64, GPPosterior, Hyperparameters, se_ard
from mbrl_ros.dynamics.moment_matching import gp_moments
from mbrl_ros.policy.errors import PolicyError


@dataclass
class PolicyMoments:
    """Moments of u for a Gaussian state: mean (..., du), cov (..., du, du), Cov[x, u]
    (..., dx, du)."""

    mean: torch.Tensor
    cov: torch.Tensor
    cross: torch.Tensor


def _q_expm1(log_q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """e^(log_q)·(e^s − 1) without overflow or 0·∞ for any variances (|s| ≤ −log_q for a
    covariance): e^(log_q + s)·(1 − e^(−s)) for s ≥ 0, e^(log_q)·(e^s − 1) for s < 0, each
    exact to rounding (expm1), and each branch fed only its own sign so gradients stay finite."""
    pos = s.clamp_min(0.0)
    neg = s - pos  # not clamp_max: at s = 0 both clamps pass the gradient, doubling it
    return -torch.exp(log_q + pos) * torch.expm1(-pos) + torch.exp(log_q) * torch.expm1(neg)


def sine_squash_moments(
    mean: torch.Tensor, cov: torch.Tensor, u_max: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moments of u = u_max·sin(ũ) for ũ ~ N(mean (..., k), cov (..., k, k)), u_max (k,):
    mean (..., k), covariance (..., k, k) and the gain g (..., k) with Cov[z, u_i] = Cov[z, ũ_i]·g_i
    for any z jointly Gaussian with ũ (g_i = u_max,i·E[cos ũ_i]).

    E[sin ũ_i] = e^(−S_ii/2) sin m_i and, with q_ij = e^(−(S_ii + S_jj)/2),
    Cov[sin ũ_i, sin ũ_j] = ½ q_ij [(e^(S_ij) − 1) cos(m_i − m_j) − (e^(−S_ij) − 1) cos(m_i +
    m_j)]."""
    var = torch.diagonal(cov, dim1=-2, dim2=-1)
    decay = torch.exp(-0.5 * var)
    log_q = -0.5 * (var[..., :, None] + var[..., None, :])
    diff = mean[..., :, None] - mean[..., None, :]
    total = mean[..., :, None] + mean[..., None, :]
    second = 0.5 * (
        _q_expm1(log_q, cov) * torch.cos(diff) - _q_expm1(log_q, -cov) * torch.cos(total)
    )
    return (
        u_max * decay * torch.sin(mean),
        u_max[:, None] * u_max[None, :] * second,
        u_max * decay * torch.cos(mean),
    )


def _as_f64(value, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    t = (
        torch.as_tensor(
            np.array(value, dtype=float) if not torch.is_tensor(value) else value, dtype=F64
        )
        .detach()
        .clone()
    )
    if shape is not None and tuple(t.shape) != shape:
        raise PolicyError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise PolicyError(f"{name} has non-finite values")
    return t


class PilcoPolicy(torch.nn.Module, abc.ABC):
    """u = u_max·sin(ũ(x)) with ũ given by the subclass; dx state inputs, du torques bounded by
    ``u_max`` (du,) N·m > 0. Parameters are float64 ``torch.nn.Parameter``s."""

    u_max: torch.Tensor  # buffer (du,)

    def __init__(self, dx: int, u_max):
        super().__init__()
        u_max = _as_f64(u_max, "u_max").reshape(-1)
        if not bool((u_max > 0).all()):
            raise PolicyError(f"u_max must be positive, got {u_max.tolist()}")
        if dx < 1:
            raise PolicyError(f"the policy needs at least one state input, got dx = {dx}")
        self.dx, self.du = int(dx), len(u_max)
        self.register_buffer("u_max", u_max)

    @abc.abstractmethod
    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """ũ (..., du) at states x (..., dx)."""

    @abc.abstractmethod
    def preactivation_moments(
        self, mean: torch.Tensor, cov: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean (..., du), covariance (..., du, du) and Cov[x, ũ] (..., dx, du) of ũ(x) for
        x ~ N(mean (..., dx), cov (..., dx, dx))."""

    def _check_state(self, x: torch.Tensor, what: str) -> None:
        if x.shape[-1:] != (self.dx,):
            raise PolicyError(
                f"policy {what} must end in {self.dx} state values, got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Torques u (..., du) N·m at states x (..., dx)."""
        self._check_state(x, "input")
        return self.u_max * torch.sin(self.preactivation(x.to(F64)))

    @torch.no_grad()
    def act(self, x: np.ndarray) -> np.ndarray:
        """Torques (..., du) N·m for numpy states (..., dx)."""
        states = torch.as_tensor(np.asarray(x, dtype=float), device=self.u_max.device)
        return self.forward(states).cpu().numpy()

    def moments(self, mean: torch.Tensor, cov: torch.Tensor) -> PolicyMoments:
        """Moments of u for x ~ N(mean (..., dx), cov (..., dx, dx)) (module docstring)."""
        self._check_state(mean, "mean")
        if cov.shape != (*mean.shape, self.dx):
            raise PolicyError(
                f"state covariance must have shape {(*mean.shape, self.dx)}, got {tuple(cov.shape)}"
            )
        m, s, c = self.preactivation_moments(mean.to(F64), cov.to(F64))
        mu, su, gain = sine_squash_moments(m, s, self.u_max)
        return PolicyMoments(mu, su, c * gain[..., None, :])


class LinearPolicy(PilcoPolicy):
    """ũ = A x + b: weight A (du, dx), bias b (du,); zero-initialised unless given."""

    def __init__(self, dx: int, u_max, weight=None, bias=None):
        super().__init__(dx, u_max)
        self.weight = torch.nn.Parameter(
            torch.zeros(self.du, dx, dtype=F64)
            if weight is None
            else _as_f64(weight, "weight", (self.du, dx))
        )
        self.bias = torch.nn.Parameter(
            torch.zeros(self.du, dtype=F64) if bias is None else _as_f64(bias, "bias", (self.du,))
        )

    def preactivation(self, x):
        return x @ self.weight.T + self.bias

    def preactivation_moments(self, mean, cov):
        return (
            mean @ self.weight.T + self.bias,
            self.weight @ cov @ self.weight.T,
            cov @ self.weight.T,
        )


class RBFPolicy(PilcoPolicy):
    """ũ_a(x) = Σ_i w_ai exp(−½ Σ_d (x_d − c_id)² / ℓ_ad²): M Gaussian basis functions with centres
    c (M, dx), weights w (du, M) and lengthscales ℓ (du, dx) in state units (parametrised by
    log ℓ), PILCO's "deterministic GP" policy. Its moments are the GP-mean integrals of
    ``gp_moments`` (with no posterior variance: iK = 0, σ_f = 1)."""

    def __init__(self, centres, u_max, lengthscales, weights=None, seed: int = 0):
        centres = _as_f64(centres, "centres")
        if centres.ndim != 2 or len(centres) < 1:
            raise PolicyError(f"centres must be (M, dx) with M ≥ 1, got {tuple(centres.shape)}")
        super().__init__(centres.shape[1], u_max)
        m = len(centres)
        ls = _as_f64(lengthscales, "lengthscales")
        if ls.shape not in ((self.dx,), (self.du, self.dx)) or not bool((ls > 0).all()):
            raise PolicyError(
                f"lengthscales must be positive, shape ({self.dx},) or "
                f"({self.du}, {self.dx}), got {ls.tolist()}"
            )
        if weights is None:  # PILCO's start: small random weights, so ũ ≈ 0 but not flat
            gen = torch.Generator().manual_seed(seed)
            weights = 0.1 * torch.randn(self.du, m, dtype=F64, generator=gen)
        self.centres = torch.nn.Parameter(centres)
        self.log_lengthscale = torch.nn.Parameter(torch.log(ls).expand(self.du, self.dx).clone())
        self.weights = torch.nn.Parameter(_as_f64(weights, "weights", (self.du, m)))

    def preactivation(self, x):
        flat = x.reshape(-1, self.dx)
        k = se_ard(
            flat,
            self.centres,
            self.log_lengthscale,
            torch.zeros(self.du, dtype=F64, device=x.device),
        )  # (du, B, M)
        return torch.einsum("abm,am->ba", k, self.weights).reshape(*x.shape[:-1], self.du)

    def preactivation_moments(self, mean, cov):
        zeros = torch.zeros(self.du, dtype=F64, device=mean.device)
        m = len(self.centres)
        post = GPPosterior(
            self.centres,
            self.weights,
            torch.zeros(self.du, m, m, dtype=F64, device=mean.device),
            Hyperparameters(self.log_lengthscale, zeros, zeros),
        )
        mu, s, c = gp_moments(post, mean, cov, include_noise=False)
        # gp_moments adds the expected posterior variance σ_f² − E[k iK k] = 1 for iK = 0;
        # a deterministic network has none
        return mu, s - torch.eye(self.du, dtype=F64, device=mean.device), c
