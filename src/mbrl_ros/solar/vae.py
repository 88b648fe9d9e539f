"""SOLAR's convolutional image encoder and decoder.

Images are uint8 (..., H, W, 3) rgb, H = W a power of two ≥ 8; ``frames`` consecutive images are
stacked on the channel axis for the encoder (so a single observation shows velocities). The
encoder gives a Gaussian recognition potential per observation, mean m (N, dz) and log-variance
(N, dz); the decoder gives the mean (N, 3, H, W) of a Gaussian pixel likelihood with standard
deviation ``pixel_std`` of the newest frame.

Both networks work relative to the data's mean frame (``calibrate``): the encoder sees
(x − mean frame) / pixel scale, the decoder outputs mean frame + 2σ(·) − 1. A robot arm fills a few
percent of a camera frame; without this the networks' inputs and outputs are dominated by the
static background, the arm's pixels move the encoder's output by ~10⁻³ of its size at
initialisation, and an autoencoder trained on the arm's frames stays at the mean frame (measured:
0 % of the pixel variance explained after 1250 minibatches, against 86 % after 1000 with it).
Layers start with He (Kaiming) initialisation, which keeps the signal's scale through the ReLUs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    """Image side (pixels), latent size, stacked frames, conv channels per downsampling stage,
    hidden width of the dense layer, pixel likelihood standard deviation (intensity in [0, 1])."""

    image_size: int = 64
    latent_dim: int = 8
    frames: int = 2
    channels: int = 32
    hidden: int = 256
    pixel_std: float = 0.05

    def __post_init__(self):
        s = self.image_size
        if not (isinstance(s, int) and s >= 8 and s & (s - 1) == 0):
            raise ValueError(f"image_size must be a power of two ≥ 8, got {s!r}")
        for name in ("latent_dim", "frames", "channels", "hidden"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (math.isfinite(self.pixel_std) and self.pixel_std > 0):
            raise ValueError(f"pixel_std must be positive, got {self.pixel_std}")

    @property
    def stages(self) -> int:
        """Stride-2 stages between the image and the 4 × 4 feature map."""
        return int(math.log2(self.image_size // 4))

    def to_dict(self) -> dict:
        return asdict(self)


def image_tensor(images, dtype=torch.float32) -> torch.Tensor:
    """uint8 (..., H, W, 3) → float (..., 3, H, W) in [0, 1]."""
    a = torch.as_tensor(np.asarray(images))
    if a.dtype != torch.uint8 or a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (..., H, W, 3), got {a.dtype} {tuple(a.shape)}")
    return a.movedim(-1, -3).to(dtype) / 255.0


def _he_init(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def calibrate(encoder: ImageEncoder, decoder: ImageDecoder, images: torch.Tensor) -> None:
    """Set both networks' mean frame (3, H, W) and the encoder's pixel scale (the standard
    deviation of the frames about it, at least 10⁻³) from frames (N, 3, H, W) in [0, 1]."""
    with torch.no_grad():
        mean = images.mean(0)
        encoder.pixel_mean.copy_(mean)
        decoder.pixel_mean.copy_(mean)
        encoder.pixel_scale.fill_(max(float((images - mean).square().mean().sqrt()), 1e-3))


def stack_frames(images: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-trajectory frame stacks: (B, T, 3, H, W) → (B, T, 3·frames, H, W), newest first;
    the first step repeats its frame for the missing earlier ones."""
    T = images.shape[1]
    parts = [
        torch.cat([images[:, :1].expand(-1, lag, -1, -1, -1), images[:, : T - lag]], dim=1)
        for lag in range(frames)
    ]
    return torch.cat(parts, dim=2)


class ImageEncoder(nn.Module):
    """(N, 3·frames, H, W) in [0, 1] → recognition potential mean (N, dz), log-variance (N, dz).
    Buffers ``pixel_mean`` (3, H, W) and ``pixel_scale`` (): the input normalisation
    (``calibrate``; 0 and 1 until then)."""

    pixel_mean: torch.Tensor
    pixel_scale: torch.Tensor

    def __init__(self, config: VAEConfig):
        super().__init__()
        s, c = config.image_size, config.channels
        self.frames = config.frames
        self.register_buffer("pixel_mean", torch.zeros(3, s, s))
        self.register_buffer("pixel_scale", torch.ones(()))
        layers, cin = [], 3 * config.frames
        for _ in range(config.stages):
            layers += [nn.Conv2d(cin, c, 4, stride=2, padding=1), nn.ReLU()]
            cin = c
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.dense = nn.Sequential(
            nn.Linear(c * 16, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 2 * config.latent_dim),
        )
        _he_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.pixel_mean.repeat(self.frames, 1, 1)) / self.pixel_scale
        mean, logvar = self.dense(self.conv(x)).chunk(2, dim=-1)
        return mean, logvar.clamp(-12.0, 6.0)


class ImageDecoder(nn.Module):
    """(N, dz) → pixel means (N, 3, H, W) of the newest frame: ``pixel_mean`` (a (3, H, W)
    buffer, ``calibrate``; 0 until then) + 2σ(·) − 1, within ±1 of it."""

    pixel_mean: torch.Tensor

    def __init__(self, config: VAEConfig):
        super().__init__()
        s, c = config.image_size, config.channels
        self.register_buffer("pixel_mean", torch.zeros(3, s, s))
        self.channels = c
        self.dense = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, c * 16),
            nn.ReLU(),
        )
        layers = []
        for _ in range(config.stages):
            layers += [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU()]
        self.deconv = nn.Sequential(*layers, nn.Conv2d(c, 3, 3, padding=1), nn.Sigmoid())
        _he_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (
            self.pixel_mean + 2.0 * self.deconv(self.dense(z).view(-1, self.channels, 4, 4)) - 1.0
        )


def gaussian_log_likelihood(images: torch.Tensor, means: torch.Tensor, std: float) -> torch.Tensor:
    """log N(images; means, std²·I) summed over (3, H, W): shape (N,)."""
    n = images[0].numel()
    r = ((images - means) / std).flatten(1)
    return -0.5 * (r * r).sum(1) - n * (math.log(std) + 0.5 * math.log(2 * math.pi))
