"""Mirror-descent guided policy search (MDGPS; Montgomery & Levine 2016, cbfinn/gps's
algorithm_mdgps): one network policy π(x, g) (``policy.network.GoalPolicy``, g the condition's
target (3,) m) trained from the linear-Gaussian controllers of several conditions.

Per iteration, with samples X (M, T+1, dx), U (M, T, du) of each condition's controller:

1. linearise the policy about the condition's samples (``linearize_policy``): π(x) ≈ K_t x + k_t
   with Σ_t = diag(var_π) + the spread of π about that line over the samples;
2. C-step: the KL-constrained update of the controller with the constraint D_KL(p ‖ π_lin) ≤ ε
   taken against that linearisation, ε adapted from the predicted against the actual improvement
   of the policy's linearisation (``trajopt.gps.GPS.update`` with ``reference``);
3. S-step (``s_step``): supervised learning of π on every condition's sample states, labelled
   with the new controller's mean action K_t x + k_t and weighted by its precision Σ_t⁻¹ = Q̃_uu:
   ℓ = mean over (sample, t) of (π(x, g) − u*)ᵀ Σ_t⁻¹ (π(x, g) − u*); the policy's variance
   becomes var_π = 1 / diag(mean Σ_t⁻¹) (gps's policy_opt).

Before the first C-step the policy is trained on the initial controllers (gps does the same).
Where gps fits the linearisation by regression on the samples with a GMM policy prior (its policy
is a black box there), this uses the network's own Jacobian (autograd), averaged over the samples:
exact for the network, and well posed with 5 samples in 14 dimensions.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.trajopt.gps import GPS, IterationRecord


@dataclass(frozen=True)
class SStepConfig:
    """Per S-step: ``train_steps`` Adam steps of ``batch`` (state, label) pairs at rate ``lr``
    (the policy keeps its weights between iterations, as gps); ``seed`` of the batches."""

    train_steps: int = 1000
    batch: int = 256
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("train_steps", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"S-step setting {name} = {value!r} must be an integer ≥ 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"S-step setting lr = {self.lr} must be > 0")


def s_step_loss(
    policy,
    states: torch.Tensor,
    targets: torch.Tensor,
    actions: torch.Tensor,
    precision: torch.Tensor,
) -> torch.Tensor:
    """mean_i (π(x_i, g_i) − u*_i)ᵀ P_i (π(x_i, g_i) − u*_i): states (N, dx), targets (N, 3),
    actions u* (N, du) N·m, precision P (N, du, du) (N·m)⁻²."""
    diff = policy(states, targets) - actions
    return torch.einsum("ni,nij,nj->n", diff, precision, diff).mean()


def s_step(
    policy, states, targets, actions, precision, config: SStepConfig = SStepConfig()
) -> tuple[float, np.ndarray]:
    """Trains ``policy`` (a torch module π(states, targets)) in place on the pairs (shapes as
    ``s_step_loss``, arrays or tensors) by Adam; returns (the loss on all pairs after training,
    the policy variance 1/diag(mean P) (du,) (N·m)²). A training whose loss turns non-finite is
    undone and raises FloatingPointError (the policy keeps its weights)."""
    X, G, U, P = (
        torch.as_tensor(np.asarray(a, dtype=np.float64))
        for a in (states, targets, actions, precision)
    )
    n = len(X)
    if not (G.shape[0] == U.shape[0] == P.shape[0] == n and n > 0):
        raise ValueError(
            f"S-step pairs differ in number: states {tuple(X.shape)}, targets "
            f"{tuple(G.shape)}, actions {tuple(U.shape)}, precision "
            f"{tuple(P.shape)}"
        )
    saved = copy.deepcopy(policy.state_dict())
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    for step in range(config.train_steps):
        idx = torch.randint(n, (config.batch,), generator=gen) if config.batch < n else slice(None)
        loss = s_step_loss(policy, X[idx], G[idx], U[idx], P[idx])
        if not torch.isfinite(loss):
            policy.load_state_dict(saved)
            raise FloatingPointError(
                f"S-step loss became non-finite at step {step + 1}; the "
                f"policy keeps its previous weights"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = s_step_loss(policy, X, G, U, P).item()
    var = 1.0 / np.diagonal(P.mean(0).numpy())
    return final, var


def linearize_policy(
    policy, X, target, var, like: LinearGaussianController
) -> LinearGaussianController:
    """π about the samples X (M, T+1, dx) (the first T states used) towards ``target`` (3,) m as
    a linear-Gaussian controller with ``like``'s timing and names: K_t the Jacobian ∂π/∂x (du,
    dx) averaged over the M samples, u_hat_t the mean of π at the mean state x̂_t, Σ_t =
    diag(var) + the covariance over the samples of π(x) − K_t (x − x̂_t) − û_t (var (du,)
    (N·m)², the policy's own variance)."""
    X = np.asarray(X, dtype=np.float64)
    M, T, dx = X.shape[0], like.T, like.dx
    if X.ndim != 3 or X.shape[1] < T or X.shape[2] != dx:
        raise ValueError(f"samples {X.shape} do not fit a linearisation with T={T}, dx={dx}")
    var = np.asarray(var, dtype=np.float64)
    if var.shape != (like.du,) or not np.all(var > 0) or not np.all(np.isfinite(var)):
        raise ValueError(f"policy variance must be {like.du} positive values, got {var}")
    states = torch.as_tensor(X[:, :T].reshape(-1, dx))
    goal = torch.as_tensor(np.asarray(target, dtype=np.float64))

    def act(x):
        return policy(x, goal)

    with torch.no_grad():
        u = act(states).numpy().reshape(M, T, -1)
        J = torch.func.vmap(torch.func.jacrev(act))(states).numpy().reshape(M, T, -1, dx)
    K = J.mean(0)
    x_hat = X[:, :T].mean(0)
    residual = u - np.einsum("tij,mtj->mti", K, X[:, :T] - x_hat)  # (M, T, du)
    u_hat = residual.mean(0)
    spread = residual - u_hat
    cov = np.einsum("mti,mtj->tij", spread, spread) / M + np.diag(var)
    return LinearGaussianController.gaussian(
        x_hat,
        u_hat,
        K,
        None,
        cov,
        dt_ns=like.dt_ns,
        start_ns=like.start_ns,
        joint_names=like.joint_names,
        state_layout=like.state_layout,
    )


@dataclass
class MDGPSIteration:
    """One MDGPS iteration: the C-step record of each condition (``trajopt.gps``), the S-step
    loss after training and the policy's standard deviation (du,) N·m."""

    records: list[IterationRecord]
    s_step_loss: float
    policy_std: np.ndarray = field(repr=False)


class MDGPS:
    """The MDGPS state: ``learners`` one ``trajopt.gps.GPS`` per condition (its local dynamics,
    cost, trust region), ``targets`` (M, 3) m the policy's goal input per condition, ``policy``
    the network trained in place. ``iterate`` takes each condition's samples of its current
    controller."""

    def __init__(self, learners: list[GPS], targets, policy, config: SStepConfig = SStepConfig()):
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != (len(learners), 3) or not learners:
            raise ValueError(
                f"need one target (3,) m per learner: {len(learners)} learners, "
                f"targets of shape {targets.shape}"
            )
        self.learners, self.targets, self.policy, self.config = learners, targets, policy, config
        self.var: np.ndarray | None = None  # the policy's variance, set by the first S-step
        self.iteration = 0

    def controller(self, m: int) -> LinearGaussianController:
        return self.learners[m].controller(0)

    def _train(self, samples) -> float:
        """S-step on every condition's sample states labelled by its current controller."""
        xs, gs, us, ps = [], [], [], []
        for m, (X, _) in enumerate(samples):
            ctrl = self.controller(m)
            if ctrl.inv_cov is None:
                raise ValueError(f"condition {m}: controller covariance not positive definite")
            X = np.asarray(X, dtype=np.float64)[:, : ctrl.T]
            t = np.arange(ctrl.T)
            xs.append(X.reshape(-1, ctrl.dx))
            us.append(ctrl.act(X, t).reshape(-1, ctrl.du))
            ps.append(
                np.broadcast_to(ctrl.inv_cov, (len(X),) + ctrl.inv_cov.shape).reshape(
                    -1, ctrl.du, ctrl.du
                )
            )
            gs.append(np.broadcast_to(self.targets[m], (len(xs[-1]), 3)))
        cfg = SStepConfig(
            self.config.train_steps,
            self.config.batch,
            self.config.lr,
            self.config.seed + self.iteration,
        )
        loss, self.var = s_step(
            self.policy,
            np.concatenate(xs),
            np.concatenate(gs),
            np.concatenate(us),
            np.concatenate(ps),
            cfg,
        )
        return loss

    def iterate(self, samples) -> MDGPSIteration:
        """``samples``: per condition (X (S, T+1, dx), U (S, T, du)) of its current controller.
        Linearise the policy, C-step every condition against it, S-step. FitError /
        KLUpdateError of a condition propagate (its controller unchanged)."""
        if len(samples) != len(self.learners):
            raise ValueError(f"{len(samples)} sample sets for {len(self.learners)} conditions")
        if self.var is None:  # catch the policy up with the initial controllers
            self._train(samples)
        records = []
        for m, ((X, U), gps) in enumerate(zip(samples, self.learners)):
            gps.iteration = self.iteration
            ref = linearize_policy(self.policy, X, self.targets[m], self.var, self.controller(m))
            records.append(gps.update(0, X, U, reference=ref))
        loss = self._train(samples)
        assert self.var is not None  # set by _train
        self.iteration += 1
        return MDGPSIteration(records, loss, np.sqrt(self.var))
