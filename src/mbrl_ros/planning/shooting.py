"""Sampling planners: random shooting, CEM and iCEM (open-loop controllers, K = 0).

All evaluate populations of action sequences with ``rollout_costs`` — batched model rollouts of
(particles × population) under one of the model's propagation modes ('mean', 'sample', and for
ensembles 'ts1'/'tsinf' as in PETS), the cost averaged over particles.

``CEM`` (PETS; Chua et al. 2018): Gaussian over sequences, population N, the K lowest-cost
samples (elites) refit mean and standard deviation, smoothed with momentum α; returns the mean.
``ICEM`` (Pinneri et al. 2020) is the same loop with coloured noise (β = 2), a population that
shrinks by γ per iteration (N_i = max(N·γ^−i, 2K)), a fraction of the elites carried into the next
iteration, the mean added to the last iteration's samples, and the best sequence ever seen
returned. Every planner also evaluates the warm-start sequence (the previous plan shifted).
"""

from __future__ import annotations

import math

import torch

from mbrl_ros.dynamics.base import DynamicsModel, Propagation
from mbrl_ros.planning.base import Cost, NonFinite, PlanError, Planner, positive_float, positive_int
from mbrl_ros.planning.noise import coloured_noise

MODES = ("mean", "sample", "ts1", "tsinf")


def rollout_costs(
    model: DynamicsModel,
    cost: Cost,
    x0: torch.Tensor,
    actions: torch.Tensor,
    mode: Propagation = "mean",
    particles: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Expected cost (N,) of action sequences (N, T, du) from x0 (dx,): rollouts of shape
    (particles, N, T+1, dx) under ``mode``, cost averaged over particles. Non-finite costs become
    +inf; NonFinite if every sequence's cost is non-finite."""
    N = actions.shape[0]
    with torch.no_grad():
        a = actions.expand(particles, *actions.shape)
        states = model.rollout(x0.expand(particles, N, x0.shape[-1]), a, mode, generator)
        costs = cost(states, a).mean(0)
    finite = torch.isfinite(costs)
    if not finite.any():
        raise NonFinite(f"all {N} sampled sequences have non-finite cost")
    return torch.where(finite, costs, torch.full_like(costs, math.inf))


class SamplingPlanner(Planner):
    """Shared settings: propagation ``mode`` and number of ``particles`` per sequence."""

    def __init__(
        self,
        horizon,
        action_low,
        action_high,
        *,
        mode: Propagation = "mean",
        particles: int = 1,
        **kw,
    ):
        super().__init__(horizon, action_low, action_high, **kw)
        if mode not in MODES:
            raise PlanError(f"mode must be one of {MODES}, got {mode!r}")
        self.particles = positive_int("particles", particles)
        if mode == "mean" and self.particles != 1:
            raise PlanError(f"mode 'mean' is deterministic: particles must be 1, got {particles}")
        self.mode = mode

    def _evaluate(self, model, cost, x0, actions, generator, stats) -> torch.Tensor:
        stats["transitions"] = stats.get("transitions", 0) + (
            actions.shape[0] * actions.shape[1] * self.particles
        )
        costs = rollout_costs(model, cost, x0, actions, self.mode, self.particles, generator)
        stats["nonfinite_samples"] = stats.get("nonfinite_samples", 0) + int(
            torch.isinf(costs).sum()
        )
        return costs


class RandomShooting(SamplingPlanner):
    """The best of ``samples`` sequences drawn uniformly in the torque box, plus the warm start."""

    name = "random_shooting"

    def __init__(self, horizon, action_low, action_high, *, samples: int = 1000, **kw):
        super().__init__(horizon, action_low, action_high, **kw)
        self.samples = positive_int("samples", samples)

    def _optimise(self, x0, model, cost, init, low, high, generator, stats):
        u = torch.rand(
            (self.samples, self.horizon, self.du),
            generator=generator,
            dtype=init.dtype,
            device=init.device,
        )
        candidates = torch.cat([init[None], low + (high - low) * u])
        costs = self._evaluate(model, cost, x0, candidates, generator, stats)
        stats["sample_cost"] = float(costs.min())
        return candidates[int(torch.argmin(costs))], None, None


class CEM(SamplingPlanner):
    """Cross-entropy method over action sequences. population N, elites K, iterations;
    init_std: initial standard deviation as a fraction of the half-range of the torque box;
    momentum α: new = α·old + (1−α)·elite statistic; noise_beta, population_decay γ,
    keep_elites (fraction of K carried over), return_best: the iCEM extensions (off here)."""

    name = "cem"

    def __init__(
        self,
        horizon,
        action_low,
        action_high,
        *,
        population: int = 400,
        elites: int = 40,
        iterations: int = 5,
        init_std: float = 0.5,
        momentum: float = 0.1,
        noise_beta: float = 0.0,
        population_decay: float = 1.0,
        keep_elites: float = 0.0,
        return_best: bool = False,
        **kw,
    ):
        super().__init__(horizon, action_low, action_high, **kw)
        self.population = positive_int("population", population)
        self.elites = positive_int("elites", elites)
        if self.elites > self.population:
            raise PlanError(f"elites ({elites}) cannot exceed the population ({population})")
        self.iterations = positive_int("iterations", iterations)
        self.init_std = positive_float("init_std", init_std)
        self.momentum = positive_float("momentum", momentum, allow_zero=True)
        if self.momentum >= 1.0:
            raise PlanError(f"momentum must be in [0, 1), got {momentum}")
        self.population_decay = positive_float("population_decay", population_decay)
        if self.population_decay < 1.0:
            raise PlanError(f"population_decay must be ≥ 1, got {population_decay}")
        self.keep_elites = positive_float("keep_elites", keep_elites, allow_zero=True)
        if self.keep_elites > 1.0:
            raise PlanError(f"keep_elites must be in [0, 1], got {keep_elites}")
        self.noise_beta = positive_float("noise_beta", noise_beta, allow_zero=True)
        self.return_best = bool(return_best)

    def population_size(self, iteration: int) -> int:
        """N_i = max(N·γ^−i, 2K) (at most N) for iteration i = 0, 1, ..."""
        n = int(round(self.population * self.population_decay**-iteration))
        return min(self.population, max(n, 2 * self.elites))

    def _optimise(self, x0, model, cost, init, low, high, generator, stats):
        mean = init.clone()
        std = (self.init_std * 0.5 * (high - low)).expand_as(mean).clone()
        kept = init[None]  # the warm start competes in the first iteration
        best, best_cost = init, math.inf
        n_keep = int(round(self.keep_elites * self.elites))
        for i in range(self.iterations):
            noise = coloured_noise(
                self.noise_beta,
                (self.population_size(i), *mean.shape),
                generator,
                mean.dtype,
                mean.device,
            )
            samples = torch.clamp(mean + std * noise, low, high)
            parts = [samples, kept]
            if self.return_best and i == self.iterations - 1:
                parts.append(mean[None])
            samples = torch.cat(parts)
            costs = self._evaluate(model, cost, x0, samples, generator, stats)
            order = torch.argsort(costs)[: self.elites]
            elites = samples[order]
            if float(costs[order[0]]) < best_cost:
                best, best_cost = elites[0], float(costs[order[0]])
            a = self.momentum
            mean = a * mean + (1 - a) * elites.mean(0)
            std = a * std + (1 - a) * elites.std(0, unbiased=False)
            kept = elites[:n_keep]
        stats.update(iterations=self.iterations, sample_cost=best_cost, final_std=float(std.mean()))
        return (best if self.return_best else mean), None, None


class ICEM(CEM):
    """CEM with iCEM's defaults: coloured noise β = 2, population decay γ = 1.25, 30 % of the
    elites kept, the best sequence returned (Pinneri et al. 2020)."""

    name = "icem"

    def __init__(
        self,
        horizon,
        action_low,
        action_high,
        *,
        noise_beta: float = 2.0,
        population_decay: float = 1.25,
        keep_elites: float = 0.3,
        return_best: bool = True,
        **kw,
    ):
        super().__init__(
            horizon,
            action_low,
            action_high,
            noise_beta=noise_beta,
            population_decay=population_decay,
            keep_elites=keep_elites,
            return_best=return_best,
            **kw,
        )
