"""Temporally coloured Gaussian noise for sampling action sequences (iCEM, MPPI).

Power-law noise with spectrum S(f) ∝ f^−β along time: β = 0 is white, β = 2 Brownian-like
(smooth sequences, which iCEM found better for robot control; Pinneri et al. 2020). Made as in
the ``colorednoise`` package: white Gaussian Fourier coefficients scaled by f^(−β/2) (frequencies
below 1/T clipped to 1/T), inverse real FFT, divided by the exact standard deviation of that sum,
so every entry is marginally N(0, 1).
"""

from __future__ import annotations

import torch


def coloured_noise(
    beta: float,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Noise of ``shape`` (..., T, d), coloured along the T axis with exponent ``beta`` ≥ 0,
    each entry N(0, 1)."""
    *batch, T, d = shape
    if beta == 0.0 or T == 1:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    f = torch.clamp(torch.fft.rfftfreq(T, dtype=torch.float64), min=1.0 / T)
    scale = (f ** (-beta / 2.0)).to(device)
    re = torch.randn(
        (*batch, d, f.numel()), generator=generator, dtype=torch.float64, device=device
    )
    im = torch.randn(re.shape, generator=generator, dtype=torch.float64, device=device)
    # A real signal: the DC term (and the Nyquist term for even T) has no imaginary part and
    # enters the inverse FFT once, every other frequency twice (as ±f).
    im[..., 0] = 0.0
    weight = torch.full_like(scale, 4.0)
    weight[0] = 1.0
    if T % 2 == 0:
        im[..., -1] = 0.0
        weight[-1] = 1.0
    std = torch.sqrt(torch.sum(weight * scale**2)) / T
    noise = torch.fft.irfft(torch.complex(re * scale, im * scale), n=T, dim=-1) / std
    return noise.transpose(-1, -2).to(dtype).contiguous()
