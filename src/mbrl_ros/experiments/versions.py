"""The lecture's model-based RL versions, run offline on the simulated arm (pure core), so they can
be compared on the same seeds, the same data budget and the same held-out targets:

* ``v0.5``: run the base policy π0 for the whole budget, fit f(s, a) once, then plan an open-loop
  action sequence for each episode and execute it blindly;
* ``v1.0``: as v0.5 but with data aggregation: π0 only for the seed data, then repeat (plan
  open-loop, execute, append the episode to D, refit) until the budget is spent;
* ``v1.5``: v1.0 with MPC: replan at every control step and execute only the first action;
* ``v1.5+open``: MPC replanning every ``feedback_every`` steps, executing the plan's actions open
  loop between replans (what v1.5 does when a plan takes longer than a control period: the
  baseline of the feedback versions at their replanning rate);
* ``v1.5+ilqr``: MPC replanning every ``feedback_every`` steps, executing the plan's iLQR feedback
  K_t (x − x̂_t) between replans, as the graph's executor does, each joint's gains bounded by
  the tracking gains (the planner's ``feedback`` 'bounded': iLQR's raw K_t from a young 7-DOF
  model is ~10× the gains stable at the control period and drove the arm off the plan);
* ``v1.5+tracking``: the same with PD tracking of the plan's nominal states instead of K_t
  (gains in physical units: the planner's ``feedback`` 'tracking').

These three plan ``feedback_every`` times less often, with ``feedback_every`` times the iterations
per plan: the same planning budget as v1.5.

By default every version acts once per control period and a plan acts from the state it started
from (lockstep, as the lockstep graph runs). Two settings emulate the real-time graph
deterministically: ``executor_rate`` K, the executor's commands per control period (each from the
state measured then, as the graph's executor answers every joint state: feedback acts K times
per plan step, a plan without gains holds its action), and ``plan_latency`` D, the control periods
a plan takes: it is planned from the model's prediction D periods ahead under the previous plan
(``MPC.act(lead_ns=…)``, as the planner's ``compensate_latency``) and acts from then, the previous
plan acting meanwhile; an episode's first plan is made at rest, before it starts. The data keep
the control period: states on its grid, actions the mean torque over each period (what
``data.resample`` builds from a real stream).

Every command goes through the executor's ``SafetyLayer``. The settings are the mpc graph's: the
planner node's parameters (``mpc.build_mpc``), the fitter's (``FitterSettings``), the sim's and the
episode manager's (target box, tolerance, seeds): ``graph_setup`` reads them from the graph's
parameter file. ``mbrl-ros versions`` (``cli.experiments``) runs and tabulates them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import yaml

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.common.param_files import MPC_CONTROL_PERIOD, lockstep_mpc_config, node_parameters
from mbrl_ros.common.paths import share_path
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import FitterSettings
from mbrl_ros.dynamics.evaluation import holdout_split
from mbrl_ros.planning.mpc import MPC, PlannerSettings, build_mpc
from mbrl_ros.policy.rollout import run_episode
from mbrl_ros.robot.description import RobotDescription, load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.episodes import EpisodeResult, EpisodeSettings, TargetSampler, score

VERSIONS = ("v0.5", "v1.0", "v1.5", "v1.5+open", "v1.5+ilqr", "v1.5+tracking")
# the versions that replan every ``feedback_every`` steps: the planner's feedback setting
FEEDBACK = {"v1.5+open": "none", "v1.5+ilqr": "bounded", "v1.5+tracking": "tracking"}


@dataclass
class Setup:
    """Everything but the version: ``planner`` the planner's settings (π0's amplitude and hold
    included), ``fitter`` the fitter's (model kind, network options, validation fraction),
    ``episodes`` the episode manager's (episode_steps, the target box, success_tolerance,
    train_seed and eval_seed are used)."""

    robot: RobotDescription
    sim: SimConfig
    planner: PlannerSettings
    fitter: FitterSettings
    episodes: EpisodeSettings
    open_loop_iterations: int = 30  # iLQR iterations of a once-per-episode plan
    feedback_every: int = 5  # v1.5+open, +ilqr, +tracking: control steps between replans
    executor_rate: int = 1  # executor commands per control period
    plan_latency: int = 0  # control periods from a plan's state to its first step


@dataclass
class VersionResult:
    version: str
    data_seconds: float
    episodes: list[EpisodeResult] = field(default_factory=list)  # held-out evaluation
    fits: int = 0
    plans: int = 0
    plan_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return float(np.mean([r.success for r in self.episodes]))

    def within(self, distance: float) -> float:
        return float(np.mean([r.final_distance <= distance for r in self.episodes]))

    @property
    def mean_final(self) -> float:
        return float(np.mean([r.final_distance for r in self.episodes]))

    @property
    def ms_per_plan(self) -> float:
        return 1e3 * self.plan_seconds / max(self.plans, 1)


class _Arm:
    """The simulated arm behind the executor's safety layer; episodes return their data."""

    def __init__(self, setup: Setup):
        robot = setup.robot
        self.setup, self.n = setup, robot.n_joints
        self.k = executor_steps(setup)
        period = setup.sim.control_period / self.k  # the executor's
        self.sim = ArmSimulator(robot, replace(setup.sim, control_period=period))
        self.safety = SafetyLayer.for_robot(
            robot, robot.joint_names, period, SafetyConfig(max_state_age=0.0)
        )
        self.fk = ForwardKinematics(robot)
        self.episode = 0

    def run(
        self, act: Callable[[np.ndarray, int, int], np.ndarray], target: np.ndarray | None
    ) -> tuple[Dataset, np.ndarray]:
        """One episode from a reset: ``act(x, t, j)`` → torque (n,) at executor step j of
        control step t; returns its transitions on the control period's grid and the end-effector
        distances (T,) m to ``target`` after each control step (empty without target)."""
        k, steps = self.k, self.setup.episodes.episode_steps
        ep = run_episode(
            self.sim,
            lambda x, s: act(x, s // k, s % k),
            np.zeros(3) if target is None else target,
            steps * k,
            safety=self.safety,
        )
        states = ep.states[::k]
        data = Dataset.from_rollout(
            states,
            ep.actions.reshape(steps, k, self.n).mean(axis=1),
            self.episode,
            self.setup.robot.joint_names,
            self.setup.sim.control_period,
        )
        self.episode += 1
        dist = np.empty(0)
        if target is not None:
            ee = self.fk.ee_position(torch.as_tensor(states[1:, : self.n])).numpy()
            dist = np.linalg.norm(ee - target, axis=1)
        return data, dist


def executor_steps(setup: Setup) -> int:
    """``setup.executor_rate``, checked: the executor's period must be whole physics steps and
    whole nanoseconds. ValueError naming the rate otherwise."""
    k, period = setup.executor_rate, setup.sim.control_period
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"executor_rate must be a positive integer, got {k!r}")
    n = setup.sim.n_substeps
    if n % k or seconds_to_ns(period) % k:
        raise ValueError(
            f"executor_rate {k} does not divide the control period ({period} s = {n} physics "
            f"steps of {setup.sim.physics_timestep} s) into whole physics steps"
        )
    return k


def replan_interval(setup: Setup, version: str) -> int | None:
    """Control periods between ``version``'s plans: 1 for v1.5, ``feedback_every`` for the
    feedback versions, None for v0.5 and v1.0 (one open-loop plan per episode)."""
    if version in FEEDBACK:
        return setup.feedback_every
    return 1 if version == "v1.5" else None


def check(setup: Setup, version: str) -> None:
    """ValueError naming what does not fit: an unknown version, an executor rate that does not
    divide the control period, a feedback interval < 1, or a plan latency outside
    0..(the version's replanning interval): one plan in flight at a time."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    executor_steps(setup)
    if not isinstance(setup.feedback_every, int) or setup.feedback_every < 1:
        raise ValueError(f"feedback_every must be a positive integer, got {setup.feedback_every!r}")
    replan = replan_interval(setup, version)
    latency = setup.plan_latency
    if replan is not None and not (isinstance(latency, int) and 0 <= latency <= replan):
        raise ValueError(
            f"plan_latency {latency!r} control periods: {version} replans every {replan}, so it "
            f"must be 0..{replan} (one plan in flight at a time)"
        )


def _fit(setup: Setup, data: Dataset, seed: int):
    model = setup.fitter.new_model(
        ModelSignature.of(data), "cpu", setup.robot.name, setup.sim.gravity_compensation
    )
    train, val = holdout_split(data, setup.fitter.val_fraction, seed)
    model.fit(train, val)
    return model


def _controller(
    version: str, setup: Setup, result: VersionResult
) -> Callable[[MPC, np.ndarray], Callable[[np.ndarray, int, int], np.ndarray]]:
    """For ``version``: a factory (mpc, target) → act(x, t, j) for one episode (``_Arm.run``)."""

    def timed_act(mpc, x, stamp, target, lead_ns=0):
        tic = time.perf_counter()
        n = setup.robot.n_joints
        step = mpc.act(x[:n], x[n:], stamp, target, lead_ns=lead_ns)
        result.plan_seconds += time.perf_counter() - tic
        result.plans += 1
        return step.controller

    every = replan_interval(setup, version)  # None: plan once

    latency = setup.plan_latency

    def episode(mpc: MPC, target: np.ndarray):
        mpc.reset()
        plan: LinearGaussianController | None = None
        pending: list[tuple[int, LinearGaussianController]] = []  # (first step, plan) in flight
        dt_ns = mpc.dt_ns
        sub_ns = dt_ns // setup.executor_rate

        def act(x: np.ndarray, t: int, j: int) -> np.ndarray:
            nonlocal plan
            if j == 0:
                if plan is None:  # the episode's first plan: made at rest, before it starts
                    plan = timed_act(mpc, x, 0, target)
                elif every is not None and t % every == 0:
                    new = timed_act(mpc, x, t * dt_ns, target, latency * dt_ns)
                    pending.append((t + latency, new))
                while pending and pending[0][0] <= t:
                    plan = pending.pop(0)[1]
            assert plan is not None  # made at the episode's first step
            i = plan.index(t * dt_ns + j * sub_ns)
            i = plan.T - 1 if i is None else i
            return plan.act(x, i) if version in FEEDBACK else plan.u_hat[i]

        return act

    return episode


def graph_setup(robot: str, episode_length: float) -> Setup:
    """The set-up of the lockstep 'mpc' graph on ``robot`` (a name in ``MPC_CONTROL_PERIOD``):
    each component's settings from its section of the graph's parameter file over its defaults;
    episodes of ``episode_length`` s. ConfigError naming a bad value."""
    if robot not in MPC_CONTROL_PERIOD:
        raise ValueError(f"robot {robot!r}: the versions run on {sorted(MPC_CONTROL_PERIOD)}")
    config = yaml.safe_load(share_path("config", lockstep_mpc_config(robot)).read_text())
    period = MPC_CONTROL_PERIOD[robot]
    steps = int(round(episode_length / period))
    if steps < 1:
        raise ValueError(f"episode length {episode_length} s is shorter than a control period")
    return Setup(
        robot=load_robot(robot),
        sim=SimConfig.select(node_parameters(config, "arm_sim") | {"control_period": period}),
        planner=PlannerSettings.select(node_parameters(config, "mpc_planner")).replace(
            control_period=period
        ),
        fitter=FitterSettings.select(node_parameters(config, "dynamics_fitter")),
        episodes=EpisodeSettings.select(node_parameters(config, "episode_manager")).replace(
            episode_steps=steps
        ),
    )


def run_version(
    version: str,
    setup: Setup,
    budget_seconds: float,
    seed_seconds: float,
    eval_episodes: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> VersionResult:
    """Learn with ``version`` on ``budget_seconds`` of robot data (π0 for the first
    ``seed_seconds``, or all of it for v0.5), then evaluate on ``eval_episodes`` held-out
    targets. ValueError naming a setting that does not fit (``check``)."""
    check(setup, version)
    say = progress or (lambda line: None)
    torch.manual_seed(seed)
    wall = time.perf_counter()
    setup = replace(setup, sim=replace(setup.sim, seed=seed))
    arm = _Arm(setup)
    dt = setup.sim.control_period
    episode_s = setup.episodes.episode_steps * dt
    result = VersionResult(version, 0.0)
    every = replan_interval(setup, version)
    replan = every or 1
    horizon = setup.episodes.episode_steps if every is None else setup.planner.horizon
    iterations = setup.open_loop_iterations if every is None else setup.planner.iterations * replan
    mpc = build_mpc(
        setup.robot,
        range(setup.robot.n_joints),
        setup.planner.replace(
            horizon=horizon,
            iterations=iterations,
            replan_every=replan,
            feedback=FEEDBACK.get(version, "none"),
            random_seconds=0.0,
            seed=seed,
            device="cpu",
        ),
    )
    policy = RandomTorquePolicy(
        setup.robot.limits.effort,
        setup.planner.random_scale,
        setup.planner.random_hold_steps,
        seed + 1,
    )
    torque = np.zeros(setup.robot.n_joints)

    def random_act(x, t, j):  # π0: a new draw per control period, held by the executor
        nonlocal torque
        torque = policy.act() if j == 0 else torque
        return torque

    parts = []
    random_s = budget_seconds if version == "v0.5" else seed_seconds
    while result.data_seconds + episode_s <= random_s + 1e-9:
        parts.append(arm.run(random_act, None)[0])
        result.data_seconds += episode_s
    if not parts:
        raise ValueError(f"seed data of {random_s} s is shorter than one episode ({episode_s} s)")
    model = _fit(setup, Dataset.concat(parts), seed)
    result.fits = 1
    mpc.set_model(model)
    say(f"{version}: π0 data {result.data_seconds:.0f} s, model fitted")
    episode = _controller(version, setup, result)
    train_targets = TargetSampler(setup.robot, setup.episodes.box, setup.episodes.train_seed)
    while result.data_seconds + episode_s <= budget_seconds + 1e-9:
        target = train_targets.sample()
        data, dist = arm.run(episode(mpc, target), target)
        parts.append(data)
        result.data_seconds += episode_s
        model = _fit(setup, Dataset.concat(parts), seed)
        result.fits += 1
        mpc.set_model(model)
        say(
            f"{version}: data {result.data_seconds:5.1f} s | train episode final distance "
            f"{100 * dist[-1]:5.1f} cm | refit #{result.fits}"
        )
    eval_targets = TargetSampler(setup.robot, setup.episodes.box, setup.episodes.eval_seed)
    for k in range(eval_episodes):
        target = eval_targets.sample()
        _, dist = arm.run(episode(mpc, target), target)
        result.episodes.append(
            score(k, True, target, dist, setup.episodes.success_tolerance, result.data_seconds)
        )
    result.wall_seconds = time.perf_counter() - wall
    say(
        f"{version}: held-out success {100 * result.success_rate:.0f} % (tol "
        f"{100 * setup.episodes.success_tolerance:g} cm), mean final distance "
        f"{100 * result.mean_final:.1f} cm"
    )
    return result


def table(results: list[VersionResult], tolerance: float) -> str:
    """Markdown table of the versions' held-out results: one row per version, over its results
    (seeds) as mean ± standard deviation when there are several."""

    def stat(values, scale=1.0, digits=0) -> str:
        v = scale * np.asarray(values, dtype=float)
        mean = f"{v.mean():.{digits}f}"
        return mean if v.size == 1 else f"{mean} ± {v.std():.{digits}f}"

    lines = [
        f"| version | seeds | robot data (s) | success ≤ {100 * tolerance:g} cm (%) | "
        "≤ 5 cm (%) | mean final distance (cm) | plans | ms per plan | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for version in dict.fromkeys(r.version for r in results):
        rs = [r for r in results if r.version == version]
        lines.append(
            f"| {version} | {len(rs)} | {stat([r.data_seconds for r in rs])} | "
            f"{stat([r.success_rate for r in rs], 100)} | "
            f"{stat([r.within(0.05) for r in rs], 100)} | "
            f"{stat([r.mean_final for r in rs], 100, 1)} | {stat([r.plans for r in rs])} | "
            f"{stat([r.ms_per_plan for r in rs])} | {stat([r.wall_seconds for r in rs])} |"
        )
    return "\n".join(lines)
