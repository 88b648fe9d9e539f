"""Exact, differentiable torch dynamics models for the planner tests (test helpers, not the
package): a linear system, a 2-link planar arm, and a model that produces NaN."""

from __future__ import annotations

import math

import numpy as np
import torch

from mbrl_ros.data.dataset import NormStats, joint_state_names
from mbrl_ros.dynamics.base import DynamicsModel, ModelSignature


def signature(n: int, dt: float) -> ModelSignature:
    names = tuple(f"joint{i + 1}" for i in range(n))
    return ModelSignature(names, joint_state_names(names), dt)


class _ExactModel(DynamicsModel):
    """Identity normalisation, so that ``with_offset`` shifts the predictions (``shifted``)."""

    kind = "exact-test"

    def __init__(self, n: int, dt: float):
        zeros, ones = np.zeros(2 * n), np.ones(2 * n)
        stats = NormStats(zeros, ones, zeros[:n], ones[:n], zeros, ones)
        super().__init__(signature(n, dt), stats, device="cpu")

    def shifted(self, mean: torch.Tensor) -> torch.Tensor:
        """The mean prediction plus the stats' delta_mean (0 unless ``with_offset``)."""
        return mean + self._norm(mean.dtype)["delta_mean"]

    def fit(self, train, val=None, progress=None):
        raise NotImplementedError("exact test model")

    def to_bytes(self):
        raise NotImplementedError("exact test model")

    @classmethod
    def from_bytes(cls, data, device=None):
        raise NotImplementedError("exact test model")


class LinearModel(_ExactModel):
    """x' = A x + B u (+ N(0, noise²) per dimension); A (2n, 2n), B (2n, n)."""

    def __init__(self, A, B, dt: float = 0.01, noise: float = 0.0):
        A, B = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(B, dtype=torch.float64)
        super().__init__(B.shape[1], dt)
        self.A, self.B, self.noise = A, B, noise

    def predict(self, s, a):
        A, B = self.A.to(s.dtype), self.B.to(s.dtype)
        mean = self.shifted(s @ A.T + a @ B.T)
        return mean, torch.full_like(mean, self.noise**2)

    @classmethod
    def double_integrator(cls, n: int = 2, dt: float = 0.05, noise: float = 0.0):
        A = torch.eye(2 * n, dtype=torch.float64)
        A[:n, n:] = dt * torch.eye(n)
        B = torch.cat([0.5 * dt * dt * torch.eye(n), dt * torch.eye(n)]).double()
        return cls(A, B, dt, noise)


class TwoLinkArm(_ExactModel):
    """Planar 2-link arm (uniform rods, lengths of mbrl_ros' 'arm2': 0.15 m and 0.12 m, masses
    0.4 and 0.25 kg, armature 0.005 kg·m², viscous damping 0.15 / 0.1 N·m·s/rad), no gravity,
    semi-implicit Euler with ``substeps`` per control period dt."""

    l1, l2, m1, m2 = 0.15, 0.12, 0.4, 0.25
    armature, damping = 0.005, (0.15, 0.1)

    def __init__(self, dt: float = 0.02, substeps: int = 4):
        super().__init__(2, dt)
        self.substeps = substeps

    def acceleration(self, q, qd, u):
        l1, m1, m2 = self.l1, self.m1, self.m2
        lc1, lc2 = self.l1 / 2, self.l2 / 2
        I1, I2 = m1 * self.l1**2 / 12, m2 * self.l2**2 / 12
        c2, s2 = torch.cos(q[..., 1]), torch.sin(q[..., 1])
        m11 = m1 * lc1**2 + I1 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * c2) + I2 + self.armature
        m12 = m2 * (lc2**2 + l1 * lc2 * c2) + I2
        m22 = m2 * lc2**2 + I2 + self.armature
        h = m2 * l1 * lc2 * s2
        r1 = (
            u[..., 0]
            - self.damping[0] * qd[..., 0]
            + h * qd[..., 1] * (2 * qd[..., 0] + qd[..., 1])
        )
        r2 = u[..., 1] - self.damping[1] * qd[..., 1] - h * qd[..., 0] ** 2
        det = m11 * m22 - m12 * m12
        return torch.stack([(m22 * r1 - m12 * r2) / det, (m11 * r2 - m12 * r1) / det], -1)

    def predict(self, s, a):
        shape = torch.broadcast_shapes(s.shape[:-1], a.shape[:-1])
        q, qd = s[..., :2].expand(*shape, 2), s[..., 2:].expand(*shape, 2)
        h = self.signature.dt / self.substeps
        for _ in range(self.substeps):
            qd = qd + h * self.acceleration(q, qd, a)
            q = q + h * qd
        mean = self.shifted(torch.cat([q, qd], -1))
        return mean, torch.full_like(mean, 1e-6)


class NaNModel(LinearModel):
    """A double integrator that predicts NaN wherever |u| exceeds ``threshold`` (anywhere if 0)."""

    def __init__(self, threshold: float = 0.0):
        base = LinearModel.double_integrator()
        super().__init__(base.A, base.B, base.signature.dt)
        self.threshold = threshold

    def predict(self, s, a):
        mean, var = super().predict(s, a)
        bad = (a.abs() > self.threshold).any(-1, keepdim=True) | (self.threshold == 0)
        return torch.where(bad, torch.full_like(mean, math.nan), mean), var
