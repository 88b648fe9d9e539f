"""Model predictive path integral control (MPPI; Williams et al. 2017), open-loop output.

Each iteration perturbs the current sequence μ (T, du) with Gaussian noise ε of standard
deviation ``noise_std`` × the half-range of the torque box (white, or coloured with
``noise_beta``), clamps to the box, evaluates the costs S_i with the shared ``rollout_costs`` and
moves μ to the exponentially weighted average Σ_i w_i u_i, w_i ∝ exp(−(S_i − min S)/λ). The
unperturbed μ is one of the samples. The action cost is the task cost's own action penalty (no
separate λ·uᵀΣ⁻¹ε term).
"""

from __future__ import annotations

import torch

from mbrl_ros.planning.base import positive_float, positive_int
from mbrl_ros.planning.noise import coloured_noise
from mbrl_ros.planning.shooting import SamplingPlanner


class MPPI(SamplingPlanner):
    """samples per iteration, iterations, temperature λ (cost units), noise_std (fraction of the
    half-range of the torque box), noise_beta (0: white noise)."""

    name = "mppi"

    def __init__(
        self,
        horizon,
        action_low,
        action_high,
        *,
        samples: int = 400,
        iterations: int = 5,
        temperature: float = 1.0,
        noise_std: float = 0.3,
        noise_beta: float = 0.0,
        **kw,
    ):
        super().__init__(horizon, action_low, action_high, **kw)
        self.samples = positive_int("samples", samples)
        self.iterations = positive_int("iterations", iterations)
        self.temperature = positive_float("temperature", temperature)
        self.noise_std = positive_float("noise_std", noise_std)
        self.noise_beta = positive_float("noise_beta", noise_beta, allow_zero=True)

    def _optimise(self, x0, model, cost, init, low, high, generator, stats):
        mu = init.clone()
        std = self.noise_std * 0.5 * (high - low)
        for _ in range(self.iterations):
            noise = coloured_noise(
                self.noise_beta, (self.samples, *mu.shape), generator, mu.dtype, mu.device
            )
            samples = torch.cat([mu[None], torch.clamp(mu + std * noise, low, high)])
            costs = self._evaluate(model, cost, x0, samples, generator, stats)
            weights = torch.softmax(-(costs - costs.min()) / self.temperature, dim=0)
            weights = weights.to(samples.dtype)  # a cost of another dtype weighs these samples
            mu = torch.einsum("n,ntu->tu", weights, samples)
            stats["effective_samples"] = float(1.0 / torch.sum(weights**2))
        stats.update(iterations=self.iterations, sample_cost=float(costs.min()))
        return mu, None, None
