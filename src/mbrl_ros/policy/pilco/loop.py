"""The PILCO loop (Deisenroth & Rasmussen 2011, Algorithm 1): random rollouts → fit the GP
dynamics → optimise the policy on the moment-matched expected cost (L-BFGS, analytic gradients) →
roll the policy out on the system → append the data → refit → repeat.

A ``System`` is anything that can be put into a state and stepped one control period with a
torque: the MuJoCo pendulum (``pendulum``) or the simulated arm (``arm_reach``). Every trial
starts from x_0 ~ N(start_mean, start_cov), the distribution the propagation starts from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.dynamics.base import ModelSignature, Progress
from mbrl_ros.dynamics.gp import GPConfig, GPModel, GPModelBase
from mbrl_ros.policy.errors import PolicyError
from mbrl_ros.policy.pilco.cost import SaturatingCost
from mbrl_ros.policy.pilco.optimise import OptReport, optimise_policy
from mbrl_ros.policy.pilco.policies import PilcoPolicy
from mbrl_ros.policy.pilco.propagation import propagate


class System(Protocol):
    """A torque-controlled system stepped one control period ``dt`` (s) at a time; states are
    [positions, velocities] of ``joint_names`` (``state_names``), torques bounded by
    ``effort_limit`` (du,) N·m."""

    joint_names: tuple[str, ...]
    state_names: tuple[str, ...]
    dt: float
    effort_limit: np.ndarray

    def reset(self, state: np.ndarray) -> np.ndarray:
        """Put the system in ``state`` (dx,); returns the measured state (dx,)."""

    def step(self, torque: np.ndarray) -> np.ndarray:
        """Apply ``torque`` (du,) N·m (clamped to the limits) for dt; the measured next state."""


@dataclass
class PilcoTask:
    """What to learn: the system, the cost, the start distribution N(start_mean (dx,),
    start_cov (dx, dx)) and the horizon in control steps."""

    system: System
    cost: SaturatingCost
    start_mean: np.ndarray
    start_cov: np.ndarray
    horizon: int

    def __post_init__(self):
        dx = len(self.system.state_names)
        self.start_mean = np.asarray(self.start_mean, dtype=float)
        self.start_cov = np.asarray(self.start_cov, dtype=float)
        if self.start_mean.shape != (dx,) or self.start_cov.shape != (dx, dx):
            raise PolicyError(
                f"start distribution needs mean ({dx},) and covariance ({dx}, {dx}), "
                f"got {self.start_mean.shape} and {self.start_cov.shape}"
            )
        if self.cost.dx != dx:
            raise PolicyError(f"cost is for {self.cost.dx} state values, the system has {dx}")
        if self.horizon < 1:
            raise PolicyError(f"horizon must be ≥ 1 step, got {self.horizon}")


@dataclass(frozen=True)
class PilcoConfig:
    """``random_trials`` rollouts of uniform random torques (±effort limit, a new value every
    step), then at most ``trials`` policy trials; ``opt_iterations`` L-BFGS iterations per policy
    optimisation; ``solved_streak``: end after this many consecutive trials the task's ``solved``
    test accepts (0: run all trials) — the first success comes from a policy fitted to few
    states, one or two more trials make it hold from the rest of the start distribution; ``gp``:
    the GP's settings; ``seed`` draws the start states and random torques."""

    trials: int = 10
    random_trials: int = 1
    opt_iterations: int = 50
    solved_streak: int = 2
    gp: GPConfig = field(default_factory=lambda: GPConfig(iterations=60))
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        for name in ("trials", "random_trials", "opt_iterations"):
            if getattr(self, name) < 1:
                raise PolicyError(f"PILCO setting {name} = {getattr(self, name)} must be ≥ 1")
        if self.solved_streak < 0:
            raise PolicyError(f"PILCO setting solved_streak = {self.solved_streak} must be ≥ 0")


@dataclass
class Trial:
    """One rollout on the system: measured states (H + 1, dx), applied torques (H, du), its
    cost Σ_{t=1..H} c(x_t), the cost the model predicted for it (policy trials), the seconds of
    system data after it, and the GP fit and policy optimisation that preceded it."""

    index: int
    kind: str
    states: np.ndarray
    actions: np.ndarray
    cost: float
    data_seconds: float
    predicted_cost: float | None = None
    fit_seconds: float = 0.0
    opt: OptReport | None = None


@dataclass
class PilcoResult:
    """All trials, the data set, the last GP model, the final policy, the number of the first
    trial ``solved`` accepted (None if none; the data it took is ``trials[solved_at - 1]
    .data_seconds``) and the wall time (s)."""

    trials: list[Trial]
    data: Dataset
    model: GPModelBase
    policy: PilcoPolicy
    solved_at: int | None
    seconds: float


def rollout(
    system: System, controller: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Measured states (H + 1, dx) and applied torques (H, du) of ``horizon`` steps from x0
    with u_t = controller(measured x_t), clamped to the effort limits."""
    states = [system.reset(np.asarray(x0, dtype=float))]
    actions = []
    for _ in range(horizon):
        u = np.clip(
            np.asarray(controller(states[-1]), dtype=float).reshape(-1),
            -system.effort_limit,
            system.effort_limit,
        )
        actions.append(u)
        states.append(system.step(u))
    return np.array(states), np.array(actions)


def episode_dataset(
    system: System, states: np.ndarray, actions: np.ndarray, episode: int
) -> Dataset:
    """The transitions of one rollout (states (H + 1, dx), torques (H, du)) of ``system`` as
    episode ``episode``."""
    return Dataset.from_rollout(
        states, actions, episode, system.joint_names, system.dt, system.state_names, source="pilco"
    )


def fit_dynamics(data: Dataset, config: GPConfig, device: str = "cpu") -> tuple[GPModel, float]:
    """An exact GP fitted to ``data`` and the fit's wall time (s); PolicyError if it diverged."""
    model = GPModel(ModelSignature.of(data), device=device, config=config)
    report = model.fit(data)
    if report.rolled_back:
        raise PolicyError(f"GP dynamics fit failed: {report.message}")
    return model, report.seconds


def run_pilco(
    task: PilcoTask,
    policy: PilcoPolicy,
    config: PilcoConfig = PilcoConfig(),
    progress: Progress | None = print,
    solved: Callable[[np.ndarray], bool] | None = None,
) -> PilcoResult:
    """Run the PILCO loop on ``task`` improving ``policy`` in place; one progress line per trial.
    ``solved(states (H + 1, dx))`` marks a policy trial as solving the task: the first one is
    ``PilcoResult.solved_at``; the loop ends after ``config.solved_streak`` in a row."""
    system = task.system
    dx, du = len(system.state_names), len(system.joint_names)
    if (policy.dx, policy.du) != (dx, du):
        raise PolicyError(
            f"policy maps {policy.dx} states to {policy.du} torques, the system has "
            f"{dx} states and {du} joints"
        )
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    random_torque = RandomTorquePolicy(
        system.effort_limit, scale=1.0, hold_steps=1, seed=config.seed
    )
    policy.to(config.device)
    trials: list[Trial] = []
    episodes: list[Dataset] = []

    def record(kind, states, actions, **extra) -> Trial:
        episodes.append(episode_dataset(system, states, actions, len(episodes)))
        cost = float(task.cost.numpy(states[1:]).sum())
        seconds = sum(len(e) for e in episodes) * system.dt
        trials.append(Trial(len(trials) + 1, kind, states, actions, cost, seconds, **extra))
        return trials[-1]

    def start() -> np.ndarray:
        return rng.multivariate_normal(task.start_mean, task.start_cov)

    for _ in range(config.random_trials):
        trial = record(
            "random", *rollout(system, lambda x: random_torque.act(), start(), task.horizon)
        )
        if progress is not None:
            progress(
                f"PILCO trial {trial.index} (random torques): cost {trial.cost:.2f}, "
                f"{trial.data_seconds:.1f} s of data"
            )
    solved_at, streak = None, 0
    for _ in range(config.trials):
        data = Dataset.concat(episodes)
        model, fit_seconds = fit_dynamics(data, config.gp, config.device)

        def objective(model=model):
            return propagate(
                model, policy, task.start_mean, task.start_cov, task.horizon, task.cost
            ).total_cost

        opt = optimise_policy(policy, objective, config.opt_iterations)
        trial = record(
            "policy",
            *rollout(system, policy.act, start(), task.horizon),
            predicted_cost=opt.final,
            fit_seconds=fit_seconds,
            opt=opt,
        )
        if progress is not None:
            note = f"; {opt.message}" if opt.diverged or opt.restarts else ""
            progress(
                f"PILCO trial {trial.index}: cost {trial.cost:.2f} (predicted "
                f"{opt.final:.2f}), {trial.data_seconds:.1f} s of data, GP fit on "
                f"{len(data)} points {fit_seconds:.1f} s, policy optimisation "
                f"{opt.initial:.2f} → {opt.final:.2f} in {opt.evaluations} evaluations "
                f"{opt.seconds:.1f} s{note}"
            )
        if solved is not None:
            streak = streak + 1 if solved(trial.states) else 0
            if streak and solved_at is None:
                solved_at = trial.index
            if streak and streak == config.solved_streak:
                break
    return PilcoResult(
        trials, Dataset.concat(episodes), model, policy, solved_at, time.perf_counter() - t0
    )
