"""PILCO's saturating cost c(x) = 1 − exp(−½ (x − x*)ᵀ W (x − x*)) ∈ [0, 1) and its expectation
under a Gaussian state in closed form.

The target x* is a point in state space (for the pendulum: upright at rest; for the arm: the joint
configuration that puts the end effector on the target, from inverse kinematics). W (dx, dx) is
symmetric positive semi-definite; a zero row leaves that state column free. Angles are not wrapped:
the cost of θ is that of the raw joint angle.

For x ~ N(m, S): E[c] = 1 − |I + S W|^(−½) exp(−½ dᵀ (I + W S)⁻¹ W d), d = m − x*
(the Gaussian integral of exp(−½ (x − x*)ᵀ W (x − x*)); W need not be invertible).
"""

from __future__ import annotations

import numpy as np
import torch

from mbrl_ros.dynamics.gp import F64
from mbrl_ros.policy.errors import PolicyError


class SaturatingCost:
    """Target x* (dx,) and weight W (dx, dx) (e.g. diag(1/σ²) for widths σ in state units)."""

    def __init__(self, target, weight):
        self.target = torch.as_tensor(np.asarray(target, dtype=float), dtype=F64).reshape(-1)
        self.weight = torch.as_tensor(np.asarray(weight, dtype=float), dtype=F64)
        dx = len(self.target)
        if self.weight.shape != (dx, dx):
            raise PolicyError(
                f"cost weight must be ({dx}, {dx}) for a target of {dx} values, "
                f"got {tuple(self.weight.shape)}"
            )
        if not (
            bool(torch.isfinite(self.target).all()) and bool(torch.isfinite(self.weight).all())
        ):
            raise PolicyError("cost target and weight must be finite")
        if not torch.allclose(self.weight, self.weight.T) or float(
            torch.linalg.eigvalsh(self.weight).min()
        ) < -1e-12 * float(self.weight.abs().max().clamp_min(1.0)):
            raise PolicyError("cost weight must be symmetric positive semi-definite")
        self.dx = dx

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1:] != (self.dx,):
            raise PolicyError(
                f"cost expects states ending in {self.dx} values, got shape {tuple(x.shape)}"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """c(x) (...) at states x (..., dx)."""
        self._check(x)
        d = x.to(F64) - self.target.to(x.device)
        return 1.0 - torch.exp(-0.5 * ((d @ self.weight.to(x.device)) * d).sum(-1))

    def expected(self, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """E[c(x)] (...) for x ~ N(mean (..., dx), cov (..., dx, dx)); differentiable."""
        self._check(mean)
        if cov.shape != (*mean.shape, self.dx):
            raise PolicyError(
                f"cost expects a covariance of shape {(*mean.shape, self.dx)}, got "
                f"{tuple(cov.shape)}"
            )
        eye = torch.eye(self.dx, dtype=F64, device=mean.device)
        w = self.weight.to(mean.device)
        d = mean.to(F64) - self.target.to(mean.device)
        ws = w @ cov
        solved = torch.linalg.solve(eye + ws, (d @ w)[..., None])[..., 0]
        logdet = torch.linalg.slogdet(eye + ws)[1]
        return 1.0 - torch.exp(-0.5 * (d * solved).sum(-1) - 0.5 * logdet)

    def numpy(self, x: np.ndarray) -> np.ndarray:
        """c(x) for numpy states (..., dx)."""
        return self(torch.as_tensor(np.asarray(x, dtype=float))).numpy()
