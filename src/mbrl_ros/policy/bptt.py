"""The lecture's MBRL version 2.0: backpropagate through the learned model into a policy.

``train_bptt``: imagined rollouts x_{t+1} = f(x_t, π(x_t, g)) through a dynamics model from real
start states (rows of the data set D) towards targets g, scored by the reach cost; Adam on the
policy's weights with the gradient norm clipped. The model step is the mean of the model's
prediction (``propagation="mean"``) or, for an ensemble, the mean of one member drawn at random
per rollout (``"member"``: each rollout sees one consistent model, and the policy must work under
all of them). The horizon grows in stages from ``horizon_start`` to ``horizon_end``: short
rollouts first (well-conditioned gradients, where the model is accurate), then long ones. A
non-finite loss or gradient stops training; the report says so and the policy keeps the last
parameters whose loss and gradient were finite.

``run_v2``: the loop — run the base policy π0 to collect D; then repeatedly fit the model on D,
train the policy by BPTT through it, run the policy on the arm (an ``ArmSimulator``, offline) and
append its data to D.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.control.safety import SafetyLayer
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.dynamics.base import DynamicsModel, FitReport, ModelError
from mbrl_ros.dynamics.ensemble import EnsembleModel
from mbrl_ros.dynamics.evaluation import holdout_split
from mbrl_ros.policy.errors import PolicyError
from mbrl_ros.policy.network import FrozenPolicy, GoalPolicy
from mbrl_ros.policy.rollout import episodes_dataset, final_distance, run_episode
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator
from mbrl_ros.tasks.episodes import TargetSampler
from mbrl_ros.tasks.reach import ReachCost

PROPAGATIONS = ("mean", "member")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BPTTConfig:
    """iterations: Adam steps; batch: imagined rollouts per step; horizon_start → horizon_end
    in ``horizon_stages`` equal stages of the iterations; lr: Adam step size; grad_clip: bound on
    the gradient's norm; propagation: 'mean' or 'member'; seed: sampling of starts, targets and
    members."""

    iterations: int = 300
    batch: int = 64
    horizon_start: int = 5
    horizon_end: int = 30
    horizon_stages: int = 4
    lr: float = 3e-3
    grad_clip: float = 1.0
    propagation: str = "mean"
    seed: int = 0

    def __post_init__(self):
        for name in ("iterations", "batch", "horizon_start", "horizon_end", "horizon_stages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PolicyError(f"BPTT setting {name} = {value!r} must be an integer ≥ 1")
        if self.horizon_end < self.horizon_start:
            raise PolicyError(
                f"horizon_end {self.horizon_end} < horizon_start {self.horizon_start}"
            )
        for name in ("lr", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise PolicyError(f"BPTT setting {name} = {getattr(self, name)} must be > 0")
        if self.propagation not in PROPAGATIONS:
            raise PolicyError(f"propagation '{self.propagation}' is not one of {PROPAGATIONS}")

    def horizon(self, iteration: int) -> int:
        """Rollout length at ``iteration`` (0-based) of the schedule."""
        stage = min(self.horizon_stages - 1, iteration * self.horizon_stages // self.iterations)
        frac = stage / (self.horizon_stages - 1) if self.horizon_stages > 1 else 1.0
        return int(round(self.horizon_start + frac * (self.horizon_end - self.horizon_start)))


@dataclass
class BPTTReport:
    """Per iteration: loss (mean cost per step of the batch), horizon and gradient norm before
    clipping; iterations run; diverged (stopped on a non-finite loss or gradient) with the
    message; seconds."""

    losses: list[float] = field(default_factory=list)
    horizons: list[int] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    diverged: bool = False
    message: str = ""
    seconds: float = 0.0


def reach_costs(
    cost: ReachCost, states: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """The reach cost (B,) of rollouts states (B, T+1, dx), actions (B, T, du), each towards its
    own target (B, 3). (``ReachCost`` holds one target; its distance broadcasts a (B, 1, 3)
    target over the time steps, which is what this uses for the duration of the call.)"""
    single = cost.target
    cost.target = targets.to(single).unsqueeze(-2)
    try:
        return cost(states, actions)
    finally:
        cost.target = single


def _check_model(policy: GoalPolicy, model: DynamicsModel, propagation: str) -> None:
    sig, psig = model.signature, policy.signature
    if sig.joint_names != psig.joint_names or sig.state_names[: policy.dx] != psig.state_names:
        raise PolicyError(
            f"model states {list(sig.state_names)} and joints "
            f"{list(sig.joint_names)} do not start with the policy's "
            f"{list(psig.state_names)}"
        )
    if abs(sig.dt - psig.dt) > 1e-9:
        raise PolicyError(f"model control period {sig.dt} s differs from the policy's {psig.dt} s")
    if propagation == "member" and not isinstance(model, EnsembleModel):
        raise PolicyError(f"propagation 'member' needs an ensemble model, not '{model.kind}'")


def imagine(
    policy: GoalPolicy,
    model: DynamicsModel,
    x0: torch.Tensor,
    targets: torch.Tensor,
    horizon: int,
    members: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Imagined rollouts from x0 (B, dx) towards targets (B, 3): states (B, H+1, dx) and actions
    (B, H, du), differentiable in the policy's weights. ``members`` (B,): the ensemble member
    each rollout follows (its mean); None: the model's mean prediction."""
    states, actions = [x0], []
    for _ in range(horizon):
        u = policy(states[-1], targets)
        if members is None:
            nxt = model.predict(states[-1], u)[0]
        elif isinstance(model, EnsembleModel):
            means = model.member_predictions(states[-1], u)[0]  # (E, B, dx)
            nxt = means.gather(0, members.view(1, -1, 1).expand(1, *means.shape[1:]))[0]
        else:
            raise PolicyError(f"members need an ensemble model, not '{model.kind}'")
        states.append(nxt)
        actions.append(u)
    return torch.stack(states, -2), torch.stack(actions, -2)


@torch.no_grad()
def imagined_cost(
    policy: GoalPolicy, model: DynamicsModel, cost: ReachCost, x0, targets, horizon: int
) -> float:
    """Mean reach cost of the model-mean rollouts of ``policy`` from x0 (B, dx) towards
    targets (B, 3) over ``horizon`` steps."""
    x0 = torch.as_tensor(np.asarray(x0), dtype=torch.float64, device=model.device)
    g = torch.as_tensor(np.asarray(targets), dtype=torch.float64, device=model.device)
    states, actions = imagine(policy, model, x0, g, horizon)
    return float(reach_costs(cost, states, actions, g).mean())


def train_bptt(
    policy: GoalPolicy,
    model: DynamicsModel,
    cost: ReachCost,
    starts,
    targets,
    config: BPTTConfig = BPTTConfig(),
    progress: Progress | None = None,
) -> BPTTReport:
    """Train ``policy`` (in place) by BPTT through ``model`` from start states drawn from
    ``starts`` (N, ≥ dx; real states of D) towards targets drawn from ``targets`` (M, 3) m; see
    the module docstring. The policy must be on the model's device."""
    _check_model(policy, model, config.propagation)
    device = model.device
    starts = torch.as_tensor(np.asarray(starts), dtype=torch.float64, device=device)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.float64, device=device)
    if starts.ndim != 2 or starts.shape[1] != model.dx or not len(starts):
        raise PolicyError(f"starts must be (N, {model.dx}) model states, got {tuple(starts.shape)}")
    if targets.ndim != 2 or targets.shape[1] != 3 or not len(targets):
        raise PolicyError(f"targets must be (M, 3), got {tuple(targets.shape)}")
    if not (torch.isfinite(starts).all() and torch.isfinite(targets).all()):
        raise PolicyError("start states and targets must be finite")
    cost = cost.to(device)
    params = list(policy.parameters())
    opt = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    members = getattr(model, "members", 1)
    report, tic = BPTTReport(), time.perf_counter()
    good = copy.deepcopy(policy.state_dict())
    for i in range(config.iterations):
        horizon = config.horizon(i)
        rows = torch.randint(len(starts), (config.batch,), generator=gen).to(device)
        goal = targets[torch.randint(len(targets), (config.batch,), generator=gen).to(device)]
        pick = (
            torch.randint(members, (config.batch,), generator=gen).to(device)
            if config.propagation == "member"
            else None
        )
        states, actions = imagine(policy, model, starts[rows], goal, horizon, pick)
        loss = reach_costs(cost, states, actions, goal).mean() / horizon
        grads = torch.autograd.grad(loss, params) if torch.isfinite(loss) else None
        norm = (
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            if grads is not None
            else torch.tensor(math.nan)
        )
        if grads is None or not torch.isfinite(norm):
            policy.load_state_dict(good)
            what = "loss" if grads is None else "gradient"
            report.diverged = True
            report.message = (
                f"non-finite {what} at iteration {i + 1} (horizon {horizon}): "
                f"stopped; the policy keeps the last parameters with a finite "
                f"loss and gradient"
            )
            break
        good = copy.deepcopy(policy.state_dict())
        scale = min(1.0, config.grad_clip / (float(norm) + 1e-12))
        for p, g in zip(params, grads):
            p.grad = g * scale
        opt.step()
        report.losses.append(loss.item())
        report.horizons.append(horizon)
        report.grad_norms.append(float(norm))
        if progress is not None and (i + 1) % max(1, config.iterations // 5) == 0:
            progress(
                f"BPTT {i + 1}/{config.iterations}: horizon {horizon}, cost per step "
                f"{report.losses[-1]:.4g}, gradient norm {float(norm):.3g}"
            )
    else:
        report.message = (
            f"{config.iterations} iterations, final horizon "
            f"{report.horizons[-1]}, cost per step {report.losses[-1]:.4g}"
        )
    report.seconds = time.perf_counter() - tic
    return report


# -- the v2.0 loop --------------------------------------------------------------------------------
@dataclass(frozen=True)
class V2Config:
    """iterations of fit → BPTT → run; episodes of ``episode_steps`` per iteration on training
    targets; random_episodes of π0 (±random_scale·effort, each torque held random_hold_steps)
    first; exploration: std of Gaussian torque noise added while collecting, as a fraction of
    the effort limits; imagined_targets: targets drawn once for BPTT; val_fraction: episodes held
    out to early-stop the model fit."""

    iterations: int = 8
    episodes: int = 4
    episode_steps: int = 60
    random_episodes: int = 4
    random_scale: float = 0.5
    random_hold_steps: int = 2
    exploration: float = 0.05
    imagined_targets: int = 512
    val_fraction: float = 0.2
    bptt: BPTTConfig = BPTTConfig()
    seed: int = 0


@dataclass
class V2Iteration:
    """One pass of the loop: the model fit, the BPTT report, the policy it gave (numpy copy) and
    the final end-effector distances (m) of the episodes that policy then ran; robot_seconds and
    transitions: size of D afterwards."""

    iteration: int
    fit: FitReport
    bptt: BPTTReport
    policy: FrozenPolicy
    final_distances: list[float]
    robot_seconds: float
    transitions: int


def run_v2(
    policy: GoalPolicy,
    model: DynamicsModel,
    cost: ReachCost,
    sim: ArmSimulator,
    sampler: TargetSampler,
    config: V2Config = V2Config(),
    safety: SafetyLayer | None = None,
    progress: Progress | None = None,
) -> tuple[Dataset, list[V2Iteration]]:
    """The v2.0 loop (module docstring) on ``sim``; ``sampler`` gives the training targets (for
    the episodes and the imagined rollouts). Returns D and a record per iteration. Raises
    ModelError if a model fit diverges."""
    sig = policy.signature
    n = len(sig.joint_names)
    rng = np.random.default_rng(config.seed)
    fk = ForwardKinematics(sim.robot)
    effort = sim.robot.limits.effort
    base = RandomTorquePolicy(effort, config.random_scale, config.random_hold_steps, config.seed)
    episodes = [
        run_episode(
            sim, lambda x, t: base.act(), sampler.sample(), config.episode_steps, safety=safety
        )
        for _ in range(config.random_episodes)
    ]
    data = episodes_dataset(episodes, sig.joint_names, sig.dt, source="pi0")
    imagined = np.stack([sampler.sample() for _ in range(config.imagined_targets)])
    policy.set_normalisation(data.states, imagined)
    records = []
    for it in range(config.iterations):
        train, val = holdout_split(data, config.val_fraction, config.seed + it)
        fit = model.fit(train, val if len(val) else None)
        if fit.rolled_back:
            raise ModelError(f"iteration {it}: {fit.message}")
        bptt = train_bptt(
            policy,
            model,
            cost,
            data.states,
            imagined,
            replace(config.bptt, seed=config.bptt.seed + it),
        )
        frozen = policy.frozen()
        new = []
        for _ in range(config.episodes):
            target = sampler.sample()
            noise = rng.normal(0.0, config.exploration, (config.episode_steps, n)) * effort
            new.append(
                run_episode(
                    sim,
                    lambda x, t: frozen.act(x[:n], x[n:], target) + noise[t],
                    target,
                    config.episode_steps,
                    safety=safety,
                )
            )
        data = Dataset.concat(
            [data, episodes_dataset(new, sig.joint_names, sig.dt, data.n_episodes, "policy")]
        )
        record = V2Iteration(
            it,
            fit,
            bptt,
            frozen,
            [final_distance(fk, ep) for ep in new],
            len(data) * sig.dt,
            len(data),
        )
        records.append(record)
        if progress is not None:
            progress(
                f"v2.0 iteration {it + 1}/{config.iterations}: {fit.message}; BPTT "
                f"{bptt.message}; final distances (cm) "
                f"{np.round(100 * np.array(record.final_distances), 1).tolist()}; "
                f"D = {len(data)} transitions ({record.robot_seconds:.1f} s)"
            )
    return data, records
