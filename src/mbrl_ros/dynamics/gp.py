"""Gaussian-process dynamics: one GP per output dimension on shared inputs, SE-ARD kernels.

Inputs are the normalised (s, a), targets the normalised Δs (``base`` conventions); the mean
function is zero. Each output a has a lengthscale per input ℓ_a (D,), a signal std σ_f,a and a
noise std σ_n,a, found by maximising the log marginal likelihood with L-BFGS (torch autograd).
The hyperparameters are kept sane by hard bounds through a sigmoid reparametrisation:
ℓ ∈ ``lengthscale_bounds`` (normalised input units), σ_f ∈ ``signal_std_bounds``, and
σ_n ≥ max(``noise_std_floor``, σ_f / ``max_snr``) (a noise floor and a signal-to-noise cap);
hyperparameters are fitted on a random subset of at most ``hyper_points`` transitions.

* ``GPModel`` (kind 'gp'): the exact GP on all training points, at most ``max_points``.
* ``SparseGPModel`` (kind 'sparse-gp'): Titsias' variational sparse GP (VFE / DTC predictive)
  with M inducing inputs chosen by k-means on the training inputs and held fixed while the
  hyperparameters maximise the collapsed bound; the posterior sums over all data in chunks, so
  memory is O(M² + M·chunk) whatever N is.

Both keep their posterior in one form, ``GPPosterior``: support inputs X (M, D), weights β (E, M)
and a matrix per output iK (E, M, M), with mean_a(x) = k_a(x, X) β_a and latent variance
σ_f,a² − k_a(x, X) iK_a k_a(X, x). Exact: X = training inputs, iK = (K + σ_n² I)⁻¹; sparse:
X = inducing inputs, iK = K_uu⁻¹ − (K_uu + σ_n⁻² K_uf K_fu)⁻¹. Moment matching for Gaussian
inputs (``moment_matching``) works on this form, so it serves both. Everything is float64.
Written directly in torch (no GP library): the models are small, and the one posterior form is
what moment matching needs.
"""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass

import torch

from mbrl_ros.common.artifacts import ArtifactError, Schema, TensorSpec, encode
from mbrl_ros.data.dataset import Dataset, NormStats
from mbrl_ros.dynamics.base import (
    DynamicsModel,
    FitReport,
    FitStopped,
    ModelError,
    ModelSignature,
    Progress,
    Propagation,
    model_schema,
    register,
)
from mbrl_ros.dynamics.gmm import kmeans

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)
CHUNK_ELEMENTS = 2**22  # kernel entries evaluated at once when predicting / summing over data


@dataclass(frozen=True)
class GPConfig:
    """Hyperparameter bounds (normalised units) and training settings. ``iterations``: L-BFGS
    iterations in total, run in stages of ``stage_iterations`` (loss logged and checked after
    each); ``max_points``: the exact GP refuses more training transitions (its posterior keeps
    E matrices of N × N: 450 MB for the 7-DOF arm's 14 outputs at 2000); ``inducing_points``:
    M of the sparse GP."""

    lengthscale_bounds: tuple[float, float] = (0.05, 100.0)
    signal_std_bounds: tuple[float, float] = (1e-3, 10.0)
    noise_std_floor: float = 1e-4
    max_snr: float = 1e3
    iterations: int = 100
    stage_iterations: int = 20
    hyper_points: int = 500
    max_points: int = 2000
    inducing_points: int = 200
    seed: int = 0

    def __post_init__(self):
        for name in (
            "iterations",
            "stage_iterations",
            "hyper_points",
            "max_points",
            "inducing_points",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"GP setting {name} = {value!r} must be an integer ≥ 1")
        for name in ("lengthscale_bounds", "signal_std_bounds"):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                lo = hi = math.nan
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
                raise ModelError(
                    f"GP setting {name} = {value!r} must be two numbers 0 < low < high"
                )
            object.__setattr__(self, name, (lo, hi))
        for name in ("noise_std_floor", "max_snr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ModelError(f"GP setting {name} = {value!r} must be positive")
        if self.noise_std_floor >= 1.0:
            raise ModelError(
                f"GP setting noise_std_floor = {self.noise_std_floor} must be < 1 "
                "(normalised targets have unit std)"
            )


# -- kernel and hyperparameters -------------------------------------------------------------------
def se_ard(
    x1: torch.Tensor, x2: torch.Tensor, log_lengthscale: torch.Tensor, log_signal_std: torch.Tensor
) -> torch.Tensor:
    """SE-ARD kernel matrices (E, n1, n2) of x1 (n1, D) and x2 (n2, D) for E outputs with
    log-lengthscales (E, D) and log signal stds (E,)."""
    ls = log_lengthscale.exp()[:, None, :]
    a, b = x1[None] / ls, x2[None] / ls
    sq = torch.baddbmm(
        (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :], a, b.transpose(1, 2), alpha=-2.0
    )
    return torch.exp(2 * log_signal_std[:, None, None] - 0.5 * sq.clamp_min(0.0))


@dataclass
class Hyperparameters:
    """log ℓ (E, D), log σ_f (E,), log σ_n (E,) as tensors."""

    log_lengthscale: torch.Tensor
    log_signal_std: torch.Tensor
    log_noise_std: torch.Tensor

    def detach(self) -> Hyperparameters:
        return Hyperparameters(*(t.detach().clone() for t in vars(self).values()))

    def finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in vars(self).values())


class _BoundedHyper:
    """Unconstrained parameters ↔ bounded hyperparameters (sigmoid maps onto the bounds)."""

    def __init__(self, config: GPConfig):
        self.ls = tuple(math.log(v) for v in config.lengthscale_bounds)
        self.sf = tuple(math.log(v) for v in config.signal_std_bounds)
        self.floor, self.log_snr = math.log(config.noise_std_floor), math.log(config.max_snr)
        self.sn_high = math.log(10.0)

    @staticmethod
    def _squash(raw, lo, hi):
        return lo + (hi - lo) * torch.sigmoid(raw)

    @staticmethod
    def _unsquash(value, lo, hi):
        u = ((value - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
        return torch.log(u) - torch.log1p(-u)

    def _noise_low(self, log_sf):
        return torch.clamp_min(log_sf - self.log_snr, self.floor)

    def constrain(self, raw: list[torch.Tensor]) -> Hyperparameters:
        log_ls = self._squash(raw[0], *self.ls)
        log_sf = self._squash(raw[1], *self.sf)
        log_sn = self._squash(raw[2], self._noise_low(log_sf), self.sn_high)
        return Hyperparameters(log_ls, log_sf, log_sn)

    def unconstrain(self, hyp: Hyperparameters) -> list[torch.Tensor]:
        return [
            self._unsquash(hyp.log_lengthscale, *self.ls),
            self._unsquash(hyp.log_signal_std, *self.sf),
            self._unsquash(hyp.log_noise_std, self._noise_low(hyp.log_signal_std), self.sn_high),
        ]


def _cholesky(k: torch.Tensor, what: str) -> torch.Tensor:
    """Cholesky factor of the batch of symmetric matrices ``k``, adding jitter (1e-10 … 1e-4
    of the mean diagonal) where needed; ModelError if even that fails."""
    scale = k.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp_min(1e-300)
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    for jitter in (0.0, 1e-10, 1e-8, 1e-6, 1e-4):
        l, info = torch.linalg.cholesky_ex(k + (jitter * scale)[..., None] * eye)
        if not bool(info.any()):
            return l
    raise ModelError(
        f"{what} is not positive definite even with jitter; the data may have "
        "duplicate inputs with different targets at a very low noise bound"
    )


# -- posterior ------------------------------------------------------------------------------
@dataclass
class GPPosterior:
    """Predictive form shared by the exact and the sparse GP (see the module docstring):
    support (M, D), beta (E, M), iK (E, M, M) and the hyperparameters, float64 tensors."""

    support: torch.Tensor
    beta: torch.Tensor
    iK: torch.Tensor
    hyp: Hyperparameters

    def finite(self) -> bool:
        return self.hyp.finite() and all(
            bool(torch.isfinite(t).all()) for t in (self.support, self.beta, self.iK)
        )

    def mean_var(
        self, x: torch.Tensor, with_var: bool = True, include_noise: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised Δs mean (B, E) and variance (B, E) at normalised inputs x (B, D); the
        variance includes the noise σ_n² if ``include_noise``."""
        e, m = self.beta.shape
        step = max(1, CHUNK_ELEMENTS // (e * m))
        means, variances = [], []
        for i in range(0, x.shape[0], step):
            k = se_ard(
                x[i : i + step], self.support, self.hyp.log_lengthscale, self.hyp.log_signal_std
            )  # (E, b, M)
            means.append(torch.einsum("ebm,em->be", k, self.beta))
            if with_var:
                quad = ((k @ self.iK) * k).sum(-1).T  # (b, E)
                var = (torch.exp(2 * self.hyp.log_signal_std) - quad).clamp_min(1e-12)
                if include_noise:
                    var = var + torch.exp(2 * self.hyp.log_noise_std)
                variances.append(var)
        mean = torch.cat(means) if means else x.new_zeros((0, e))
        if not with_var:
            return mean, None
        return mean, torch.cat(variances) if variances else x.new_zeros((0, e))


def exact_posterior(x: torch.Tensor, y: torch.Tensor, hyp: Hyperparameters) -> GPPosterior:
    """Exact GP posterior from inputs x (N, D) and targets y (E, N)."""
    k = se_ard(x, x, hyp.log_lengthscale, hyp.log_signal_std)
    k = k + torch.diag_embed(torch.exp(2 * hyp.log_noise_std)[:, None].expand(-1, len(x)))
    l = _cholesky(k, "GP kernel matrix")
    beta = torch.cholesky_solve(y[..., None], l)[..., 0]
    return GPPosterior(x, beta, torch.cholesky_inverse(l), hyp)


def exact_neg_log_ml(x: torch.Tensor, y: torch.Tensor, hyp: Hyperparameters) -> torch.Tensor:
    """Negative log marginal likelihood per point, summed over outputs (scalar). Its gradient
    is formed as tr(W ∂K/∂θ) with W = ½ (K⁻¹ − α αᵀ), α = K⁻¹ y: one Cholesky factorisation and
    inverse per output, about 5× less work than differentiating through the factorisation."""
    n = len(x)
    k = se_ard(x, x, hyp.log_lengthscale, hyp.log_signal_std)
    k = k + torch.diag_embed(torch.exp(2 * hyp.log_noise_std)[:, None].expand(-1, n))
    with torch.no_grad():
        l = _cholesky(k, "GP kernel matrix")
        alpha = torch.cholesky_solve(y[..., None], l)  # (E, N, 1)
        value = (
            0.5 * (y[..., None] * alpha).sum()
            + torch.log(l.diagonal(dim1=-2, dim2=-1)).sum()
            + 0.5 * n * LOG_2PI * len(y)
        )
        w = 0.5 * (torch.cholesky_inverse(l) - alpha @ alpha.transpose(1, 2))
    return (value + (w * (k - k.detach())).sum()) / n


def _sparse_terms(z, x, y, hyp):
    """Cholesky of K_uu (E, M, M), A = L⁻¹ K_uf / σ_n (E, M, N) and A y / σ_n (E, M)."""
    kuu = se_ard(z, z, hyp.log_lengthscale, hyp.log_signal_std)
    l = _cholesky(kuu, "inducing-point kernel matrix")
    sn = torch.exp(hyp.log_noise_std)[:, None, None]
    kuf = se_ard(z, x, hyp.log_lengthscale, hyp.log_signal_std)
    a = torch.linalg.solve_triangular(l, kuf, upper=False) / sn
    return l, a, (a @ y[..., None])[..., 0] / sn[..., 0]


def sparse_neg_log_ml(
    z: torch.Tensor, x: torch.Tensor, y: torch.Tensor, hyp: Hyperparameters
) -> torch.Tensor:
    """Negative Titsias collapsed evidence lower bound per point, summed over outputs."""
    n, m = len(x), len(z)
    l, a, ay = _sparse_terms(z, x, y, hyp)
    b = a @ a.transpose(1, 2) + torch.eye(m, dtype=x.dtype, device=x.device)
    lb = _cholesky(b, "sparse GP matrix I + A Aᵀ")
    c = torch.linalg.solve_triangular(lb, ay[..., None], upper=False)[..., 0]
    sn2 = torch.exp(2 * hyp.log_noise_std)
    sf2 = torch.exp(2 * hyp.log_signal_std)
    bound = (
        -0.5 * n * (LOG_2PI + torch.log(sn2))
        - torch.log(lb.diagonal(dim1=-2, dim2=-1)).sum(-1)
        - 0.5 * (y**2).sum(-1) / sn2
        + 0.5 * (c**2).sum(-1)
        - 0.5 * n * sf2 / sn2
        + 0.5 * (a**2).sum((-1, -2))
    )
    return -bound.sum() / n


def sparse_posterior(
    z: torch.Tensor, x: torch.Tensor, y: torch.Tensor, hyp: Hyperparameters
) -> GPPosterior:
    """VFE/DTC posterior on inducing inputs z (M, D) from all data x (N, D), y (E, N), summed
    over chunks of the data."""
    e, m = y.shape[0], len(z)
    kuu = se_ard(z, z, hyp.log_lengthscale, hyp.log_signal_std)
    l = _cholesky(kuu, "inducing-point kernel matrix")
    sn = torch.exp(hyp.log_noise_std)
    aat = torch.zeros(e, m, m, dtype=x.dtype, device=x.device)
    ay = torch.zeros(e, m, dtype=x.dtype, device=x.device)
    step = max(1, CHUNK_ELEMENTS // (e * m))
    for i in range(0, len(x), step):
        kuf = se_ard(z, x[i : i + step], hyp.log_lengthscale, hyp.log_signal_std)
        a = torch.linalg.solve_triangular(l, kuf, upper=False) / sn[:, None, None]
        aat += a @ a.transpose(1, 2)
        ay += (a @ y[:, i : i + step, None])[..., 0] / sn[:, None]
    eye = torch.eye(m, dtype=x.dtype, device=x.device)
    lb = _cholesky(aat + eye, "sparse GP matrix I + A Aᵀ")
    # Σ_u = L⁻ᵀ B⁻¹ L⁻¹, β = L⁻ᵀ B⁻¹ A y / σ_n, iK = L⁻ᵀ (I − B⁻¹) L⁻¹
    binv = torch.cholesky_inverse(lb)
    linv = torch.linalg.solve_triangular(l, eye.expand(e, m, m), upper=False)
    beta = (linv.transpose(1, 2) @ (binv @ ay[..., None]))[..., 0]
    ik = linv.transpose(1, 2) @ (eye - binv) @ linv
    return GPPosterior(z, beta, 0.5 * (ik + ik.transpose(1, 2)), hyp)


# -- models ---------------------------------------------------------------------------------
def _schema(name: str, tensors: dict[str, TensorSpec]) -> Schema:
    hyp = {
        "log_lengthscale": TensorSpec(("dx", "D")),
        "log_signal_std": TensorSpec(("dx",)),
        "log_noise_std": TensorSpec(("dx",)),
    }
    return model_schema(
        name, {**hyp, **tensors}, {"dx": 1024, "du": 512, "D": 1536, "N": 100_000, "M": 1024}
    )


class GPModelBase(DynamicsModel):
    """What the exact and the sparse GP share: fitting loop, prediction, artifacts."""

    min_transitions = 10
    _STATE: tuple[str, ...] = ("stats", "posterior")

    def __init__(
        self,
        signature: ModelSignature,
        stats: NormStats | None = None,
        device=None,
        config: GPConfig | None = None,
    ):
        super().__init__(signature, stats, device)
        self.config = config or GPConfig()
        self.posterior: GPPosterior | None = None

    # -- prediction ------------------------------------------------------------------------------
    def _require(self) -> GPPosterior:
        if self.posterior is None or self.stats is None:
            raise ModelError(f"{self.kind} model is not fitted")
        return self.posterior

    def _predict(self, s, a, with_var: bool):
        post = self._require()
        s64, a64 = s.to(device=self.device, dtype=F64), a.to(device=self.device, dtype=F64)
        x = self.normalise_inputs(s64, a64)
        shape = x.shape[:-1]
        mean_n, var_n = post.mean_var(x.reshape(-1, x.shape[-1]), with_var)
        mean_n = mean_n.reshape(*shape, -1)
        var_n = var_n.reshape(*shape, -1) if var_n is not None else torch.zeros_like(mean_n)
        mean, var = self.delta_to_next(s64, mean_n, var_n)
        return mean.to(s.dtype), var.to(s.dtype)

    def predict(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (..., dx) of s' (observation noise included), in s's dtype."""
        return self._predict(s, a, True)

    def propagate(
        self,
        s: torch.Tensor,
        a: torch.Tensor,
        mode: Propagation = "mean",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if mode == "mean":  # skips the O(M²) variance
            return self._predict(s, a, False)[0]
        return super().propagate(s, a, mode, generator)

    # -- fitting ---------------------------------------------------------------------------------
    def _targets(self, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs (N, D) and normalised Δs targets (E, N), float64."""
        n = self._norm(F64)
        s = torch.as_tensor(data.states, dtype=F64, device=self.device)
        a = torch.as_tensor(data.actions, dtype=F64, device=self.device)
        d = torch.as_tensor(data.deltas, dtype=F64, device=self.device)
        return self.normalise_inputs(s, a), ((d - n["delta_mean"]) / n["delta_std"]).T

    def _initial_hyper(self, d: int) -> Hyperparameters:
        e = self.dx
        old = self.posterior.hyp if self.posterior is not None else None
        if old is not None and old.log_lengthscale.shape == (e, d):
            return old.detach()
        # ℓ = √D: normalised points are ~√(2D) apart, so the start is neither flat nor spiky
        log_ls = torch.full((e, d), 0.5 * math.log(d), dtype=F64, device=self.device)
        return Hyperparameters(
            log_ls,
            torch.zeros(e, dtype=F64, device=self.device),
            torch.full((e,), math.log(0.1), dtype=F64, device=self.device),
        )

    @abc.abstractmethod
    def _objective(self, x, y, hyp) -> torch.Tensor:
        """Training loss (scalar) of inputs x (N, D), targets y (E, N)."""

    @abc.abstractmethod
    def _posterior(self, x, y, hyp) -> GPPosterior:
        """The predictive form from all training data."""

    def _prepare(self, x: torch.Tensor) -> None:
        """Per-fit set-up on the normalised training inputs (the sparse GP picks Z here)."""

    def fit(
        self,
        train: Dataset,
        val: Dataset | None = None,
        progress: Progress | None = None,
        warm_start: bool = False,
    ) -> FitReport:
        """Maximise the marginal likelihood on ``train`` (validation NLL on ``val`` reported).
        ``warm_start``: start from the current hyperparameters (a fitted model only).
        A non-finite loss or posterior rolls back to the last good hyperparameters; if no good
        model results, the model stays exactly as before this call (``report.rolled_back``)."""
        t0 = time.perf_counter()
        self.check_data(train)
        self._check_size(len(train))
        if val is not None and len(val):
            self.signature.check(ModelSignature.of(val), "validation data")
        if warm_start and self.posterior is None:
            raise ModelError("warm start needs a fitted model")
        saved = {k: getattr(self, k) for k in self._STATE}
        if not warm_start:
            self.posterior = None
        self.stats = train.stats()
        x, y = self._targets(train)
        self._prepare(x)
        gen = torch.Generator().manual_seed(self.config.seed)
        sub = torch.randperm(len(x), generator=gen)[: self.config.hyper_points].to(self.device)
        xh, yh = x[sub], y[:, sub]
        xv, yv = self._targets(val) if val is not None and len(val) else (None, None)
        bounded = _BoundedHyper(self.config)
        report = FitReport()
        raw = [t.requires_grad_(True) for t in bounded.unconstrain(self._initial_hyper(x.shape[1]))]
        good = bounded.constrain(raw).detach()
        opt = torch.optim.LBFGS(
            raw,
            lr=1.0,
            max_iter=self.config.stage_iterations,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-7,
            tolerance_change=1e-9,
        )

        def closure():
            self.check_stop()
            opt.zero_grad()
            loss = self._objective(xh, yh, bounded.constrain(raw))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss)}")
            loss.backward()
            return loss

        stages = math.ceil(self.config.iterations / self.config.stage_iterations)
        post = None
        try:
            for stage in range(stages):
                opt.step(closure)
                with torch.no_grad():
                    hyp = bounded.constrain(raw).detach()
                    loss = float(self._objective(xh, yh, hyp))
                if not (math.isfinite(loss) and hyp.finite()):
                    raise FloatingPointError(f"loss is {loss}")
                good = hyp
                report.train_loss.append(loss)
                if xv is not None:
                    report.val_loss.append(self._val_nll(xh, yh, hyp, xv, yv))
                if progress is not None:
                    val_text = (
                        f", validation NLL {report.val_loss[-1]:.4f}" if report.val_loss else ""
                    )
                    progress(
                        f"{self.kind}: stage {stage + 1}/{stages}, −log ML per point "
                        f"{loss:.4f}{val_text}"
                    )
                if stage and abs(report.train_loss[-2] - loss) < 1e-6 * max(1.0, abs(loss)):
                    break
            with torch.no_grad():
                post = self._posterior(x, y, good)
            if not post.finite():
                raise FloatingPointError("the posterior has non-finite values")
        except (FloatingPointError, ModelError) as exc:
            for k, v in saved.items():
                setattr(self, k, v)
            if isinstance(exc, FitStopped):
                raise
            report.rolled_back = True
            report.message = f"training diverged ({exc}); the model is unchanged"
        else:
            self.posterior = post
            self._keep(x, y)
            report.message = (
                f"validation NLL {report.val_loss[-1]:.4f} (normalised Δs, per dimension)"
                if report.val_loss
                else f"−log ML per point {report.train_loss[-1]:.4f}"
            )
        report.seconds = time.perf_counter() - t0
        if progress is not None:
            progress(f"{self.kind}: {report.message}")
        return report

    def _check_size(self, n: int) -> None:
        """ModelError if ``n`` transitions are too many for this kind."""

    def _keep(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep what the artifact needs of the training inputs (N, D) and targets (E, N)."""

    def _val_nll(self, xh, yh, hyp, xv, yv) -> float:
        """Mean Gaussian NLL per dimension of the validation targets under the posterior of the
        hyperparameter subset."""
        with torch.no_grad():
            post = self._posterior(xh, yh, hyp)
            mean, var = post.mean_var(xv)
            assert var is not None  # mean_var returns the variance when with_var (default)
            nll = 0.5 * (LOG_2PI + torch.log(var) + (yv.T - mean) ** 2 / var)
        return float(nll.mean())

    # -- artifacts -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        """The kind's own artifact tensors."""

    def to_bytes(self) -> bytes:
        post = self._require()
        hyp = {k: v for k, v in vars(post.hyp).items()}
        meta = self.artifact_meta()
        return encode(
            self.SCHEMA, {**self.fitted_stats().tensors(), **hyp, **self._extra_tensors()}, meta
        )

    @classmethod
    def _decode(cls, data: bytes, device):
        model, tensors, _ = cls.decode_artifact(data, device, GPConfig)
        dx, du = model.dx, model.du
        if tensors["log_lengthscale"].shape[1] != dx + du:
            raise ArtifactError(
                f"{cls.SCHEMA.name}: kernel length scales do not match {dx} state columns "
                f"and {du} joints"
            )
        t = {k: torch.as_tensor(v, dtype=F64, device=model.device) for k, v in tensors.items()}
        hyp = Hyperparameters(t["log_lengthscale"], t["log_signal_std"], t["log_noise_std"])
        return model, t, hyp


@register("mbrl_ros.dynamics.gp")
class GPModel(GPModelBase):
    """Exact GP (kind 'gp'); refuses more than ``config.max_points`` training transitions."""

    kind = "gp"
    SCHEMA = _schema(
        "mbrl_ros.dynamics.gp",
        {"inputs": TensorSpec(("N", "D")), "targets": TensorSpec(("dx", "N"))},
    )

    _STATE = GPModelBase._STATE + ("train_data",)

    def __init__(
        self,
        signature: ModelSignature,
        stats: NormStats | None = None,
        device=None,
        config: GPConfig | None = None,
    ):
        super().__init__(signature, stats, device, config)
        self.train_data: tuple[torch.Tensor, torch.Tensor] | None = None

    def _check_size(self, n: int) -> None:
        if n > self.config.max_points:
            raise ModelError(
                f"the exact GP takes at most {self.config.max_points} transitions "
                f"(max_points), the dataset has {n}; use the 'sparse-gp' model"
            )

    def _objective(self, x, y, hyp):
        return exact_neg_log_ml(x, y, hyp)

    def _posterior(self, x, y, hyp):
        return exact_posterior(x, y, hyp)

    def _keep(self, x, y):
        self.train_data = (x, y)

    def _extra_tensors(self):
        return {"inputs": self.train_data[0], "targets": self.train_data[1]}

    @classmethod
    def from_bytes(cls, data: bytes, device=None) -> GPModel:
        model, t, hyp = cls._decode(data, device)
        if t["inputs"].shape[1] != t["log_lengthscale"].shape[1]:
            raise ArtifactError(
                f"{cls.SCHEMA.name}: inputs have {t['inputs'].shape[1]} columns, "
                f"the kernel {t['log_lengthscale'].shape[1]}"
            )
        try:
            model.posterior = exact_posterior(t["inputs"], t["targets"], hyp)
        except ModelError as exc:
            raise ArtifactError(f"{cls.SCHEMA.name}: {exc}") from None
        model.train_data = (t["inputs"], t["targets"])
        return model


@register("mbrl_ros.dynamics.sparse_gp")
class SparseGPModel(GPModelBase):
    """Sparse GP (kind 'sparse-gp'): VFE with k-means inducing inputs, fixed during training."""

    kind = "sparse-gp"
    SCHEMA = _schema(
        "mbrl_ros.dynamics.sparse_gp",
        {
            "inducing": TensorSpec(("M", "D")),
            "beta": TensorSpec(("dx", "M")),
            "iK": TensorSpec(("dx", "M", "M")),
        },
    )

    _STATE = GPModelBase._STATE + ("inducing",)

    def __init__(
        self,
        signature: ModelSignature,
        stats: NormStats | None = None,
        device=None,
        config: GPConfig | None = None,
    ):
        super().__init__(signature, stats, device, config)
        self.inducing: torch.Tensor | None = None

    def _prepare(self, x):
        self.inducing = kmeans(x, min(self.config.inducing_points, len(x)), seed=self.config.seed)

    def _objective(self, x, y, hyp):
        return sparse_neg_log_ml(self.inducing, x, y, hyp)

    def _posterior(self, x, y, hyp):
        return sparse_posterior(self.inducing, x, y, hyp)

    def _extra_tensors(self):
        post = self._require()
        return {"inducing": post.support, "beta": post.beta, "iK": post.iK}

    @classmethod
    def from_bytes(cls, data: bytes, device=None) -> SparseGPModel:
        model, t, hyp = cls._decode(data, device)
        if t["inducing"].shape[1] != t["log_lengthscale"].shape[1]:
            raise ArtifactError(
                f"{cls.SCHEMA.name}: inducing inputs have "
                f"{t['inducing'].shape[1]} columns, the kernel "
                f"{t['log_lengthscale'].shape[1]}"
            )
        model.posterior = GPPosterior(t["inducing"], t["beta"], t["iK"], hyp)
        model.inducing = t["inducing"]
        return model
