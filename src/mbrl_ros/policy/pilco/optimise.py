"""Policy optimisation with analytic gradients: scipy's L-BFGS-B on the flattened policy
parameters, the objective and its gradient from torch autograd (float64).

A non-finite objective or gradient stops the optimisation: it is reported (``OptReport.diverged``,
``message``) and the policy keeps the parameters of the lowest finite objective seen; the same
parameters are kept when L-BFGS ends, so the result is never worse than the start.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.optimize
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from mbrl_ros.policy.pilco.policies import PolicyError


@dataclass
class OptReport:
    """Objective before and after, evaluations, L-BFGS iterations, wall time (s), whether it
    diverged, and a one-line message."""

    initial: float
    final: float
    evaluations: int
    iterations: int
    seconds: float
    diverged: bool
    message: str


class _Diverged(Exception):
    pass


def optimise_policy(policy: torch.nn.Module, objective: Callable[[], torch.Tensor],
                    max_iterations: int = 50, max_evaluations: int | None = None) -> OptReport:
    """Minimise ``objective()`` (a scalar tensor that depends on ``policy``'s parameters) with
    L-BFGS-B, at most ``max_iterations`` iterations and ``max_evaluations`` objective evaluations
    (default 1.5 × iterations). The policy ends at the best parameters found."""
    if max_iterations < 1:
        raise PolicyError(f"max_iterations must be ≥ 1, got {max_iterations}")
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise PolicyError("the policy has no parameters to optimise")
    t0 = time.perf_counter()
    start = parameters_to_vector(params).detach().clone()
    best = {"value": math.inf, "x": start.clone()}
    count = {"evaluations": 0, "initial": math.nan}

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        vector_to_parameters(torch.as_tensor(x, dtype=start.dtype, device=start.device), params)
        count["evaluations"] += 1
        value = objective()
        if count["evaluations"] == 1:
            count["initial"] = float(value.detach())
        if not bool(torch.isfinite(value)):
            raise _Diverged(f"objective is {float(value.detach())}")
        grad = torch.autograd.grad(value, params)
        g = torch.cat([t.reshape(-1) for t in grad])
        if not bool(torch.isfinite(g).all()):
            raise _Diverged("gradient has non-finite entries")
        v = float(value.detach())
        if v < best["value"]:
            best.update(value=v, x=torch.as_tensor(x, dtype=start.dtype).clone())
        return v, g.detach().cpu().numpy()

    diverged, iterations = False, 0
    try:
        result = scipy.optimize.minimize(
            fun, start.cpu().numpy(), jac=True, method="L-BFGS-B",
            options={"maxiter": max_iterations,
                     "maxfun": max_evaluations or int(1.5 * max_iterations) + 1,
                     "gtol": 1e-12, "ftol": 1e-12})  # saturating costs have tiny gradients
        iterations, message = int(result.nit), str(result.message)
    except _Diverged as exc:
        diverged = True
        message = f"optimisation diverged ({exc}); kept the best parameters found"
    with torch.no_grad():
        vector_to_parameters(best["x"].to(start.device), params)
    return OptReport(count["initial"], best["value"], count["evaluations"], iterations,
                     time.perf_counter() - t0, diverged, message)
