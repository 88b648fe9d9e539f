"""Guided policy search's inner loop: samples → local dynamics → KL-constrained update.

Per iteration and initial condition: run the current linear-Gaussian controller M times (the
executor over ROS, or ``rollout`` on an ``ArmSimulator`` offline: the same computation), fit
p(x_{t+1} | x_t, u_t) (linear regression, or Bayesian with a GMM prior fit on the condition's
recent (x, u, x')), expand the task cost around the samples, adapt the trust region ε from
predicted against actual improvement, and solve the KL-constrained update for the next controller.
Samples: X (M, T+1, dx) states x = [q, q̇] (rad, rad/s), U (M, T, du) torques (N·m).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.common.settings import ConfigError, Settings, setting
from mbrl_ros.control.controller import LinearGaussianController, exploration_noise
from mbrl_ros.control.scripted import hold_controller
from mbrl_ros.dynamics.gmm import GMM, GMMConfig
from mbrl_ros.robot.gravity import GravityModel
from mbrl_ros.simulator.simulation import ArmSimulator, simulate
from mbrl_ros.trajopt.kl_update import KLSettings, adapt_step, kl_update
from mbrl_ros.trajopt.local_dynamics import (
    REGULARIZATION_MODES,
    LocalDynamics,
    check_samples,
    fit_bayesian,
    fit_linear_regression,
    initial_state_prior,
    transition_points,
)
from mbrl_ros.trajopt.trajectory import (
    QuadraticCost,
    absolute_gains,
    expand_cost,
    expected_cost,
    forward_pass,
)


@dataclass(frozen=True)
class GPSConfig(Settings):
    """What a ``GPS`` learner runs with: trust region and its step multiplier, local dynamics
    (prior, regression), η search. The GPS trainer node declares these as its parameters (with
    its own); offline code builds them directly. ``kl``: the η search as ``KLSettings``."""

    kl_step: float = setting(
        0.3, "trust region per time step (nats); ε = kl_step · step_mult · T", (1e-6, 1e6)
    )
    min_step_mult: float = setting(0.01, "smallest step multiplier of ε", (1e-6, 1.0))
    max_step_mult: float = setting(3.0, "largest step multiplier of ε", (1.0, 1e6))
    prior: str = setting(
        "gmm",
        "local dynamics: Bayesian with a GMM prior, or ridge regression",
        choices=("gmm", "none"),
    )
    prior_samples: int = setting(20, "recent samples the GMM prior is fit on", (1, 100_000))
    prior_clusters: int = setting(20, "largest number of GMM clusters", (2, 1000))
    points_per_cluster: int = setting(
        40, "GMM prior: (x, u, x') points per cluster (fewer points, fewer clusters)", (1, 10**6)
    )
    prior_strength: float = setting(
        1.0,
        "scale of the prior's pseudo-counts (of the dynamics and of the initial state's prior "
        "from the recent samples' first states)",
        (0.0, 1e6),
    )
    prior_em_iterations: int = setting(30, "EM iterations of the GMM prior's fit", (1, 100_000))
    regularization: float = setting(
        1e-6, "ridge on the (x, u) covariance of the regression", (0.0, 1e6)
    )
    regularization_mode: str = setting(
        "diagonal",
        "where the ridge goes: diagonal, or block (all entries of the (x, u) block, as cbfinn/gps)",
        choices=REGULARIZATION_MODES,
    )
    eta0: float = setting(1.0, "first η of every condition", (1e-30, 1e30))
    eta_min: float = setting(1e-8, "lower bound of the dual variable η (< eta_max)", (1e-30, 1e30))
    eta_max: float = setting(1e16, "upper bound of the dual variable η", (1e-30, 1e30))
    eta_step: float = setting(10.0, "η search: first geometric step factor", (1.001, 1e6))
    kl_tolerance: float = setting(0.1, "η search: relative tolerance on KL − ε", (1e-6, 0.999))
    eta_iterations: int = setting(50, "η search: most iterations", (1, 100_000))
    seed: int = setting(
        0, "seed of the GMM fits (a trainer's condition m: seed + m)", (0, 2**31 - 1)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.kl  # noqa: B018 -- KLSettings checks eta_min < eta_max
        except ValueError as exc:
            raise ConfigError(f"GPS settings: {exc}") from None

    @property
    def kl(self) -> KLSettings:
        """The η search's settings."""
        return KLSettings(
            self.eta_min, self.eta_max, self.eta_step, self.kl_tolerance, self.eta_iterations
        )


@dataclass(frozen=True)
class IterationRecord:
    """One condition's update: mean sample cost, mean final metric (e.g. distance in m), KL to
    the previous controller (nats), ε, η, step multiplier, predicted expected cost, samples
    used so far (all conditions), and whether the η search met ε (False: it ran out and the
    update took its best controller inside the trust region, with a KLSearchWarning)."""

    iteration: int
    condition: int
    cost: float
    final_metric: float
    kl: float
    epsilon: float
    eta: float
    step_mult: float
    predicted_cost: float
    samples_used: int
    kl_converged: bool = True


class GMMPrior:
    """The N-IW prior source of ``fit_bayesian``: a GMM (``mbrl_ros.dynamics.gmm``) fit on the
    (x, u, x') points of the most recent samples, as GPS's DynamicsPriorGMM."""

    def __init__(self, points: np.ndarray, config: GPSConfig):
        n_clusters = max(2, min(config.prior_clusters, len(points) // config.points_per_cluster))
        self.gmm = GMM(
            GMMConfig(
                n_components=n_clusters, max_iter=config.prior_em_iterations, seed=config.seed
            )
        )
        self.gmm.fit(points)

    def niw_prior(self, points):
        mu0, Phi, m, n0 = self.gmm.niw_prior(points)
        return mu0.numpy(), Phi.numpy(), m, n0


@dataclass
class _Condition:
    controller: LinearGaussianController
    eta: float
    step_mult: float = 1.0
    samples: list = field(default_factory=list)  # recent (X, U) for the prior
    previous: tuple | None = None  # (dynamics, cost expansion, reference)


class GPS:
    """The loop's state per initial condition. ``cost``: a per-step-additive torch task cost
    (``mbrl_ros.tasks``); ``metric``: (M, T+1, dx) → (M,) reported per sample (e.g. the final
    end-effector distance); ``controllers``: the initial Gaussian controller of each condition;
    ``check``: raises ValueError for a new controller that must not be taken (e.g. one the
    executor would refuse: ``plausibility.ControllerBounds.check``); the update then fails."""

    def __init__(
        self,
        cost,
        controllers: list[LinearGaussianController],
        config: GPSConfig,
        metric: Callable[[np.ndarray], np.ndarray] | None = None,
        check: Callable[[LinearGaussianController], None] | None = None,
    ):
        if not controllers:
            raise ValueError("GPS needs at least one initial condition")
        for i, c in enumerate(controllers):
            if c.inv_cov is None:
                raise ValueError(f"initial controller {i} needs a positive-definite Σ")
        self.cost, self.config, self.metric, self.check = cost, config, metric, check
        self.conditions = [_Condition(c, config.eta0) for c in controllers]
        self.samples_used = 0
        self.iteration = 0

    def controller(self, condition: int) -> LinearGaussianController:
        return self.conditions[condition].controller

    def fit_dynamics(self, condition: int, X, U) -> LocalDynamics:
        """Local dynamics from this condition's samples (the prior uses its recent ones too)."""
        cfg, cond = self.config, self.conditions[condition]
        mode = cfg.regularization_mode
        if cfg.prior == "none":
            return fit_linear_regression(X, U, cfg.regularization, regularization_mode=mode)
        T, dx = U.shape[1], X.shape[2]
        cond.samples.append(transition_points(X, U).reshape(-1, 2 * dx + U.shape[2]))
        while sum(map(len, cond.samples[1:])) >= cfg.prior_samples * T:
            cond.samples.pop(0)  # keep the newest prior_samples samples (whole batches)
        points = np.concatenate(cond.samples)
        x0 = points.reshape(-1, T, points.shape[1])[:, 0, :dx]
        return fit_bayesian(
            X,
            U,
            GMMPrior(points, cfg),
            cfg.prior_strength,
            cfg.regularization,
            regularization_mode=mode,
            x0_prior=initial_state_prior(x0, cfg.prior_strength),
        )

    def update(
        self, condition: int, X, U, reference: LinearGaussianController | None = None
    ) -> IterationRecord:
        """Samples of the current controller of ``condition`` → its next controller (kept unless
        the update fails: FitError / KLUpdateError / the ``check``'s ValueError propagate and the
        controller is unchanged; the GMM prior keeps the samples).
        ``reference``: what the KL constraint and the step adaptation are taken against (mirror-
        descent GPS: the policy's linearisation, ``trajopt.mdgps``); None: the current
        controller (the local-model loop alone)."""
        X, U = check_samples(X, U)
        cfg, cond = self.config, self.conditions[condition]
        ctrl = cond.controller
        if U.shape[1:] != (ctrl.T, ctrl.du) or X.shape[2] != ctrl.dx:
            raise ValueError(
                f"samples {X.shape}/{U.shape} do not fit the controller "
                f"(T={ctrl.T}, dx={ctrl.dx}, du={ctrl.du})"
            )
        ref = ctrl if reference is None else reference
        if (ref.T, ref.dx, ref.du) != (ctrl.T, ctrl.dx, ctrl.du):
            raise ValueError(
                f"reference (T, dx, du) = {(ref.T, ref.dx, ref.du)} does not match "
                f"the controller's {(ctrl.T, ctrl.dx, ctrl.du)}"
            )
        dyn = self.fit_dynamics(condition, X, U)
        expansion = expand_cost(self.cost, X, U)
        step_mult = cond.step_mult
        if cond.previous is not None:
            prev_dyn, prev_cost, prev_ref = cond.previous
            step_mult = adapt_step(
                step_mult,
                _expected(prev_cost, prev_dyn, prev_ref),
                _expected(prev_cost, prev_dyn, ref),
                _expected(expansion, dyn, ref),
                (cfg.min_step_mult, cfg.max_step_mult),
            )
        epsilon = cfg.kl_step * step_mult * ctrl.T
        result = kl_update(expansion, dyn, ref, epsilon, cond.eta, cfg.kl)
        if self.check is not None:
            self.check(result.controller)
        cond.previous = (dyn, expansion, ref)
        cond.controller, cond.eta, cond.step_mult = result.controller, result.eta, step_mult
        self.samples_used += len(X)
        with torch.no_grad():
            costs = self.cost(torch.as_tensor(X), torch.as_tensor(U)).numpy()
        final = float(np.mean(self.metric(X))) if self.metric is not None else math.nan
        return IterationRecord(
            self.iteration,
            condition,
            float(np.mean(costs)),
            final,
            result.kl,
            epsilon,
            result.eta,
            step_mult,
            result.expected_cost,
            self.samples_used,
            result.converged,
        )


def _expected(cost: QuadraticCost, dyn: LocalDynamics, ctrl: LinearGaussianController) -> float:
    """Expected cost of ``ctrl`` on ``dyn`` under the expansion ``cost``."""
    return expected_cost(cost, forward_pass(dyn, *absolute_gains(ctrl)))


def initial_controller(
    q0, u_hold, T: int, dt_ns: int, kp, kd, std, joint_names=()
) -> LinearGaussianController:
    """GPS's initial controller (init_pd): ``scripted.hold_controller`` of q0 (n,) rad with the
    feed-forward u_hold (n,) N·m (e.g. gravity compensation) and exploration Σ = diag(std²):
    u ~ N(kp (q0 − q) − kd q̇ + u_hold, diag(std²)); kp, kd, std scalars or (n,)."""
    hold = hold_controller(joint_names, q0, kp, kd, np.inf, T=T, dt_ns=dt_ns, u_hold=u_hold)
    return with_exploration(hold, std)


def with_exploration(ctrl: LinearGaussianController, std) -> LinearGaussianController:
    """GPS's initial controller from a deterministic plan (e.g. ``mbrl_ros.planning.ILQR`` on a
    known or learned model): the same x̂, û, K, k with Σ_t = diag(std²), std scalar or (du,) N·m."""
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), (ctrl.du,))
    if not np.all(std > 0) or not np.all(np.isfinite(std)):
        raise ValueError(f"std must be finite and > 0 for a Gaussian controller, got {std}")
    return LinearGaussianController.gaussian(
        ctrl.x_hat,
        ctrl.u_hat,
        ctrl.K,
        ctrl.k,
        np.tile(np.diag(std**2), (ctrl.T, 1, 1)),
        dt_ns=ctrl.dt_ns,
        start_ns=ctrl.start_ns,
        joint_names=ctrl.joint_names,
        state_layout=ctrl.state_layout,
    )


def initial_controllers(
    sim: ArmSimulator,
    initial_positions,
    T: int,
    kp_fraction: float = 0.2,
    kd_fraction: float = 0.02,
    std_fraction: float = 0.1,
) -> list[LinearGaussianController]:
    """``initial_controller`` per initial position (n,) rad, for T steps of the simulator's control
    period, with the known model's gravity torque as u_hold and gains/noise as fractions of the
    effort limits (kp in N·m/rad, kd in N·m·s/rad, std in N·m)."""
    effort = sim.robot.limits.effort
    dt_ns = seconds_to_ns(sim.config.control_period)
    gravity = GravityModel(sim.robot)
    return [
        initial_controller(
            q,
            gravity.torque(q),
            T,
            dt_ns,
            kp_fraction * effort,
            kd_fraction * effort,
            std_fraction * effort,
            sim.robot.joint_names,
        )
        for q in initial_positions
    ]


def rollout(
    sim: ArmSimulator, ctrl: LinearGaussianController, q0, z
) -> tuple[np.ndarray, np.ndarray]:
    """One sample offline, as the executor computes it: reset to q0 (rad) at rest, then
    u_t = ctrl.sample(x_t, t, z_t) applied for one control period each (the simulator clamps to
    the effort limits; U holds the applied torques). z (T, du) standard normal. Returns
    X (T+1, 2n), U (T, n)."""
    q0 = np.asarray(q0, dtype=np.float64)
    lim = sim.robot.limits
    if q0.shape != lim.lower.shape or np.any(q0 < lim.lower) or np.any(q0 > lim.upper):
        raise ValueError(
            f"initial position {q0.tolist()} is not {lim.lower.size} values within the joint limits"
        )
    return simulate(sim, lambda x, t: ctrl.sample(x, t, z=z[t]), ctrl.T, start=q0)


def run_offline(
    gps: GPS,
    sim: ArmSimulator,
    initial_positions,
    iterations: int,
    samples: int,
    noise_smoothing: float = 0.0,
    seed: int = 0,
    log: Callable[[IterationRecord], None] | None = None,
) -> list[IterationRecord]:
    """The GPS loop on an ``ArmSimulator``: per iteration and condition, ``samples`` rollouts of
    the current controller (seeded noise), then ``gps.update``. Returns every record."""
    rng = np.random.default_rng(seed)
    records = []
    for it in range(iterations):
        gps.iteration = it
        for m, q0 in enumerate(initial_positions):
            ctrl = gps.controller(m)
            runs = [
                rollout(sim, ctrl, q0, exploration_noise(ctrl.T, ctrl.du, rng, noise_smoothing))
                for _ in range(samples)
            ]
            rec = gps.update(m, np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs]))
            records.append(rec)
            if log is not None:
                log(rec)
    return records


def learning_curve(records: list[IterationRecord], higher_is_better: bool = False) -> list[dict]:
    """One row per iteration: samples used by then, mean cost and mean / worst final metric over
    the conditions (worst: the largest, or the smallest if ``higher_is_better``, e.g. a depth),
    and the per-condition final metrics, mean KL, ε, η and step multiplier."""
    rows = []
    for it in sorted({r.iteration for r in records}):
        rs = [r for r in records if r.iteration == it]
        finals = [r.final_metric for r in rs]
        rows.append(
            {
                "iteration": it + 1,
                "samples": rs[-1].samples_used,
                "cost": float(np.mean([r.cost for r in rs])),
                "final": float(np.mean(finals)),
                "worst": float(np.min(finals) if higher_is_better else np.max(finals)),
                "per_condition": finals,
                "kl": float(np.mean([r.kl for r in rs])),
                "epsilon": float(np.mean([r.epsilon for r in rs])),
                "eta": float(np.mean([r.eta for r in rs])),
                "step_mult": float(np.mean([r.step_mult for r in rs])),
            }
        )
    return rows


def format_curve(rows: list[dict], metric_scale: float = 100.0, unit: str = "cm") -> str:
    """The learning curve as a text table (final metric × metric_scale, in ``unit``)."""
    n = max((len(r["per_condition"]) for r in rows), default=0)
    head = (
        f"{'iter':>4} {'samples':>7} {'mean cost':>10} {'mean ' + unit:>8} "
        f"{'worst ' + unit:>8} "
        + " ".join(f"{f'c{m}':>6}" for m in range(n))
        + f" {'KL':>8} {'ε':>8} {'η':>9} {'mult':>5}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['iteration']:>4} {r['samples']:>7} {r['cost']:>10.1f} "
            f"{metric_scale * r['final']:>8.2f} {metric_scale * r['worst']:>8.2f} "
            + " ".join(f"{metric_scale * d:>6.2f}" for d in r["per_condition"])
            + f" {r['kl']:>8.1f} {r['epsilon']:>8.1f} {r['eta']:>9.3g} "
            f"{r['step_mult']:>5.2f}"
        )
    return "\n".join(lines)


def plot_curves(
    curves: dict[str, list[dict]],
    path,
    title: str,
    goal: float | None = None,
    metric_scale: float = 100.0,
    unit: str = "cm",
    metric: str = "final end-effector distance",
) -> None:
    """PNG at ``path``: mean cost and final ``metric`` (mean and, for several conditions, worst
    condition) against samples, one line per labelled learning curve; ``goal`` (in ``unit``) as
    a dotted line. The metric's axis is logarithmic unless a value is ≤ 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_c, ax_d) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in curves.items():
        n = [r["samples"] for r in rows]
        ax_c.plot(n, [r["cost"] for r in rows], "o-", label=label)
        (line,) = ax_d.plot(
            n, [metric_scale * r["final"] for r in rows], "o-", label=f"{label}: mean"
        )
        if any(len(r["per_condition"]) > 1 for r in rows):  # one condition: worst = mean
            ax_d.plot(
                n,
                [metric_scale * r["worst"] for r in rows],
                "--",
                color=line.get_color(),
                label=f"{label}: worst condition",
            )
    if goal is not None:
        ax_d.axhline(goal, color="k", lw=0.8, ls=":")
    if all(min(r["final"], r["worst"]) > 0 for rows in curves.values() for r in rows):
        ax_d.set_yscale("log")
    ax_c.set(xlabel="samples (all conditions)", ylabel="mean sample cost", title="cost")
    ax_d.set(xlabel="samples (all conditions)", ylabel=f"{metric} ({unit})", title=metric)
    ax_c.legend(fontsize=8)
    ax_d.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
