"""Multi-step moment-matching propagation of a Gaussian state through a policy and a GP dynamics
model, and the expected cost over a horizon (PILCO's policy evaluation).

One step: x_t ~ N(m_t, S_t) → the policy's moments give the joint Gaussian of (x_t, u_t) →
``predict_moments`` (the GP predicts Δx; it returns the moments of x_{t+1} = x_t + Δx, with
Cov[x_t, Δx] included) → N(m_{t+1}, S_{t+1}). J = Σ_{t=1..H} E[c(x_t)]. Every operation is torch,
so ∂J/∂(policy parameters) comes from autograd through all H steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mbrl_ros.dynamics.gp import F64, GPModelBase
from mbrl_ros.dynamics.moment_matching import predict_moments
from mbrl_ros.policy.errors import PolicyError
from mbrl_ros.policy.pilco.cost import SaturatingCost
from mbrl_ros.policy.pilco.policies import PilcoPolicy


@dataclass
class StateDistributions:
    """Gaussian states over the horizon: means (H + 1, dx), covariances (H + 1, dx, dx) and, if
    a cost was given, expected costs (H,) of x_1 … x_H."""

    means: torch.Tensor
    covs: torch.Tensor
    costs: torch.Tensor | None = None

    @property
    def total_cost(self) -> torch.Tensor:
        if self.costs is None:
            raise PolicyError("no cost was given to the propagation")
        return self.costs.sum()


def state_action_moments(
    policy: PilcoPolicy, mean: torch.Tensor, cov: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint Gaussian of (x, u): mean (dx + du,), covariance (dx + du, dx + du), for
    x ~ N(mean (dx,), cov (dx, dx))."""
    pm = policy.moments(mean, cov)
    joint_cov = torch.cat(
        [torch.cat([cov, pm.cross], -1), torch.cat([pm.cross.transpose(-1, -2), pm.cov], -1)], -2
    )
    return torch.cat([mean, pm.mean], -1), 0.5 * (joint_cov + joint_cov.transpose(-1, -2))


def propagate(
    model: GPModelBase,
    policy: PilcoPolicy,
    mean0,
    cov0,
    horizon: int,
    cost: SaturatingCost | None = None,
) -> StateDistributions:
    """Moment-matched state Gaussians for ``horizon`` steps from x_0 ~ N(mean0 (dx,),
    cov0 (dx, dx)) under ``policy`` and the fitted GP ``model`` (state units)."""
    if model.dx != policy.dx or model.du != policy.du:
        raise PolicyError(
            f"policy maps {policy.dx} states to {policy.du} torques, the model has "
            f"{model.dx} states and {model.du} joints"
        )
    if cost is not None and cost.dx != model.dx:
        raise PolicyError(f"cost is for {cost.dx} state values, the model has {model.dx}")
    if horizon < 1:
        raise PolicyError(f"horizon must be ≥ 1 step, got {horizon}")
    mean = torch.as_tensor(mean0, dtype=F64, device=model.device)
    cov = torch.as_tensor(cov0, dtype=F64, device=model.device)
    if mean.shape != (model.dx,) or cov.shape != (model.dx, model.dx):
        raise PolicyError(
            f"start state needs mean ({model.dx},) and covariance "
            f"({model.dx}, {model.dx}), got {tuple(mean.shape)} and "
            f"{tuple(cov.shape)}"
        )
    means, covs, costs = [mean], [cov], []
    for _ in range(horizon):
        step = predict_moments(model, *state_action_moments(policy, mean, cov))
        mean, cov = step.mean, step.cov
        means.append(mean)
        covs.append(cov)
        if cost is not None:
            costs.append(cost.expected(mean, cov))
    return StateDistributions(
        torch.stack(means), torch.stack(covs), torch.stack(costs) if cost is not None else None
    )
