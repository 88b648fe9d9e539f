"""Distilling a planner into a network policy: supervised learning with DAgger.

An expert labels a state x (at step t of an episode towards a target) with the torque it would
command there:

* ``MPCExpert``: the ``MPC`` object with any planner and a model; it plans at every state, by
  default from scratch (``warm_start=False``), so that its label is a function of the state and
  the target as DAgger assumes — warm-started from the previous plan (as the planner node runs)
  the label also depends on the path to the state: on arm2 through a learned ensemble, iLQR's
  warm and cold labels at the same states differed by 0.18 of the effort limits (RMS) while
  both reached every held-out target;
* ``ControllerExpert``: linear-Gaussian controllers (e.g. from guided policy search), one per
  target; the label is the mean action K_t (x − x̂_t) + k_t + û_t of step t.

``distill``: iteration 0 runs the expert on the conditions (start, target) and trains the policy
on its (state, target, action) pairs (behaviour cloning); each later iteration runs the current
policy, relabels every state it visited with the expert's action, adds the pairs to all earlier
ones and retrains (DAgger, Ross et al. 2011): the policy learns what to do in the states it
reaches itself, not only on the expert's path. Labels are clamped to the effort limits (what the
arm would receive); the loss is the mean squared torque error normalised by them. A retraining whose
loss becomes non-finite is undone (the policy keeps its weights from before it) and reported.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.control.safety import SafetyLayer
from mbrl_ros.planning.mpc import MPC
from mbrl_ros.policy.errors import PolicyError
from mbrl_ros.policy.network import TARGET_DIM, FrozenPolicy, GoalPolicy
from mbrl_ros.policy.rollout import final_distance, run_episode
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator

Condition = tuple[np.ndarray | None, np.ndarray]  # (start (n,) rad or None, target (3,) m)


class Expert(Protocol):
    def start(self, target: np.ndarray) -> None:
        """A new episode towards ``target`` (3,) m begins."""

    def label(self, x: np.ndarray, t: int) -> np.ndarray | None:
        """The expert's torque (n,) N·m at state x = [q, q̇] at step t, or None if it has none
        (e.g. its plan failed)."""


class MPCExpert:
    """Labels from ``mpc`` (a model set, ``random_steps`` = 0): a plan at every state, from
    scratch unless ``warm_start``; a step whose plan failed gives the MPC's fallback (its
    previous plan, when warm-starting) or no label (counted in ``missed``)."""

    def __init__(self, mpc: MPC, warm_start: bool = False):
        if mpc.model is None:
            raise PolicyError("the MPC expert needs a dynamics model (MPC.set_model)")
        if mpc.random_steps:
            raise PolicyError(
                f"the MPC expert must plan from the first step; its random_steps "
                f"is {mpc.random_steps}"
            )
        self.mpc, self.warm_start, self.missed = mpc, warm_start, 0
        self.n = len(mpc.joint_names)
        self.target: np.ndarray | None = None

    def start(self, target) -> None:
        self.target = np.asarray(target, dtype=np.float64)
        self.mpc.previous = None

    def label(self, x, t):
        if not self.warm_start:
            self.mpc.previous = None
        step = self.mpc.act(x[: self.n], x[self.n : 2 * self.n], t * self.mpc.dt_ns, self.target)
        if step.source == "pi0":
            self.missed += 1
            return None
        return step.controller.act(x[: 2 * self.n], step.controller.index(t * self.mpc.dt_ns))


class ControllerExpert:
    """Labels from linear-Gaussian controllers, one per target: ``controllers`` is a sequence of
    (target (3,) m, controller); past a controller's last step its last step is used."""

    def __init__(self, controllers: Sequence[tuple[np.ndarray, LinearGaussianController]]):
        if not controllers:
            raise PolicyError("ControllerExpert needs at least one (target, controller)")
        self.controllers = [(np.asarray(g, dtype=np.float64), c) for g, c in controllers]
        self.current: LinearGaussianController | None = None

    def start(self, target) -> None:
        for g, c in self.controllers:
            if np.allclose(g, target, rtol=0.0, atol=1e-9):
                self.current = c
                return
        raise PolicyError(f"no controller for target {np.asarray(target).tolist()}")

    def label(self, x, t):
        c = self.current
        return c.act(x[: c.dx], min(t, c.T - 1))


@dataclass(frozen=True)
class DistillConfig:
    """dagger_iterations after the behaviour-cloning one; episode_steps per episode; per
    (re)training ``train_steps`` Adam steps of ``batch`` pairs at step size ``lr``."""

    dagger_iterations: int = 4
    episode_steps: int = 40
    train_steps: int = 500
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("dagger_iterations", "episode_steps", "train_steps", "batch"):
            value = getattr(self, name)
            low = 0 if name == "dagger_iterations" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PolicyError(
                    f"distillation setting {name} = {value!r} must be an integer ≥ {low}"
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PolicyError(f"distillation setting lr = {self.lr} must be > 0")


@dataclass
class DistillIteration:
    """iteration 0: the expert ran (behaviour cloning); ≥ 1: the policy ran (DAgger).
    imitation_error: RMS of (π(x, g) − expert)/effort over the states visited this iteration,
    before retraining; final_distances (m) of this iteration's episodes; pairs: aggregated
    after it; missed: states the expert gave no label; train_loss and policy (numpy copy) after
    retraining; message: a retraining that diverged and was undone."""

    iteration: int
    imitation_error: float
    final_distances: list[float]
    pairs: int
    missed: int
    train_loss: float
    policy: FrozenPolicy
    message: str = ""


def imitation_loss(
    policy: GoalPolicy, states: torch.Tensor, targets: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """Mean of ((π(x, g) − u*)/effort)² over pairs states (N, dx), targets (N, 3), actions
    (N, du)."""
    return (((policy(states, targets) - actions) / policy.effort) ** 2).mean()


def _retrain(
    policy: GoalPolicy, X, G, U, config: DistillConfig, gen: torch.Generator
) -> tuple[float, str]:
    """Adam on the aggregated pairs; (loss on all pairs, '' or the divergence message)."""
    saved = copy.deepcopy(policy.state_dict())
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    for step in range(config.train_steps):
        idx = torch.randint(len(X), (min(config.batch, len(X)),), generator=gen)
        loss = imitation_loss(policy, X[idx], G[idx], U[idx])
        if not torch.isfinite(loss):
            policy.load_state_dict(saved)
            return math.nan, (
                f"non-finite imitation loss at step {step + 1}: retraining undone, "
                f"the policy keeps its previous weights"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return imitation_loss(policy, X, G, U).item(), ""


def distill(
    policy: GoalPolicy,
    expert: Expert,
    sim: ArmSimulator,
    conditions: Sequence[Condition] | Callable[[int], Sequence[Condition]],
    config: DistillConfig = DistillConfig(),
    safety: SafetyLayer | None = None,
    progress=None,
) -> list[DistillIteration]:
    """Behaviour cloning, then DAgger (module docstring), training ``policy`` in place on
    episodes of ``sim`` from each condition (start joint positions (n,) rad or None for the
    simulator's reset, target (3,) m): the same ones every iteration, or ``conditions(i)`` for
    iteration i (new targets each time widen what the policy sees). Returns a record per
    iteration."""
    n = len(policy.signature.joint_names)
    effort = policy.effort.detach().cpu().numpy()
    fk = ForwardKinematics(sim.robot)
    gen = torch.Generator().manual_seed(config.seed)
    X, G, U = [], [], []
    records = []
    missed_before = 0
    for it in range(config.dagger_iterations + 1):
        frozen = policy.frozen()
        visited, distances = [], []
        episodes = conditions(it) if callable(conditions) else conditions
        if not episodes:
            raise PolicyError(f"iteration {it}: no (start, target) conditions")
        for start, target in episodes:
            target = np.asarray(target, dtype=np.float64)
            if target.shape != (TARGET_DIM,):
                raise PolicyError(f"condition target {target.tolist()} must have 3 values")
            expert.start(target)
            labels: list[tuple[np.ndarray, np.ndarray | None]] = []

            def act(x, t):
                u_star = expert.label(x, t)
                if u_star is not None:  # what the arm can receive
                    u_star = np.clip(u_star, -effort, effort)
                labels.append((x.copy(), u_star))
                if it == 0:  # behaviour cloning: the expert drives (zero torque if it has none)
                    return np.zeros(n) if u_star is None else u_star
                return frozen.act(x[:n], x[n : 2 * n], target)

            episode = run_episode(sim, act, target, config.episode_steps, start, safety)
            distances.append(final_distance(fk, episode))
            visited += [(x, target, u) for x, u in labels if u is not None]
        missed = getattr(expert, "missed", 0) - missed_before
        missed_before += missed
        if not visited:
            raise PolicyError(f"iteration {it}: the expert labelled none of the visited states")
        xs, gs, us = (torch.as_tensor(np.stack(a), dtype=torch.float64) for a in zip(*visited))
        if it == 0:
            policy.set_normalisation(xs.numpy(), gs.numpy())
        with torch.no_grad():
            error = math.sqrt(imitation_loss(policy, xs, gs, us).item())
        X.append(xs)
        G.append(gs)
        U.append(us)
        loss, message = _retrain(policy, torch.cat(X), torch.cat(G), torch.cat(U), config, gen)
        record = DistillIteration(
            it, error, distances, sum(len(x) for x in X), missed, loss, policy.frozen(), message
        )
        records.append(record)
        if progress is not None:
            progress(
                f"distillation iteration {it} ({'expert' if it == 0 else 'DAgger'}): "
                f"imitation error {error:.3g} before retraining, loss {loss:.3g} after, "
                f"{record.pairs} pairs, final distances (cm) "
                f"{np.round(100 * np.array(distances), 1).tolist()}"
                + (f"; {message}" if message else "")
            )
    return records
