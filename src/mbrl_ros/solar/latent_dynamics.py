"""Global latent dynamics with a matrix-normal-inverse-Wishart (MNIW) distribution.

    z_{t+1} = F ξ_t + w,  ξ_t = [z_t; u_t; 1] (p = dz + du + 1),  w ~ N(0, Σ),
    Σ ~ IW(Ψ, ν),  F | Σ ~ MN(M, Σ, V)   (vec F ~ N(vec M, V ⊗ Σ)).

The MNIW is conjugate to these transitions: from expected sufficient statistics Sξξ = Σ E[ξξᵀ],
Szξ = Σ E[z'ξᵀ], Szz = Σ E[z'z'ᵀ] over n transitions the posterior is
V' = (V⁻¹ + Sξξ)⁻¹, M' = (M V⁻¹ + Szξ) V', Ψ' = Ψ + Szz + M V⁻¹ Mᵀ − M' V'⁻¹ M'ᵀ, ν' = ν + n.
Its natural parameters (V⁻¹, M V⁻¹, Ψ + M V⁻¹ Mᵀ, ν) are linear in those statistics, so the
stochastic (natural-gradient) update is a convex combination of them. The structured inference
needs the expectations E[Σ⁻¹] = νΨ⁻¹, E[Σ⁻¹F] = νΨ⁻¹M, E[FᵀΣ⁻¹F] = dz·V + ν MᵀΨ⁻¹M and
E[log|Σ⁻¹|] = Σᵢ ψ((ν − i + 1)/2) + dz log 2 − log|Ψ|.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma

from mbrl_ros.trajopt.local_dynamics import LocalDynamics


@dataclass(frozen=True)
class ExpectedDynamics:
    """E[Σ⁻¹] (dz, dz), E[Σ⁻¹F] (dz, p), E[FᵀΣ⁻¹F] (p, p), E[log|Σ⁻¹|] under an MNIW."""

    prec: np.ndarray
    prec_F: np.ndarray
    F_prec_F: np.ndarray
    logdet_prec: float


@dataclass(frozen=True)
class MNIW:
    """M (dz, p), V (p, p) SPD, Ψ (dz, dz) SPD, ν > dz − 1 (degrees of freedom); du = p − dz − 1."""

    M: np.ndarray
    V: np.ndarray
    Psi: np.ndarray
    nu: float

    def __post_init__(self):
        dz, p = np.shape(self.M)
        if np.shape(self.V) != (p, p) or np.shape(self.Psi) != (dz, dz) or p < dz + 1:
            raise ValueError(
                f"MNIW shapes M {np.shape(self.M)}, V {np.shape(self.V)}, Ψ "
                f"{np.shape(self.Psi)} do not fit z' = F [z; u; 1]"
            )
        if not self.nu > dz - 1:
            raise ValueError(f"ν = {self.nu} must exceed dz − 1 = {dz - 1}")
        for name in ("M", "V", "Psi"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"MNIW {name} has non-finite values")

    @property
    def dz(self) -> int:
        return self.M.shape[0]

    @property
    def du(self) -> int:
        return self.M.shape[1] - self.M.shape[0] - 1

    @classmethod
    def prior(
        cls,
        dz: int,
        du: int,
        scale: float = 1.0,
        strength: float = 1.0,
        dynamics_scale: float = 1.0,
    ) -> MNIW:
        """A weak prior around z' = z + w: M = [I 0 0], V = dynamics_scale²·I, Ψ =
        scale·strength·I and ν = dz + 1 + strength, so E[Σ] = scale·I."""
        p = dz + du + 1
        M = np.zeros((dz, p))
        M[:, :dz] = np.eye(dz)
        nu = dz + 1.0 + strength
        return cls(M, dynamics_scale**2 * np.eye(p), scale * strength * np.eye(dz), nu)

    def natural(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(V⁻¹, M V⁻¹, Ψ + M V⁻¹ Mᵀ, ν)."""
        Vinv = np.linalg.inv(self.V)
        MVinv = self.M @ Vinv
        return Vinv, MVinv, self.Psi + MVinv @ self.M.T, self.nu

    @classmethod
    def from_natural(cls, Vinv, MVinv, PsiM, nu) -> MNIW:
        Vinv = 0.5 * (Vinv + Vinv.T)
        V = np.linalg.inv(Vinv)
        V = 0.5 * (V + V.T)
        M = MVinv @ V
        Psi = PsiM - M @ MVinv.T
        return cls(M, V, 0.5 * (Psi + Psi.T), float(nu))

    def posterior(
        self, S_xixi, S_zxi, S_zz, n: float, step: float = 1.0, prior: MNIW | None = None
    ) -> MNIW:
        """The conjugate update of ``prior`` (default: self) by the statistics (see module), as
        a natural-gradient step of size ``step`` from self: step 1 is the exact posterior."""
        base = (prior or self).natural()
        target = (base[0] + S_xixi, base[1] + S_zxi, base[2] + S_zz, base[3] + n)
        if step >= 1.0:
            return MNIW.from_natural(*target)
        now = self.natural()
        return MNIW.from_natural(
            (1 - step) * now[0] + step * target[0],
            (1 - step) * now[1] + step * target[1],
            (1 - step) * now[2] + step * target[2],
            (1 - step) * now[3] + step * target[3],
        )

    def expected(self) -> ExpectedDynamics:
        dz = self.dz
        Psi_inv = np.linalg.inv(self.Psi)
        prec = self.nu * Psi_inv
        prec_F = prec @ self.M
        F_prec_F = dz * self.V + self.M.T @ prec_F
        _, logdet_psi = np.linalg.slogdet(self.Psi)
        i = np.arange(1, dz + 1)
        logdet = float(digamma((self.nu - i + 1) / 2.0).sum() + dz * np.log(2.0) - logdet_psi)
        return ExpectedDynamics(
            0.5 * (prec + prec.T), prec_F, 0.5 * (F_prec_F + F_prec_F.T), logdet
        )

    def noise_mean(self) -> np.ndarray:
        """E[Σ] = Ψ/(ν − dz − 1) where ν > dz + 1, else the mode Ψ/(ν + dz + 1)."""
        d = self.nu - self.dz - 1
        return self.Psi / (d if d > 0 else self.nu + self.dz + 1)

    def local_dynamics(self, T: int, x0_mean, x0_cov) -> LocalDynamics:
        """The posterior-mean dynamics as T time-invariant steps of ``trajopt``'s LocalDynamics
        (Fx = M's [z, u] columns, fx = its last column, N = E[Σ]) from p(z_0) = N(x0_mean,
        x0_cov)."""
        dz = self.dz
        rep = lambda a: np.repeat(a[None], T, axis=0)  # noqa: E731
        return LocalDynamics(
            rep(self.M[:, :-1]),
            rep(self.M[:, -1]),
            rep(self.noise_mean()),
            np.asarray(x0_mean, float).reshape(dz),
            np.asarray(x0_cov, float).reshape(dz, dz),
        )

    def niw_prior(self, points: np.ndarray, strength: float = 1.0):
        """``trajopt.local_dynamics.NIWPriorSource``: the joint Gaussian over [z, u, z'] that the
        mean dynamics imply for the inputs of ``points`` (N, dz+du+dz) — their empirical mean and
        covariance of [z, u], z' = M ξ with noise E[Σ] — as (μ0, Φ, m, n0) with m = n0 = the
        MNIW's pseudo-count ν·strength (GPS's GMM prior convention: Φ scaled by n0)."""
        dz, du = self.dz, self.du
        pts = np.asarray(points, float)
        if pts.ndim != 2 or pts.shape[1] != 2 * dz + du:
            raise ValueError(f"points must be (N, {2 * dz + du}), got {pts.shape}")
        xu = pts[:, : dz + du]
        mu_xu = xu.mean(0)
        S = np.cov(xu.T, bias=True).reshape(dz + du, dz + du)
        A, c = self.M[:, :-1], self.M[:, -1]
        mu = np.concatenate([mu_xu, A @ mu_xu + c])
        cov = np.block([[S, S @ A.T], [A @ S, A @ S @ A.T + self.noise_mean()]])
        m = float(self.nu * strength)
        return mu, m * cov, m, m


def transition_statistics(
    mean: np.ndarray, second: np.ndarray, cross: np.ndarray, U: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Expected statistics of z_{t+1} = F [z_t; u_t; 1] + w from the latent posteriors.

    mean (B, T, dz) = E[z_t], second (B, T, dz, dz) = E[z_t z_tᵀ], cross (B, T−1, dz, dz) =
    E[z_{t+1} z_tᵀ], U (B, T−1, du) → (Sξξ (p, p), Szξ (dz, p), Szz (dz, dz), n)."""
    B, T, dz = mean.shape
    w = np.concatenate([U, np.ones(U.shape[:2] + (1,))], axis=2)  # (B, T−1, du+1)
    m0 = mean[:, :-1]
    top = np.concatenate([second[:, :-1], np.einsum("bti,btj->btij", m0, w)], axis=3)
    bottom = np.concatenate(
        [np.einsum("bti,btj->btij", w, m0), np.einsum("bti,btj->btij", w, w)], axis=3
    )
    S_xixi = np.concatenate([top, bottom], axis=2).sum((0, 1))
    S_zxi = np.concatenate([cross, np.einsum("bti,btj->btij", mean[:, 1:], w)], axis=3).sum((0, 1))
    S_zz = second[:, 1:].sum((0, 1))
    return 0.5 * (S_xixi + S_xixi.T), S_zxi, 0.5 * (S_zz + S_zz.T), float(B * (T - 1))
