"""Policy optimisation with analytic gradients: scipy's L-BFGS-B on the flattened policy
parameters, the objective and its gradient from torch autograd (float64).

A trial point with a non-finite objective or gradient (a line search can try wild steps, e.g. a
log-lengthscale of -400) restarts L-BFGS-B from the best point so far with the iterations and
evaluations left, a few times at most (``OptReport.restarts``, ``message``); when the restarts are
used up, or the start itself is non-finite, the optimisation stops as diverged
(``OptReport.diverged``). The policy always ends at the parameters of the lowest finite objective
seen, so the result is never worse than the start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from mbrl_ros.policy.errors import PolicyError


@dataclass
class OptReport:
    """Objective before and after, evaluations, L-BFGS iterations, wall time (s), whether it
    diverged, the restarts from the best point after non-finite trial points, and a one-line
    message."""

    initial: float
    final: float
    evaluations: int
    iterations: int
    seconds: float
    diverged: bool
    restarts: int
    message: str


@dataclass
class _Search:
    """The best point so far and the counts of an optimisation."""

    best_value: float
    best_x: torch.Tensor
    evaluations: int = 0
    iterations: int = 0
    initial: float = math.nan


class _Diverged(Exception):
    pass


def optimise_policy(
    policy: torch.nn.Module,
    objective: Callable[[], torch.Tensor],
    max_iterations: int = 50,
    max_evaluations: int | None = None,
    max_restarts: int = 3,
) -> OptReport:
    """Minimise ``objective()`` (a scalar tensor that depends on ``policy``'s parameters) with
    L-BFGS-B, at most ``max_iterations`` iterations and ``max_evaluations`` objective evaluations
    (default 1.5 × iterations) in all, restarting from the best point at most ``max_restarts``
    times after non-finite trial points. The policy ends at the best parameters found."""
    if max_iterations < 1:
        raise PolicyError(f"max_iterations must be ≥ 1, got {max_iterations}")
    if max_restarts < 0:
        raise PolicyError(f"max_restarts must be ≥ 0, got {max_restarts}")
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise PolicyError("the policy has no parameters to optimise")
    t0 = time.perf_counter()
    start = parameters_to_vector(params).detach().clone()
    max_evaluations = max_evaluations or int(1.5 * max_iterations) + 1
    search = _Search(math.inf, start.clone())

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        vector_to_parameters(torch.as_tensor(x, dtype=start.dtype, device=start.device), params)
        search.evaluations += 1
        value = objective()
        if search.evaluations == 1:
            search.initial = float(value.detach())
        if not bool(torch.isfinite(value)):
            raise _Diverged(
                f"objective is {float(value.detach())} at evaluation {search.evaluations}"
            )
        grad = torch.autograd.grad(value, params)
        g = torch.cat([t.reshape(-1) for t in grad])
        if not bool(torch.isfinite(g).all()):
            raise _Diverged(f"gradient has non-finite entries at evaluation {search.evaluations}")
        v = float(value.detach())
        if v < search.best_value:
            search.best_value, search.best_x = v, torch.as_tensor(x, dtype=start.dtype).clone()
        return v, g.detach().cpu().numpy()

    def iterated(_x: np.ndarray) -> None:
        search.iterations += 1

    diverged = False
    faults: list[str] = []
    while True:
        try:
            result = scipy.optimize.minimize(
                fun,
                search.best_x.cpu().numpy(),
                jac=True,
                method="L-BFGS-B",
                callback=iterated,
                options={
                    "maxiter": max_iterations - search.iterations,
                    "maxfun": max_evaluations - search.evaluations,
                    "gtol": 1e-12,
                    "ftol": 1e-12,
                },
            )  # saturating costs have tiny gradients
            message = str(result.message)
            break
        except _Diverged as exc:
            # a restart re-evaluates the best point, so it needs 2 evaluations left to move on
            if (
                search.evaluations == 1
                or len(faults) == max_restarts
                or search.iterations >= max_iterations
                or search.evaluations + 2 > max_evaluations
            ):
                diverged = True
                message = f"optimisation diverged ({exc}); kept the best parameters found"
                break
            faults.append(str(exc))
    if faults:
        message += (
            f"; restarted from the best point {len(faults)} time"
            f"{'s' if len(faults) > 1 else ''} ({'; '.join(faults)})"
        )
    with torch.no_grad():
        vector_to_parameters(search.best_x.to(start.device), params)
    return OptReport(
        search.initial,
        search.best_value,
        search.evaluations,
        search.iterations,
        time.perf_counter() - t0,
        diverged,
        len(faults),
        message,
    )
