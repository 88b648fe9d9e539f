"""SOLAR's structured mean-field variational inference (the SVAE objective, Johnson et al. 2016).

The variational family is q(θ) q(z_{0:T−1}) per trajectory: q(θ) an MNIW over the global
dynamics, q(z) ∝ exp(E_q(θ)[log p(z | θ, u)]) · Πₜ ψ(z_t; x_t), where the encoder's recognition
potentials ψ(z_t; x_t) = N(z_t; m_t, diag(exp(s_t))) replace the image likelihood. Because the
expected log-dynamics is a quadratic in z, q(z) is a Gaussian chain — the latent dynamics stay
linear-Gaussian — with block-tridiagonal precision J = J_p + diag(exp(−s)) and linear term
h = h_p + exp(−s)·m. It is solved densely (n = T·dz variables, a Cholesky factor per trajectory).
The local evidence lower bound of one trajectory is

    L = E_q[log p(x | z)] + E_q E_q(θ)[log p(z | θ, u)] + H[q(z)]
      = E_q[log p(x | z)] − ½ tr(J_p E[zzᵀ]) + h_pᵀ E[z] + c_p + ½ log|2πe J⁻¹|,

the reconstruction term by one reparameterised sample z = E[z] + L⁻ᵀε (J = L Lᵀ). The global
term −KL(q(θ) ‖ p(θ)) does not depend on the networks; q(θ) is updated by conjugate
(natural-gradient) steps from the expected statistics of q(z) (``latent_dynamics``).
p(z_0) = N(0, I).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_ros.solar.latent_dynamics import ExpectedDynamics
from mbrl_ros.solar.vae import gaussian_log_likelihood


@dataclass(frozen=True)
class ChainPrior:
    """E_q(θ)[log p(z | θ, u)] = −½ vᵀJ v + hᵀv + c of the stacked latents v (B, T·dz):
    J (T·dz, T·dz) shared, h (B, T·dz), c (B,)."""

    J: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor


@dataclass(frozen=True)
class LatentPosterior:
    """q(z) per trajectory: mean (B, T, dz), precision factor chol (B, n, n) (J = L Lᵀ)."""

    mean: torch.Tensor
    chol: torch.Tensor

    def covariance(self) -> torch.Tensor:
        """(B, n, n) = J⁻¹."""
        return torch.cholesky_inverse(self.chol)

    def sample(self, eps: torch.Tensor) -> torch.Tensor:
        """z = mean + L⁻ᵀ ε for ε (B, T, dz) standard normal → (B, T, dz)."""
        B, T, dz = self.mean.shape
        x = torch.linalg.solve_triangular(self.chol.mT, eps.reshape(B, -1, 1), upper=True)
        return self.mean + x.reshape(B, T, dz)

    def entropy(self) -> torch.Tensor:
        """H[q] (B,) = ½ n (1 + log 2π) − Σ log diag L."""
        n = self.chol.shape[-1]
        return 0.5 * n * (1.0 + math.log(2 * math.pi)) - torch.log(
            torch.diagonal(self.chol, dim1=-2, dim2=-1)
        ).sum(-1)

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """numpy E[z_t] (B, T, dz), E[z_t z_tᵀ] (B, T, dz, dz), E[z_{t+1} z_tᵀ] (B, T−1, dz, dz)
        (the statistics of the conjugate dynamics update)."""
        B, T, dz = self.mean.shape
        cov = self.covariance().detach().cpu().double().numpy().reshape(B, T, dz, T, dz)
        m = self.mean.detach().cpu().double().numpy()
        t = np.arange(T)
        second = cov[:, t, :, t].transpose(1, 0, 2, 3) + np.einsum("bti,btj->btij", m, m)
        cross = cov[:, t[1:], :, t[:-1]].transpose(1, 0, 2, 3) + np.einsum(
            "bti,btj->btij", m[:, 1:], m[:, :-1]
        )
        return m, second, cross


def chain_prior(expected: ExpectedDynamics, U: torch.Tensor) -> ChainPrior:
    """The expected log-prior of the latent chain for actions U (B, T−1, du) under the MNIW's
    expectations: per transition −½ z'ᵀE[Σ⁻¹]z' + z'ᵀE[Σ⁻¹F]ξ − ½ ξᵀE[FᵀΣ⁻¹F]ξ + ½E[log|Σ⁻¹|]
    − ½ dz log 2π with ξ = [z; u; 1], plus log N(z_0; 0, I)."""
    dtype, device = U.dtype, U.device
    B, T1, du = U.shape
    T = T1 + 1
    as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    A, BF, C = as_t(expected.prec), as_t(expected.prec_F), as_t(expected.F_prec_F)
    dz = A.shape[0]
    Bz, Bw = BF[:, :dz], BF[:, dz:]
    Czz, Czw, Cww = C[:dz, :dz], C[:dz, dz:], C[dz:, dz:]
    n = T * dz
    J = torch.zeros(n, n, dtype=dtype, device=device)
    J[:dz, :dz] = torch.eye(dz, dtype=dtype, device=device)
    for t in range(T1):
        a, b = slice(t * dz, (t + 1) * dz), slice((t + 1) * dz, (t + 2) * dz)
        J[a, a] += Czz
        J[b, b] += A
        J[b, a] -= Bz
        J[a, b] -= Bz.T
    w = torch.cat([U, torch.ones(B, T1, 1, dtype=dtype, device=device)], dim=2)
    h = torch.zeros(B, T, dz, dtype=dtype, device=device)
    h[:, 1:] += w @ Bw.T
    h[:, :-1] -= w @ Czw.T
    c = (
        -0.5 * torch.einsum("bti,ij,btj->b", w, Cww, w)
        + T1 * 0.5 * expected.logdet_prec
        - T * 0.5 * dz * math.log(2 * math.pi)
    )
    return ChainPrior(J, h.reshape(B, n), c)


def structured_posterior(
    prior: ChainPrior, enc_mean: torch.Tensor, enc_logvar: torch.Tensor
) -> LatentPosterior:
    """q(z) ∝ exp(−½ vᵀJ_p v + h_pᵀv) Πₜ N(z_t; m_t, diag(exp(s_t))) for encoder potentials
    m, s (B, T, dz)."""
    B, T, dz = enc_mean.shape
    prec = torch.exp(-enc_logvar).reshape(B, -1)
    J = prior.J + torch.diag_embed(prec)
    h = prior.h + prec * enc_mean.reshape(B, -1)
    L = torch.linalg.cholesky(J)
    mean = torch.cholesky_solve(h.unsqueeze(-1), L).reshape(B, T, dz)
    return LatentPosterior(mean, L)


def expected_log_prior(prior: ChainPrior, q: LatentPosterior) -> torch.Tensor:
    """E_q[−½ vᵀJ_p v + h_pᵀv + c_p] (B,)."""
    B = q.mean.shape[0]
    m = q.mean.reshape(B, -1)
    second = q.covariance() + m.unsqueeze(-1) * m.unsqueeze(-2)
    return -0.5 * (prior.J * second).sum((-2, -1)) + (prior.h * m).sum(-1) + prior.c


def local_elbo(
    prior: ChainPrior,
    enc_mean,
    enc_logvar,
    decode,
    images: torch.Tensor,
    pixel_std: float,
    eps: torch.Tensor,
    beta: float = 1.0,
    observed: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, LatentPosterior]:
    """The local ELBO (B,) of trajectories ``images`` (B, T, 3, H, W) in [0, 1], given encoder
    potentials (B, T, dz), a decoder ``decode(z (N, dz)) → (N, 3, H, W)`` and the
    reparameterisation noise eps (B, T, dz); and q(z). ``beta`` < 1 weights the prior and
    entropy terms down (a β-annealed bound, below the ELBO's value for β < 1: training starts
    with it so the decoder does not learn to ignore the latent). ``observed(z (B, T, dz)) → (B,)``:
    the log-likelihood of further observations of the latents (SOLAR's observed costs), taken
    at the same sample as the images'."""
    q = structured_posterior(prior, enc_mean, enc_logvar)
    z = q.sample(eps)
    B, T = images.shape[:2]
    recon = gaussian_log_likelihood(images.flatten(0, 1), decode(z.flatten(0, 1)), pixel_std)
    likelihood = recon.view(B, T).sum(1)
    if observed is not None:
        likelihood = likelihood + observed(z)
    return likelihood + beta * (expected_log_prior(prior, q) + q.entropy()), q
