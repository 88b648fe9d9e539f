"""What every planner shares: the plan call, warm starts, limits, the result and its controller.

A planner optimises actions u_0..u_{T−1} (N·m) from the state x0 through a ``DynamicsModel``
under a task cost and returns a ``PlanResult`` whose controller is a ``LinearGaussianController``
(open loop for the sampling planners, feedback K_t for iLQR). The state is the model's state
(``position/<joint>`` then ``velocity/<joint>`` columns first, optional features after); the
controller's x̂ holds the q, q̇ part.

A cost is any callable ``cost(states (..., T+1, dx), actions (..., T, du)) -> (...)`` of torch
tensors, differentiable, and a sum of per-step terms c_t(x_t, u_t) + c_T(x_T) (iLQR relies on the
Hessian being block diagonal over time; the sampling planners do not care). ``mbrl_ros.tasks``
holds the task costs.

A model or cost that produces NaN/inf makes ``plan`` return status ``'nan'`` with no controller
(the node keeps the previous plan and reports it); nothing is raised for it. Bad arguments (x0 of
the wrong size, non-finite x0, inconsistent limits) raise ``PlanError``.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.data.dataset import joint_state_names
from mbrl_ros.dynamics.base import DynamicsModel

Cost = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PlanStatus = Literal["ok", "nan"]


class PlanError(ValueError):
    """A planner was configured or called with bad input; the message says what was wrong."""


class NonFinite(ArithmeticError):
    """Raised inside an optimiser when the model or cost produced NaN/inf; ``plan`` turns it into
    status 'nan'."""


@dataclass
class PlanResult:
    """controller: the plan (None when status is 'nan'); states (T+1, dx) predicted by the model's
    mean under the controller's nominal actions; actions (T, du) nominal torques; cost: the task
    cost of that mean prediction; status: 'ok' or 'nan'; stats: planner-specific numbers
    (iterations, model ``transitions`` evaluated, ``seconds``, ...)."""

    controller: LinearGaussianController | None
    states: np.ndarray | None
    actions: np.ndarray | None
    cost: float
    status: PlanStatus
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def predict_ahead(
    model: DynamicsModel,
    x,
    stamp_ns: int,
    until_ns: int,
    controller: LinearGaussianController | None,
    action_low=None,
    action_high=None,
) -> np.ndarray:
    """The model's mean state (dx,) at ``until_ns`` from x (dx,) measured at ``stamp_ns``, with
    ``controller`` acting (deterministically, clamped to the limits if given) and zero torque
    where it has no step: what a planner whose plan will only take over at ``until_ns`` (one
    planning latency later) should plan from. Whole steps of the model's dt; x if until ≤ stamp."""
    dt_ns = seconds_to_ns(model.signature.dt)
    x = np.asarray(x, dtype=np.float64)
    steps = max(0, (int(until_ns) - int(stamp_ns)) // dt_ns)
    n = model.du
    with torch.no_grad():
        for i in range(steps):
            t = None if controller is None else controller.index(stamp_ns + i * dt_ns)
            u = (
                np.zeros(n)
                if controller is None or t is None
                else controller.act(x[: controller.dx], t)
            )
            if action_low is not None:
                u = np.clip(u, action_low, action_high)
            x = model.predict(torch.as_tensor(x[None]), torch.as_tensor(u[None]))[0][0]
            x = x.double().cpu().numpy()
    return x


def positive_int(name: str, value) -> int:
    """``value`` as an int ≥ 1, else PlanError naming ``name``."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PlanError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (≥ 0 with ``allow_zero``), else PlanError naming it."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PlanError(f"{name} must be a number, got {value!r}") from None
    if not (value >= 0.0 if allow_zero else value > 0.0) or not np.isfinite(value):
        raise PlanError(f"{name} must be {'≥' if allow_zero else '>'} 0 and finite, got {value}")
    return value


class Planner(abc.ABC):
    """Base of all planners: horizon T (steps of the model's dt), box limits on the torques
    action_low/action_high (du,) N·m, torch dtype of the optimisation, seed (each call draws from
    a generator seeded by (seed, start_ns), so a plan is reproducible)."""

    name: str = "planner"

    def __init__(
        self,
        horizon: int,
        action_low,
        action_high,
        *,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ):
        self.horizon = positive_int("horizon", horizon)
        low = np.array(action_low, dtype=np.float64).reshape(-1)
        high = np.array(action_high, dtype=np.float64).reshape(-1)
        if low.shape != high.shape or not low.size:
            raise PlanError(
                f"action_low and action_high must be non-empty and of equal size, "
                f"got {low.size} and {high.size}"
            )
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise PlanError(
                f"action limits must be finite with low < high; got low={low.tolist()}"
                f", high={high.tolist()}"
            )
        self.action_low, self.action_high = low, high
        self.dtype, self.seed = dtype, int(seed)

    @property
    def du(self) -> int:
        return self.action_low.size

    def plan(
        self,
        x0,
        model: DynamicsModel,
        cost: Cost,
        warm: LinearGaussianController | None = None,
        start_ns: int = 0,
    ) -> PlanResult:
        """Plan from x0 (dx,) at stamp ``start_ns``. ``warm``: the previous plan; the part still
        ahead of ``start_ns`` (its û + k, last step repeated to fill the horizon) starts the
        optimisation, otherwise zero torque (clamped into the limits)."""
        tic = time.perf_counter()
        names = model.signature.joint_names
        if model.du != self.du:
            raise PlanError(f"planner limits are for {self.du} joints, the model has {model.du}")
        if tuple(model.signature.state_names[: 2 * self.du]) != joint_state_names(names):
            raise PlanError(
                f"model states {list(model.signature.state_names)} do not start with "
                f"the joint positions and velocities of {list(names)}"
            )
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.shape != (model.dx,) or not np.all(np.isfinite(x0)):
            raise PlanError(
                f"x0 must be {model.dx} finite values, got shape {x0.shape}"
                + ("" if x0.shape != (model.dx,) else f": {x0.tolist()}")
            )
        if (
            isinstance(start_ns, bool)
            or not isinstance(start_ns, (int, np.integer))
            or start_ns < 0
        ):
            raise PlanError(f"start_ns must be a non-negative integer (ns), got {start_ns!r}")
        if warm is not None and not isinstance(warm, LinearGaussianController):
            raise PlanError(
                f"warm must be a LinearGaussianController or None, got {type(warm).__name__}"
            )
        dt_ns = seconds_to_ns(model.signature.dt)
        init = self._initial_actions(warm, start_ns, dt_ns)
        stats: dict = {"planner": self.name}
        try:
            actions, K, states, total = self.optimise(x0, model, cost, init, int(start_ns), stats)
        except NonFinite as exc:
            stats.update(seconds=time.perf_counter() - tic, error=str(exc))
            return PlanResult(None, None, None, float("nan"), "nan", stats)
        n = self.du
        X = states.detach().cpu().double().numpy()
        U = actions.detach().cpu().double().numpy()
        common = dict(dt_ns=dt_ns, start_ns=int(start_ns), joint_names=names)
        if K is None:
            controller = LinearGaussianController.open_loop(U, 2 * n, **common)
        else:
            controller = LinearGaussianController.feedback(X[:-1, : 2 * n], U, K, **common)
        stats["seconds"] = time.perf_counter() - tic
        return PlanResult(controller, X, U, total, "ok", stats)

    def optimise(
        self,
        x0,
        model: DynamicsModel,
        cost: Cost,
        init=None,
        key: int = 0,
        stats: dict | None = None,
    ) -> tuple[torch.Tensor, np.ndarray | None, torch.Tensor, float]:
        """The optimisation alone, from any model state x0 (dx,) (``plan`` adds the joint-state
        checks and the controller; a learned latent state works too): nominal actions (T, du),
        gains K or None, mean-model states (T+1, dx) and the plan's cost. ``init`` (T, du): the
        starting actions (None: zero torque in the box); ``key`` (with the seed) seeds the
        generator. Raises NonFinite when the model or cost produced NaN/inf."""
        tensor: dict[str, Any] = dict(dtype=self.dtype, device=model.device)
        low, high = (torch.as_tensor(a, **tensor) for a in (self.action_low, self.action_high))
        if init is None:
            init = self._initial_actions(None, 0, 0)
        generator = torch.Generator(device=model.device)
        generator.manual_seed((self.seed * 1_000_003 + int(key)) % (2**63))
        x0 = torch.as_tensor(np.asarray(x0, dtype=np.float64), **tensor)
        actions, K, states = self._optimise(
            x0,
            model,
            cost,
            torch.as_tensor(init, **tensor),
            low,
            high,
            generator,
            stats if stats is not None else {},
        )
        with torch.no_grad():
            if states is None:
                states = model.rollout(x0, actions, "mean")
            total = float(cost(states, actions))
        if not (
            torch.isfinite(states).all() and torch.isfinite(actions).all() and np.isfinite(total)
        ):
            raise NonFinite("the mean prediction of the plan is not finite")
        return actions, K, states, total

    def _initial_actions(
        self, warm: LinearGaussianController | None, start_ns: int, dt_ns: int
    ) -> np.ndarray:
        """(T, du) starting actions: the warm plan shifted to ``start_ns``, or zero torque."""
        zero = np.clip(np.zeros(self.du), self.action_low, self.action_high)
        if warm is None or warm.dt_ns != dt_ns or warm.du != self.du:
            return np.tile(zero, (self.horizon, 1))
        step = warm.index(start_ns)
        if step is None:
            return np.tile(zero, (self.horizon, 1))
        ahead = (warm.u_hat + warm.k)[step : step + self.horizon]
        fill = np.tile(ahead[-1], (self.horizon - len(ahead), 1))
        return np.clip(np.concatenate([ahead, fill]), self.action_low, self.action_high)

    @abc.abstractmethod
    def _optimise(
        self,
        x0: torch.Tensor,
        model: DynamicsModel,
        cost: Cost,
        init: torch.Tensor,
        low: torch.Tensor,
        high: torch.Tensor,
        generator: torch.Generator,
        stats: dict,
    ) -> tuple[torch.Tensor, np.ndarray | None, torch.Tensor | None]:
        """Nominal actions (T, du), feedback gains K (T, du, 2·du) (None: open loop) and the
        mean-model states (T+1, dx) under the actions if already known (None: ``plan`` rolls
        them out); may add entries to ``stats``; raises NonFinite when the model or cost
        produced NaN/inf."""
