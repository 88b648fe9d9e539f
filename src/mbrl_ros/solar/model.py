"""The SOLAR model: encoder, decoder and the global MNIW latent dynamics, fitted jointly.

Training alternates, per iteration on a minibatch of trajectories: a gradient step of the
networks on the local ELBO (``inference``) under the current q(θ), and a natural-gradient step
of q(θ) towards the conjugate posterior of the minibatch's expected statistics scaled to the
whole data set (stochastic variational inference). Data: images uint8 (B, T, H, W, 3), actions
(B, T−1, du) (the action between consecutive images), optionally the observed costs (B, T) of the
images, which train the latent cost model with the rest (``latent_cost.CostModel``, SOLAR's
quadratic cost in latent space). The first ``pretrain`` or ``fit`` calibrates
the networks to its images' mean frame (``vae.calibrate``); later fits keep that calibration.
Artifacts: safetensors (``to_bytes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_ros.common import artifacts
from mbrl_ros.solar.inference import LatentPosterior, chain_prior, local_elbo, structured_posterior
from mbrl_ros.solar.latent_cost import CostModel, LatentQuadraticCost
from mbrl_ros.solar.latent_dynamics import MNIW, transition_statistics
from mbrl_ros.solar.vae import (
    ImageDecoder,
    ImageEncoder,
    VAEConfig,
    calibrate,
    image_tensor,
    stack_frames,
)

MODEL_SCHEMA = artifacts.Schema(
    name="mbrl_ros/solar_model",
    version=2,  # 2: networks relative to a calibrated mean frame
    min_version=2,
    tensors={
        name: artifacts.TensorSpec(shape)
        for name, shape in (
            ("dyn_M", ("dz", "p")),
            ("dyn_V", ("p", "p")),
            ("dyn_Psi", ("dz", "dz")),
            ("prior_M", ("dz", "p")),
            ("prior_V", ("p", "p")),
            ("prior_Psi", ("dz", "dz")),
        )
    },
    dim_limits={"dz": 256, "p": 1024},
    required_meta=("vae", "du", "nu", "prior_nu", "calibrated", "cost_fitted"),
    extra_tensors=True,
    extra_dtypes=("float32", "float64"),
)


@dataclass(frozen=True)
class FitSettings:
    """Iterations, trajectories per minibatch, Adam learning rate, step of q(θ) per iteration,
    ``warmup``: first iterations with q(θ) held at the prior (the networks learn to encode
    before the dynamics adapt to the latents, as SOLAR pretrains its VAE); ``kl_warmup``: first
    iterations over which the prior and entropy terms rise linearly from 0 to their full weight
    (β-annealing against posterior collapse: a decoder that learns to ignore z reconstructs the
    mean image whatever the pose); ``cost_std``: the standard deviation of observed costs about the
    cost model's c(z), in the costs' units (used when ``fit`` is given costs)."""

    iterations: int = 500
    batch_size: int = 16
    learning_rate: float = 1e-3
    dynamics_step: float = 0.2
    warmup: int = 0
    kl_warmup: int = 0
    cost_std: float = 1.0

    def __post_init__(self):
        if self.warmup < 0 or self.kl_warmup < 0:
            raise ValueError(
                f"warmup and kl_warmup must be ≥ 0, got {self.warmup}, {self.kl_warmup}"
            )
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(
                f"iterations and batch_size must be ≥ 1, got {self.iterations}, {self.batch_size}"
            )
        if not (np.isfinite(self.cost_std) and self.cost_std > 0):
            raise ValueError(f"cost_std must be positive, got {self.cost_std}")
        if not (0 < self.learning_rate < 1 and 0 < self.dynamics_step <= 1):
            raise ValueError(
                f"need 0 < learning_rate < 1 and 0 < dynamics_step ≤ 1, got "
                f"{self.learning_rate}, {self.dynamics_step}"
            )


class SolarModel:
    """Encoder, decoder, cost model (torch, ``dtype``), q(θ) ``dynamics`` and its prior (MNIW)
    for du actions."""

    def __init__(
        self,
        config: VAEConfig,
        du: int,
        prior: MNIW | None = None,
        dtype=torch.float32,
        seed: int = 0,
    ):
        if not (isinstance(du, int) and du >= 1):
            raise ValueError(f"du must be a positive integer, got {du!r}")
        torch.manual_seed(seed)
        self.config, self.du, self.dtype = config, du, dtype
        self.encoder = ImageEncoder(config).to(dtype)
        self.decoder = ImageDecoder(config).to(dtype)
        self.cost = CostModel(config.latent_dim, dtype)
        self.cost_fitted = False
        self.prior = prior if prior is not None else MNIW.prior(config.latent_dim, du)
        if (self.prior.dz, self.prior.du) != (config.latent_dim, du):
            raise ValueError(
                f"prior is for (dz, du) = {(self.prior.dz, self.prior.du)}, the "
                f"model for {(config.latent_dim, du)}"
            )
        self.dynamics = self.prior
        self.calibrated = False

    def _calibrate(self, images: np.ndarray) -> None:
        """``vae.calibrate`` on images uint8 (B, T, H, W, 3) once, before the first training."""
        if not self.calibrated:
            calibrate(
                self.encoder,
                self.decoder,
                image_tensor(images.reshape(-1, *images.shape[2:]), self.dtype),
            )
            self.calibrated = True

    def _check(self, images, actions=None):
        images = np.asarray(images)
        s = self.config.image_size
        if images.ndim != 5 or images.shape[2:] != (s, s, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (B, T, {s}, {s}, 3), got {images.dtype} {images.shape}"
            )
        if actions is None:
            return images, None
        actions = np.asarray(actions, dtype=np.float64)
        expected = (images.shape[0], images.shape[1] - 1, self.du)
        if actions.shape != expected:
            raise ValueError(f"actions must be (B, T−1, du) = {expected}, got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions have non-finite values")
        return images, actions

    def potentials(self, images) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder potentials (B, T, dz) mean and log-variance of uint8 images (B, T, H, W, 3),
        and the images as float (B, T, 3, H, W)."""
        x = image_tensor(images, self.dtype)
        B, T = x.shape[:2]
        mean, logvar = self.encoder(stack_frames(x, self.config.frames).flatten(0, 1))
        return mean.view(B, T, -1), logvar.view(B, T, -1), x

    def elbo(
        self, images, actions, eps, beta: float = 1.0, costs=None, cost_std: float = 1.0
    ) -> tuple[torch.Tensor, LatentPosterior]:
        """Local ELBO (B,) and q(z) (see ``inference.local_elbo``), with the observed costs
        (B, T) (standard deviation ``cost_std``) under the cost model when given."""
        mean, logvar, x = self.potentials(images)
        prior = chain_prior(self.dynamics.expected(), torch.as_tensor(actions, dtype=self.dtype))
        observed = None
        if costs is not None:
            y = torch.as_tensor(costs, dtype=self.dtype)
            observed = lambda z: self.cost.log_likelihood(z, y, cost_std)  # noqa: E731
        return local_elbo(
            prior, mean, logvar, self.decoder, x, self.config.pixel_std, eps, beta, observed
        )

    def fit(
        self,
        images,
        actions,
        settings: FitSettings = FitSettings(),
        seed: int = 0,
        callback=None,
        costs=None,
    ) -> list[float]:
        """Fit on trajectories (with their observed costs (B, T) when given: the cost model
        learns with the rest); returns the ELBO per image of each iteration (the β-annealed
        bound during ``kl_warmup``). ``callback(it, elbo)`` is called after each."""
        images, actions = self._check(images, actions)
        if costs is not None:
            costs = np.asarray(costs, dtype=np.float64)
            if costs.shape != images.shape[:2] or not np.all(np.isfinite(costs)):
                raise ValueError(
                    f"costs must be finite (B, T) = {images.shape[:2]}, got shape {costs.shape}"
                )
        self._calibrate(images)
        B_all, T = images.shape[:2]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        params = [
            *self.encoder.parameters(),
            *self.decoder.parameters(),
            *(self.cost.parameters() if costs is not None else ()),
        ]
        opt = torch.optim.Adam(params, lr=settings.learning_rate)
        history = []
        for it in range(settings.iterations):
            idx = rng.choice(B_all, size=min(settings.batch_size, B_all), replace=False)
            eps = torch.randn(len(idx), T, self.config.latent_dim, generator=gen, dtype=self.dtype)
            beta = min(1.0, (it + 1) / settings.kl_warmup) if settings.kl_warmup else 1.0
            elbo, q = self.elbo(
                images[idx],
                actions[idx],
                eps,
                beta,
                None if costs is None else costs[idx],
                settings.cost_std,
            )
            loss = -elbo.sum() / (len(idx) * T)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if it >= settings.warmup:
                S_xixi, S_zxi, S_zz, n = transition_statistics(*q.moments(), actions[idx])
                scale = B_all / len(idx)
                self.dynamics = self.dynamics.posterior(
                    scale * S_xixi,
                    scale * S_zxi,
                    scale * S_zz,
                    scale * n,
                    step=settings.dynamics_step,
                    prior=self.prior,
                )
            history.append(-loss.item())
            if callback is not None:
                callback(it, history[-1])
        self.cost_fitted = self.cost_fitted or costs is not None
        return history

    def latent_cost(self) -> LatentQuadraticCost:
        """The cost model learnt with the latent (``fit`` given costs); ValueError before."""
        if not self.cost_fitted:
            raise ValueError("the cost model has not been fitted: pass costs to SolarModel.fit")
        return self.cost.latent_cost()

    def pretrain(
        self,
        images,
        iterations: int,
        batch_frames: int = 64,
        learning_rate: float = 1e-3,
        seed: int = 0,
        callback=None,
    ) -> list[float]:
        """Pre-train encoder and decoder as a deterministic autoencoder of single frame stacks
        (encoder mean → decoder, mean squared pixel error in [0, 1]) on minibatches of
        ``batch_frames`` stacks drawn from images uint8 (B, T, H, W, 3), as SOLAR pre-trains
        its VAE: on the arm the structured fit alone collapses (the decoder renders the mean
        frame) before the networks have learnt to see the pose. Returns the loss per
        iteration; ``callback(it, loss)`` after each."""
        images, _ = self._check(images)
        if iterations < 1 or batch_frames < 1 or not 0 < learning_rate < 1:
            raise ValueError(
                f"need iterations, batch_frames ≥ 1 and 0 < learning_rate < 1, got "
                f"{iterations}, {batch_frames}, {learning_rate}"
            )
        self._calibrate(images)
        B, T = images.shape[:2]
        rng = np.random.default_rng(seed)
        opt = torch.optim.Adam(
            list(self.encoder.parameters()) + list(self.decoder.parameters()), lr=learning_rate
        )
        history = []
        for it in range(iterations):
            b, t = rng.integers(B, size=batch_frames), rng.integers(T, size=batch_frames)
            stack = torch.cat(
                [
                    image_tensor(images[b, np.maximum(t - lag, 0)], self.dtype)
                    for lag in range(self.config.frames)
                ],
                dim=1,
            )  # newest first
            loss = ((self.decoder(self.encoder(stack)[0]) - stack[:, :3]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())
            if callback is not None:
                callback(it, history[-1])
        return history

    @torch.no_grad()
    def posterior(self, images, actions) -> LatentPosterior:
        """q(z) of trajectories under the current q(θ)."""
        images, actions = self._check(images, actions)
        mean, logvar, _ = self.potentials(images)
        prior = chain_prior(self.dynamics.expected(), torch.as_tensor(actions, dtype=self.dtype))
        return structured_posterior(prior, mean, logvar)

    @torch.no_grad()
    def encode(self, images) -> np.ndarray:
        """Encoder means (B, T, dz) of uint8 images (B, T, H, W, 3) (each step's frame stack)."""
        images, _ = self._check(images)
        return self.potentials(images)[0].double().numpy()

    @torch.no_grad()
    def decode(self, z) -> np.ndarray:
        """uint8 images (..., H, W, 3) of latents z (..., dz)."""
        z = torch.as_tensor(np.asarray(z), dtype=self.dtype)
        out = self.decoder(z.reshape(-1, z.shape[-1])).movedim(1, -1)
        img = (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return img.reshape(z.shape[:-1] + img.shape[1:])

    def to_bytes(self) -> bytes:
        """The model as a safetensors artifact (schema ``mbrl_ros/solar_model``)."""
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors |= {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        tensors |= {f"cost.{k}": v.detach() for k, v in self.cost.state_dict().items()}
        for tag, d in (("dyn", self.dynamics), ("prior", self.prior)):
            tensors |= {f"{tag}_M": d.M, f"{tag}_V": d.V, f"{tag}_Psi": d.Psi}
        meta = {
            "vae": self.config.to_dict(),
            "du": self.du,
            "nu": self.dynamics.nu,
            "prior_nu": self.prior.nu,
            "calibrated": self.calibrated,
            "cost_fitted": self.cost_fitted,
        }
        return artifacts.encode(MODEL_SCHEMA, tensors, meta)

    @classmethod
    def from_bytes(cls, data: bytes, dtype=torch.float32) -> SolarModel:
        """The model of an artifact; ArtifactError naming what is wrong."""
        tensors, meta = artifacts.decode(data, MODEL_SCHEMA)
        try:
            config = VAEConfig(**meta["vae"])
            model = cls(
                config,
                int(meta["du"]),
                MNIW(
                    tensors["prior_M"],
                    tensors["prior_V"],
                    tensors["prior_Psi"],
                    float(meta["prior_nu"]),
                ),
                dtype,
            )
            model.dynamics = MNIW(
                tensors["dyn_M"], tensors["dyn_V"], tensors["dyn_Psi"], float(meta["nu"])
            )
            nets = (("encoder", model.encoder), ("decoder", model.decoder), ("cost", model.cost))
            for name, net in nets:
                state = {
                    k[len(name) + 1 :]: torch.as_tensor(v)
                    for k, v in tensors.items()
                    if k.startswith(name + ".")
                }
                net.load_state_dict(state)
            model.calibrated = bool(meta["calibrated"])
            model.cost_fitted = bool(meta["cost_fitted"])
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise artifacts.ArtifactError(
                f"solar model artifact does not fit its metadata: {json.dumps(str(exc))[:300]}"
            ) from None
        return model
