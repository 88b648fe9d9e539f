"""Gaussian mixture models: k-means, a full-covariance GMM fitted by EM, conditioning, and the GMM
dynamics model p(s' | s, a).

``GMM`` is the one mixture of the package: the dynamics model here conditions it on (s, a), and
the guided-policy-search issue uses ``GMM.niw_prior`` as the normal-inverse-Wishart prior of its
local linear-Gaussian dynamics (as GPS's DynamicsPriorGMM.eval). EM survives tiny and empty
clusters: every covariance is shrunk towards the data covariance by ``cov_prior`` pseudo-points
and floored by ``reg_covar`` × each dimension's variance, weights are floored at ``min_weight``,
a cluster holding less than one point's worth of responsibility is re-seeded at the point the
mixture explains worst; a constant column is floored at 1e-12 of the largest variance.
Everything is float64 torch; arrays may be given as numpy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
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
    model_schema,
    register,
)

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)


def _as_tensor(x, device=None) -> torch.Tensor:
    return torch.as_tensor(
        np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=F64, device=device
    )


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iterations: int = 30) -> torch.Tensor:
    """k centres (k, D) of points x (N, D), N ≥ k: k-means++ seeding, then Lloyd iterations; a
    centre left without points moves to the point farthest from its centre."""
    x = _as_tensor(x)
    n = len(x)
    if not 1 <= k <= n:
        raise ModelError(f"k-means needs 1 ≤ k ≤ {n} points, got k = {k}")
    gen = torch.Generator().manual_seed(seed)  # CPU draws: the same centres on any device
    centres = x[torch.randint(n, (1,), generator=gen).to(x.device)]
    d2 = torch.cdist(x, centres).square().min(1).values
    for _ in range(1, k):
        total = float(d2.sum())
        i = (
            torch.multinomial(d2.cpu() / total, 1, generator=gen)
            if total > 0
            else torch.randint(n, (1,), generator=gen)
        ).to(x.device)
        centres = torch.cat([centres, x[i]])
        d2 = torch.minimum(d2, torch.cdist(x, x[i]).square()[:, 0])
    for _ in range(iterations):
        dist = torch.cdist(x, centres)
        label = dist.argmin(1)
        counts = torch.bincount(label, minlength=k)
        new = torch.zeros_like(centres).index_add_(0, label, x)
        empty = counts == 0
        new[~empty] /= counts[~empty, None].to(F64)
        if bool(empty.any()):
            far = dist.min(1).values.argsort(descending=True)[: int(empty.sum())]
            new[empty] = x[far]
        if torch.equal(new, centres):
            break
        centres = new
    return centres


@dataclass(frozen=True)
class GMMConfig:
    """EM settings: ``reg_covar`` × per-dimension data variance is added to every covariance;
    ``cov_prior`` pseudo-points of the data covariance shrink each component's covariance;
    ``tol``: stop when the mean log-likelihood per point improves by less."""

    n_components: int = 20
    max_iter: int = 100
    tol: float = 1e-5
    reg_covar: float = 1e-6
    cov_prior: float = 0.01
    min_weight: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        for name in ("n_components", "max_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"GMM setting {name} = {value!r} must be an integer ≥ 1")
        for name in ("tol", "reg_covar", "cov_prior", "min_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ModelError(f"GMM setting {name} = {value!r} must be a number ≥ 0")
        if self.reg_covar <= 0:
            raise ModelError(f"GMM setting reg_covar = {self.reg_covar} must be positive")
        if self.min_weight * self.n_components >= 1:
            raise ModelError(
                f"GMM setting min_weight = {self.min_weight} is too large for "
                f"{self.n_components} components"
            )


@dataclass
class MixtureConditional:
    """p(y | x) for a batch of x: a mixture with weights (B, K), means (B, K, dy) and covariances
    (K, dy, dy), and its moment-matched Gaussian: mean (B, dy), cov (B, dy, dy)."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor


class GMM:
    """Mixture of K full-covariance Gaussians in D dimensions: ``weights`` (K,), ``means``
    (K, D), ``covs`` (K, D, D); ``n_points``: size of the data it was fitted on."""

    def __init__(self, config: GMMConfig = GMMConfig(), device=None):
        self.config = config
        self.device = torch.device(device or "cpu")
        self.weights: torch.Tensor | None = None
        self.means: torch.Tensor | None = None
        self.covs: torch.Tensor | None = None
        self.n_points = 0

    @classmethod
    def from_parameters(
        cls, weights, means, covs, n_points: int = 0, config: GMMConfig = GMMConfig(), device=None
    ) -> GMM:
        gmm = cls(config, device)
        w, mu, sigma = (_as_tensor(t, gmm.device) for t in (weights, means, covs))
        k, d = mu.shape
        if w.shape != (k,) or sigma.shape != (k, d, d):
            raise ModelError(
                f"GMM parameters have inconsistent shapes: weights "
                f"{tuple(w.shape)}, means {(k, d)}, covs {tuple(sigma.shape)}"
            )
        symmetric = torch.allclose(sigma, sigma.transpose(1, 2), rtol=1e-10, atol=0)
        if not symmetric or torch.linalg.cholesky_ex(sigma)[1].any():
            raise ModelError("GMM covariances must be symmetric positive definite")
        if (w < 0).any() or abs(float(w.sum()) - 1) > 1e-9:
            raise ModelError("GMM weights must be ≥ 0 and sum to 1")
        gmm.weights, gmm.means, gmm.covs = w, mu, sigma
        gmm.n_points = int(n_points)
        return gmm

    def _require(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """weights, means, covs; ModelError if the GMM is not fitted."""
        if self.weights is None or self.means is None or self.covs is None:
            raise ModelError("the GMM is not fitted")
        return self.weights, self.means, self.covs

    # -- densities -------------------------------------------------------------------------------
    @staticmethod
    def _log_gauss(x: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
        """log N(x_n; μ_k, Σ_k) (N, K) for x (N, D), means (K, D), covs (K, D, D)."""
        l = torch.linalg.cholesky(covs)  # (K, D, D)
        diff = (x[None] - means[:, None]).transpose(1, 2)  # (K, D, N)
        z = torch.linalg.solve_triangular(l, diff, upper=False)
        logdet = 2 * torch.log(l.diagonal(dim1=-2, dim2=-1)).sum(-1)  # (K,)
        return (-0.5 * (z**2).sum(1) - 0.5 * (logdet[:, None] + x.shape[1] * LOG_2PI)).T

    def _joint(self, x) -> torch.Tensor:
        weights, means, covs = self._require()
        x = _as_tensor(x, self.device)
        if x.ndim != 2 or x.shape[1] != means.shape[1]:
            raise ModelError(f"GMM points must be (N, {means.shape[1]}), got {tuple(x.shape)}")
        return self._log_gauss(x, means, covs) + torch.log(weights)

    def log_prob(self, x) -> torch.Tensor:
        """log p(x) (N,) of points x (N, D)."""
        return torch.logsumexp(self._joint(x), 1)

    def responsibilities(self, x) -> torch.Tensor:
        """p(k | x) (N, K) of points x (N, D)."""
        return torch.softmax(self._joint(x), 1)

    # -- EM --------------------------------------------------------------------------------------
    def fit(
        self,
        x,
        progress: Progress | None = None,
        warm_start: bool = False,
        check_stop: Callable[[], None] | None = None,
    ) -> list[float]:
        """EM on points x (N, D) from a k-means++ start, or from the current parameters if
        ``warm_start`` (a fitted GMM of the same size); returns the mean log-likelihood per
        point after each iteration. ModelError for too few or non-finite points; if EM produces
        non-finite numbers the last good parameters are kept and it stops. ``check_stop`` is
        called before every iteration (it raises to stop EM)."""
        x = _as_tensor(x, self.device)
        if x.ndim != 2 or len(x) < 2:
            raise ModelError(f"GMM needs at least 2 points (N, D), got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ModelError("GMM data contain non-finite values")
        n, d = x.shape
        k = min(self.config.n_components, n)
        var = x.var(0, unbiased=False)
        top = float(var.max())
        var = var.clamp_min(1e-12 * top if top > 0 else 1.0)  # constant columns get a floor too
        data_cov = torch.cov(x.T, correction=0).reshape(d, d)
        floor = torch.diag(self.config.reg_covar * var)
        if warm_start:
            if self.means is None or self.means.shape != (k, d):
                raise ModelError(
                    f"GMM warm start needs a fitted GMM of {k} components in {d} dimensions"
                )
            resp = self.responsibilities(x)
        else:
            label = torch.cdist(x, kmeans(x, k, self.config.seed, iterations=10)).argmin(1)
            resp = torch.nn.functional.one_hot(label, k).to(F64)
        history: list[float] = []
        for it in range(self.config.max_iter):
            if check_stop is not None:
                check_stop()
            params = self._m_step(x, resp, data_cov, floor)
            try:
                log_joint = self._log_gauss(x, params[1], params[2]) + torch.log(params[0])
                log_px = torch.logsumexp(log_joint, 1)
                ll = float(log_px.mean())
            except torch.linalg.LinAlgError:  # a covariance that is not positive definite
                ll = math.nan
            if not math.isfinite(ll):
                if self.means is None:
                    raise ModelError("GMM EM produced non-finite values on the first iteration")
                break
            self.weights, self.means, self.covs = params
            history.append(ll)
            if progress is not None:
                progress(f"gmm: EM iteration {it + 1}, mean log-likelihood {ll:.4f}")
            resp = torch.softmax(log_joint, 1)
            resp = self._reseed_empty(resp, log_px)
            if it and abs(history[-1] - history[-2]) < self.config.tol:
                break
        self.n_points = n
        return history

    def _m_step(self, x, resp, data_cov, floor):
        nk = resp.sum(0)  # (K,)
        weights = (nk / len(x)).clamp_min(self.config.min_weight)
        weights = weights / weights.sum()
        means = (resp.T @ x) / nk.clamp_min(1e-300)[:, None]
        diff = x[None] - means[:, None]  # (K, N, D)
        scatter = torch.einsum("kn,kni,knj->kij", resp.T, diff, diff)
        c = self.config.cov_prior
        covs = (scatter + c * data_cov) / (nk + c).clamp_min(1e-300)[:, None, None] + floor
        return weights, means, 0.5 * (covs + covs.transpose(1, 2))

    @staticmethod
    def _reseed_empty(resp: torch.Tensor, log_px: torch.Tensor) -> torch.Tensor:
        """Responsibilities where each cluster with < 1 point's worth instead owns one of the
        points the mixture explains worst."""
        empty = torch.nonzero(resp.sum(0) < 1.0)[:, 0]
        if len(empty) == 0:
            return resp
        worst = log_px.argsort()[: len(empty)]
        resp = resp.clone()
        resp[worst] = 0.0
        resp[worst, empty] = 1.0
        return resp

    # -- conditioning and priors ---------------------------------------------------------------
    def condition(self, x_index, y_index, x) -> MixtureConditional:
        """p(y | x) where x = the ``x_index`` dimensions (B, dxi) and y the ``y_index`` ones;
        differentiable in x."""
        weights, means, covs = self._require()
        xi = torch.as_tensor(x_index, dtype=torch.long, device=self.device)
        yi = torch.as_tensor(y_index, dtype=torch.long, device=self.device)
        x = _as_tensor(x, self.device)
        if x.ndim != 2 or x.shape[1] != len(xi):
            raise ModelError(f"condition: x must be (B, {len(xi)}), got {tuple(x.shape)}")
        mx, my = means[:, xi], means[:, yi]
        sxx = covs[:, xi][:, :, xi]
        syx = covs[:, yi][:, :, xi]
        syy = covs[:, yi][:, :, yi]
        gain = torch.linalg.solve(sxx, syx.transpose(1, 2)).transpose(1, 2)  # (K, dy, dxi)
        cond_cov = syy - gain @ syx.transpose(1, 2)
        cond_cov = 0.5 * (cond_cov + cond_cov.transpose(1, 2))
        w = torch.softmax(self._log_gauss(x, mx, sxx) + torch.log(weights), 1)  # (B, K)
        means_y = my[None] + torch.einsum("kyx,bkx->bky", gain, x[:, None] - mx[None])
        mean = torch.einsum("bk,bky->by", w, means_y)
        dev = means_y - mean[:, None]
        cov = torch.einsum("bk,kij->bij", w, cond_cov) + torch.einsum(
            "bk,bki,bkj->bij", w, dev, dev
        )
        return MixtureConditional(w, means_y, cond_cov, mean, cov)

    def niw_prior(
        self, points, strength: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """Normal-inverse-Wishart prior (μ0 (D,), Φ (D, D), m, n0) for a batch of points (N, D),
        as GPS's DynamicsPriorGMM.eval: cluster weights are the points' responsibilities
        averaged; μ0, Φ/m are the mean and covariance of the mixture under those weights;
        m = strength, n0 = strength · (n_points − 2 − D) / n_points."""
        _, means, covs = self._require()
        resp = self.responsibilities(points)
        w = resp.mean(0)
        mu0 = w @ means
        diff = means - mu0
        sigma = torch.einsum("k,kij->ij", w, covs + means[:, :, None] * diff[:, None])
        n = max(self.n_points, 1)
        m = float(strength)
        n0 = float(strength) * (n - 2 - means.shape[1]) / n
        return mu0, 0.5 * (sigma + sigma.T) * m, m, n0


# -- the dynamics model -------------------------------------------------------------------------
def _schema() -> Schema:
    return model_schema(
        "mbrl_ros.dynamics.gmm",
        {
            "weights": TensorSpec(("K",)),
            "means": TensorSpec(("K", "Z")),
            "covs": TensorSpec(("K", "Z", "Z")),
        },
        {"dx": 1024, "du": 512, "K": 4096, "Z": 2560},
        extra_meta=("n_points",),
    )


@register("mbrl_ros.dynamics.gmm")
class GMMDynamicsModel(DynamicsModel):
    """Kind 'gmm': a GMM over z = (normalised s, a, normalised Δs) conditioned on (s, a). Uses
    K = min(n_components, N // (2 (dim z + 1))) components, so every covariance has at least
    twice as many points as parameters per dimension on average."""

    kind = "gmm"
    SCHEMA = _schema()

    def __init__(
        self,
        signature: ModelSignature,
        stats: NormStats | None = None,
        device=None,
        config: GMMConfig | None = None,
    ):
        super().__init__(signature, stats, device)
        self.config = config or GMMConfig()
        self.gmm: GMM | None = None
        self.min_transitions = 2 * (self.dim_z + 1)

    @property
    def dim_z(self) -> int:
        return 2 * self.dx + self.du

    def _z(self, data: Dataset) -> torch.Tensor:
        n = self._norm(F64)
        s = torch.as_tensor(data.states, dtype=F64, device=self.device)
        a = torch.as_tensor(data.actions, dtype=F64, device=self.device)
        d = torch.as_tensor(data.deltas, dtype=F64, device=self.device)
        return torch.cat([self.normalise_inputs(s, a), (d - n["delta_mean"]) / n["delta_std"]], 1)

    def predict(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (..., dx) of s' (the moment-matched conditional), in s's dtype."""
        if self.gmm is None:
            raise ModelError("gmm model is not fitted")
        s64, a64 = s.to(device=self.device, dtype=F64), a.to(device=self.device, dtype=F64)
        x = self.normalise_inputs(s64, a64)
        shape, d = x.shape[:-1], x.shape[-1]
        cond = self.gmm.condition(range(d), range(d, self.dim_z), x.reshape(-1, d))
        mean_n = cond.mean.reshape(*shape, -1)
        var_n = cond.cov.diagonal(dim1=-2, dim2=-1).reshape(*shape, -1)
        mean, var = self.delta_to_next(s64, mean_n, var_n)
        return mean.to(s.dtype), var.to(s.dtype)

    def fit(
        self,
        train: Dataset,
        val: Dataset | None = None,
        progress: Progress | None = None,
        warm_start: bool = False,
    ) -> FitReport:
        """EM on the normalised joint data, from k-means or (``warm_start``: a fitted model only)
        from the current mixture and normalisation. If EM fails the model is left as it was."""
        t0 = time.perf_counter()
        self.check_data(train)
        if val is not None and len(val):
            self.signature.check(ModelSignature.of(val), "validation data")
        saved = (self.stats, self.gmm)
        k = max(1, min(self.config.n_components, len(train) // (2 * (self.dim_z + 1))))
        if warm_start:
            if self.gmm is None:
                raise ModelError("warm start needs a fitted model")
            weights, means, covs = self.gmm._require()
            k = len(weights)
            gmm = GMM.from_parameters(
                weights,
                means,
                covs,
                self.gmm.n_points,
                replace(self.config, n_components=k),
                self.device,
            )
        else:
            self.stats = train.stats()
            gmm = GMM(replace(self.config, n_components=k), self.device)
        report = FitReport()
        try:
            report.train_loss = [
                -v for v in gmm.fit(self._z(train), progress, warm_start, self.check_stop)
            ]
        except FitStopped:
            self.stats, self.gmm = saved
            raise
        except (ModelError, torch.linalg.LinAlgError) as exc:
            self.stats, self.gmm = saved
            report.rolled_back = True
            report.message = f"EM failed ({exc}); the model is unchanged"
            report.seconds = time.perf_counter() - t0
            return report
        self.gmm = gmm
        if val is not None and len(val):
            with torch.no_grad():
                s = torch.as_tensor(val.states, dtype=F64, device=self.device)
                a = torch.as_tensor(val.actions, dtype=F64, device=self.device)
                nxt = torch.as_tensor(val.next_states, dtype=F64, device=self.device)
                mean, var = self.predict(s, a)
                n = self._norm(F64)
                var_n = var / n["delta_std"] ** 2
                err_n = (nxt - mean) / n["delta_std"]
                nll = 0.5 * (LOG_2PI + torch.log(var_n) + err_n**2 / var_n)
            report.val_loss.append(float(nll.mean()))
            report.message = (
                f"{k} components; validation NLL {report.val_loss[-1]:.4f} "
                "(normalised Δs, per dimension)"
            )
        else:
            report.message = f"{k} components"
        report.seconds = time.perf_counter() - t0
        if progress is not None:
            progress(f"gmm: {report.message}")
        return report

    def to_bytes(self) -> bytes:
        if self.gmm is None:
            raise ModelError("gmm model is not fitted")
        tensors = {
            **self.fitted_stats().tensors(),
            "weights": self.gmm.weights,
            "means": self.gmm.means,
            "covs": self.gmm.covs,
        }
        meta = self.artifact_meta(n_points=self.gmm.n_points)
        return encode(self.SCHEMA, tensors, meta)

    @classmethod
    def from_bytes(cls, data: bytes, device=None) -> GMMDynamicsModel:
        model, tensors, meta = cls.decode_artifact(data, device, GMMConfig)
        if tensors["means"].shape[1] != model.dim_z:
            raise ArtifactError(
                f"{cls.SCHEMA.name}: the mixture's {tensors['means'].shape[1]} dimensions do not "
                f"match {model.dx} state columns and {model.du} joints ({model.dim_z})"
            )
        n_points = meta["n_points"]
        if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 0:
            raise ArtifactError(f"{cls.SCHEMA.name}: n_points = {n_points!r} must be an integer")
        try:
            model.gmm = GMM.from_parameters(
                tensors["weights"],
                tensors["means"],
                tensors["covs"],
                n_points,
                model.config,
                model.device,
            )
        except ModelError as exc:
            raise ArtifactError(f"{cls.SCHEMA.name}: {exc}") from None
        return model
