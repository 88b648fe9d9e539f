"""A synthetic SOLAR task whose true latent is known: a 2-D point seen as a Gaussian blob in a
small rgb image (rendered in numpy), moved by velocity commands: p' = p + DT·u (p in m, u in
m/s), so the true latent is p and its dynamics are linear."""

import numpy as np

DT = 0.25
SIZE = 16
EXTENT = 1.2  # the image spans [−EXTENT, EXTENT]² m


def render(p: np.ndarray, size: int = SIZE) -> np.ndarray:
    """uint8 (..., size, size, 3) images of positions p (..., 2): a blob of σ = 2 px."""
    grid = np.arange(size)
    px = (np.asarray(p) + EXTENT) / (2 * EXTENT) * (size - 1)
    gx = np.exp(-0.5 * ((grid - px[..., :1]) / 2.0) ** 2)  # (..., size) columns
    gy = np.exp(-0.5 * ((grid - px[..., 1:2]) / 2.0) ** 2)  # rows
    blob = gy[..., :, None] * gx[..., None, :]
    rgb = np.stack([blob, 0.5 * blob, 0.2 + 0.0 * blob], axis=-1)
    return (255 * np.clip(rgb, 0, 1) + 0.5).astype(np.uint8)


def step(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """p (..., 2), u (..., 2) → next position, kept inside the image."""
    return np.clip(p + DT * u, -1.0, 1.0)


def random_data(rng: np.random.Generator, B: int, T: int, u_std: float = 1.0):
    """Positions (B, T, 2), images (B, T, SIZE, SIZE, 3), actions (B, T−1, 2)."""
    X = np.empty((B, T, 2))
    X[:, 0] = rng.uniform(-0.7, 0.7, (B, 2))
    U = rng.normal(0.0, u_std, (B, T - 1, 2))
    for t in range(T - 1):
        X[:, t + 1] = step(X[:, t], U[:, t])
    return X, render(X), U
