"""From camera images to torques: encode the frame stack, run a latent linear-Gaussian controller.

    image_t → FrameStack → SolarModel.encode → z_t → u_t = K_t (z_t − ẑ_t) + k_t + û_t (+ ε_t)
            → clamp to the effort limits

``ImageController`` is what a node calls per camera frame: ``push(image)`` then ``act(t)`` (or
``act_at(stamp_ns)`` with the controller's own timing). The latent controller is an ordinary
``mbrl_ros.control.controller.LinearGaussianController`` with ``state_layout`` ``LATENT_LAYOUT`` (dx
= dz), so it travels as the usual controller artifact next to the model artifact
(``SolarModel.to_bytes``). Commands are finite and within ``effort_limit``; a missing frame or a
step outside the controller gives None (the caller holds safely).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.solar.model import SolarModel

LATENT_LAYOUT = "solar_latent"


class FrameStack:
    """The newest ``frames`` uint8 images (H, W, 3), newest first; at the start the first image
    fills the missing earlier ones (as ``vae.stack_frames`` does in training)."""

    def __init__(self, frames: int, size: int):
        self.frames, self.size = frames, size
        self._images: deque = deque(maxlen=frames)

    def reset(self) -> None:
        self._images.clear()

    def push(self, image) -> None:
        image = np.asarray(image)
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"image must be uint8 ({self.size}, {self.size}, 3), got "
                f"{image.dtype} {image.shape}"
            )
        if not self._images:
            self._images.extend([image] * self.frames)
        else:
            self._images.append(image)

    def sequence(self) -> np.ndarray | None:
        """(frames, H, W, 3) oldest first (a trajectory whose last step has this stack)."""
        return np.stack(self._images) if self._images else None


class ImageController:
    """A latent linear-Gaussian controller (dx = the model's dz) driven by camera images."""

    def __init__(self, model: SolarModel, controller: LinearGaussianController, effort_limit):
        dz = model.config.latent_dim
        if controller.dx != dz or controller.du != model.du:
            raise ValueError(
                f"controller (dx, du) = {(controller.dx, controller.du)} does not fit "
                f"the model's (dz, du) = {(dz, model.du)}"
            )
        self.effort_limit = np.broadcast_to(np.asarray(effort_limit, float), (model.du,)).copy()
        if not np.all(self.effort_limit > 0) or not np.all(np.isfinite(self.effort_limit)):
            raise ValueError(f"effort_limit must be positive and finite, got {effort_limit}")
        self.model, self.controller = model, controller
        self.frames = FrameStack(model.config.frames, model.config.image_size)

    def push(self, image) -> None:
        """Add the newest camera image, uint8 (H, W, 3) rgb."""
        self.frames.push(image)

    def latent(self) -> np.ndarray | None:
        """The encoder's mean (dz,) of the current frame stack, None before the first image."""
        seq = self.frames.sequence()
        if seq is None:
            return None
        return self.model.encode(seq[None])[0, -1]

    def act(self, t: int, rng: np.random.Generator | None = None, noise=None) -> np.ndarray | None:
        """Torque (du,) at controller step t (sampled with ``rng``, or with row t of ``noise``
        (T, du), e.g. ``exploration_noise``, else the mean), clamped to the effort limits; None
        without an image or outside 0..T−1 or if not finite."""
        z = self.latent()
        if z is None or not 0 <= t < self.controller.T:
            return None
        if noise is not None:
            u = self.controller.sample(z, t, z=np.asarray(noise)[t])
        elif rng is not None:
            u = self.controller.sample(z, t, rng)
        else:
            u = self.controller.act(z, t)
        if not np.all(np.isfinite(u)):
            return None
        return np.clip(u, -self.effort_limit, self.effort_limit)

    def act_at(self, stamp_ns: int, rng: np.random.Generator | None = None) -> np.ndarray | None:
        """``act`` at the controller step of ``stamp_ns``; None once it is not valid."""
        t = self.controller.index(stamp_ns)
        if t is None or not self.controller.valid_at(stamp_ns):
            return None
        return self.act(t, rng)
