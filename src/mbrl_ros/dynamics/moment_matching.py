"""Analytic moment matching of GP predictions at Gaussian inputs (PILCO: Deisenroth & Rasmussen
2011; Deisenroth's thesis §2.3 / the PILCO book chapter).

For x ~ N(μ, Σ) over the joint (s, a) input and the GP of ``gp`` (exact or sparse: both use the
``GPPosterior`` form support X, weights β, iK), the exact mean, covariance and input-output
covariance of the GP prediction Δ = f(x) (+ noise) are computed in closed form, with
Λ_a = diag(ℓ_a²) and ν_i = X_i − μ:

* M_a = β_aᵀ q_a, q_ai = σ_f,a² |ΣΛ_a⁻¹ + I|^(−½) exp(−½ ν_iᵀ (Σ + Λ_a)⁻¹ ν_i)
* Cov[x, Δ_a] = Σ (Σ + Λ_a)⁻¹ Σ_i β_ai q_ai ν_i
* S_ab = β_aᵀ Q^ab β_b − M_a M_b (+ δ_ab (σ_f,a² − tr(iK_a Q^aa) + σ_n,a²)), where
  Q^ab_ij = k_a(X_i, μ) k_b(X_j, μ) |R|^(−½) exp(½ z_ijᵀ R⁻¹ Σ z_ij), R = Σ(Λ_a⁻¹ + Λ_b⁻¹) + I,
  z_ij = Λ_a⁻¹ ν_i + Λ_b⁻¹ ν_j.

``gp_moments`` works in the GP's normalised coordinates; ``predict_moments`` maps a Gaussian
over (s, a) in state units to them and back once, and returns the moments of Δs and of s' = s + Δs.
All functions are differentiable in μ and Σ (torch autograd) and batched over leading dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mbrl_ros.dynamics.base import ModelError
from mbrl_ros.dynamics.gp import F64, GPModelBase, GPPosterior

Q_ELEMENTS = 2**22  # entries of the Q^ab blocks (B, outputs b, N, N) formed at once


def _check_shapes(mean: torch.Tensor, cov: torch.Tensor, d: int) -> None:
    if mean.shape[-1:] != (d,) or cov.shape != (*mean.shape, d):
        raise ModelError(
            f"moment matching needs mean (..., {d}) and cov (..., {d}, {d}), got "
            f"{tuple(mean.shape)} and {tuple(cov.shape)}"
        )


def gp_moments(
    post: GPPosterior, mu: torch.Tensor, sigma: torch.Tensor, include_noise: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean (..., E), covariance (..., E, E) and input-output covariance Cov[x, Δ] (..., D, E)
    of the GP prediction at x ~ N(mu (..., D), sigma (..., D, D)), normalised coordinates.
    ``include_noise``: add the observation noise σ_n² to the diagonal (as ``predict`` does)."""
    x, beta, ik = post.support, post.beta, post.iK
    d = x.shape[1]
    _check_shapes(mu, sigma, d)
    batch = mu.shape[:-1]
    mu, sigma = mu.reshape(-1, d), sigma.reshape(-1, d, d)
    e = beta.shape[0]
    lam = torch.exp(2 * post.hyp.log_lengthscale)  # (E, D)
    sf2 = torch.exp(2 * post.hyp.log_signal_std)  # (E,)
    eye = torch.eye(d, dtype=mu.dtype, device=mu.device)
    nu = x[None] - mu[:, None]  # (B, N, D)

    # mean and input-output covariance
    s_lam = sigma[:, None] + torch.diag_embed(lam)[None]  # (B, E, D, D)
    sol = torch.linalg.solve(s_lam, nu[:, None].transpose(-1, -2)).transpose(-1, -2)  # (B,E,N,D)
    logdet = torch.linalg.slogdet(s_lam)[1] - torch.log(lam).sum(-1)  # log|ΣΛ⁻¹ + I|
    q = sf2[None, :, None] * torch.exp(
        -0.5 * (nu[:, None] * sol).sum(-1) - 0.5 * logdet[..., None]
    )  # (B, E, N)
    bq = beta[None] * q
    mean = bq.sum(-1)  # (B, E)
    cross = sigma @ torch.einsum("ben,bend->bde", bq, sol)  # (B, D, E)

    # covariance
    log_k = 2 * post.hyp.log_signal_std[None, :, None] - 0.5 * (
        nu[:, None] ** 2 / lam[None, :, None]
    ).sum(-1)  # (B, E, N)
    za = nu[:, None] / lam[None, :, None]  # (B, E, N, D)
    n = x.shape[0]
    chunk = max(1, Q_ELEMENTS // (len(mu) * n * n))  # outputs b per Q block
    rows = []  # row a of E[f_a f_b] for b ≥ a, (B, E − a)
    for a in range(e):
        parts = []
        for b0 in range(a, e, chunk):
            bs = slice(b0, min(e, b0 + chunk))
            c = 1 / lam[a] + 1 / lam[bs]  # (b, D)
            r = sigma[:, None] * c[None, :, None, :] + eye  # (B, b, D, D)
            t = torch.linalg.solve(r, sigma[:, None].expand_as(r))  # R⁻¹Σ
            t = 0.5 * (t + t.transpose(-1, -2))
            zb = za[:, bs]  # (B, b, N, D)
            ta = za[:, a, None] @ t  # (B, b, N, D)
            quad = 0.5 * (
                (ta * za[:, a, None]).sum(-1)[..., :, None]
                + ((zb @ t) * zb).sum(-1)[..., None, :]
                + 2 * ta @ zb.transpose(-1, -2)
            )  # (B, b, N, N)
            q_ab = torch.exp(
                log_k[:, a, None, :, None]
                + log_k[:, bs, None, :]
                + quad
                - 0.5 * torch.linalg.slogdet(r)[1][..., None, None]
            )
            v = torch.einsum("i,bkij,kj->bk", beta[a], q_ab, beta[bs])
            if b0 == a:  # the expected variance term, E_x[σ_f² − k(x)ᵀ iK k(x)]
                v = torch.cat(
                    [(v[:, 0] + sf2[a] - (ik[a] * q_ab[:, 0]).sum((-1, -2)))[:, None], v[:, 1:]], 1
                )
            parts.append(v)
        rows.append(torch.cat(parts, 1))
    upper = torch.stack(
        [torch.cat([mu.new_zeros(len(mu), a), row], 1) for a, row in enumerate(rows)], 1
    )  # (B, E, E), b ≥ a
    second = upper + upper.transpose(1, 2) - torch.diag_embed(torch.diagonal(upper, 0, 1, 2))
    cov = second - mean[:, :, None] * mean[:, None, :]
    if include_noise:
        cov = cov + torch.diag(torch.exp(2 * post.hyp.log_noise_std))
    return mean.reshape(*batch, e), cov.reshape(*batch, e, e), cross.reshape(*batch, d, e)


@dataclass
class StepMoments:
    """Gaussian moments of one step in state units: Δs mean (..., dx), covariance (..., dx, dx)
    and Cov[(s, a), Δs] (..., dx + du, dx); the same for s' = s + Δs."""

    delta_mean: torch.Tensor
    delta_cov: torch.Tensor
    delta_cross: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    cross: torch.Tensor


def predict_moments(
    model: GPModelBase, mean: torch.Tensor, cov: torch.Tensor, include_noise: bool = True
) -> StepMoments:
    """Moments of Δs and s' for (s, a) ~ N(mean (..., dx + du), cov (..., dx + du, dx + du)) in
    state units, through the GP ``model`` ('gp' or 'sparse-gp'); float64, differentiable."""
    post = model._require()
    dx = model.dx
    _check_shapes(mean, cov, dx + model.du)
    mean, cov = mean.to(device=model.device, dtype=F64), cov.to(device=model.device, dtype=F64)
    n = model._norm(F64)
    in_mean = torch.cat([n["state_mean"], n["action_mean"]])
    in_std = torch.cat([n["state_std"], n["action_std"]])
    mu_n = (mean - in_mean) / in_std
    sigma_n = cov / (in_std[:, None] * in_std[None, :])
    m_n, s_n, c_n = gp_moments(post, mu_n, sigma_n, include_noise)
    ds = n["delta_std"]
    d_mean = n["delta_mean"] + ds * m_n
    d_cov = s_n * (ds[:, None] * ds[None, :])
    d_cross = c_n * (in_std[:, None] * ds[None, :])
    c_s = d_cross[..., :dx, :]
    next_cov = cov[..., :dx, :dx] + d_cov + c_s + c_s.transpose(-1, -2)
    return StepMoments(
        d_mean,
        d_cov,
        d_cross,
        mean[..., :dx] + d_mean,
        0.5 * (next_cov + next_cov.transpose(-1, -2)),
        cov[..., :, :dx] + d_cross,
    )
