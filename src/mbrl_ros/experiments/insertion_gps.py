"""Guided policy search's local-model loop (``mbrl_ros.trajopt.gps``) on peg insertion from
several conditions, the conditions being hole positions.

Each condition has its own scene (``InsertionSimulator`` with the hole at its position), cost
(``InsertionCost`` aimed at its hole) and local-model learner (a one-condition ``trajopt.gps.GPS``:
the local dynamics, GMM prior, trust region and step adaptation of a condition never depend on
the other conditions' samples, as in GPS). ``run`` interleaves them iteration by iteration and
reports the records as one loop over all conditions (condition index, samples used by then).
Success of a sample: its peg tip ends within ``full_depth_tolerance`` m of the hole's floor.
``run_mdgps``: the same loop with a network policy trained from the controllers (mirror-descent
GPS, ``trajopt.mdgps``; the policy's goal input is the hole's top centre (3,) m);
``policy_depths``: the network alone on any hole positions (held-out generalisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from mbrl_ros.control.controller import exploration_noise
from mbrl_ros.policy.network import GoalPolicy
from mbrl_ros.policy.rollout import run_episode
from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.simulator.simulation import SimConfig
from mbrl_ros.tasks.insertion import InsertionCost, peg_pose
from mbrl_ros.tasks.insertion_scene import InsertionSimulator
from mbrl_ros.trajopt.gps import (
    GPS,
    GPSConfig,
    IterationRecord,
    initial_controllers,
    rollout,
    run_offline,
)
from mbrl_ros.trajopt.mdgps import MDGPS, MDGPSIteration, SStepConfig


@dataclass(frozen=True)
class InsertionSetup:
    """hole_positions (M, 3) m: the conditions; start: peg tip ``start_height`` m above the
    floor of the hole at ``start_hole`` (3,) m (default: the first condition's), the same arm
    pose for every condition; T steps of the simulator's control period; the initial controller
    holds the start pose (gains and noise as fractions of the effort limits, ``trajopt.gps.
    initial_controllers``); cost: ``InsertionCost``'s keyword arguments; start_guess (n,) rad:
    where the inverse kinematics of the start pose begins (the default suits arm7: elbow bent,
    wrist pointing the peg down on the −x side)."""

    hole_positions: tuple
    start_height: float = 0.10
    start_hole: tuple | None = None
    T: int = 100
    kp_fraction: float = 0.2
    kd_fraction: float = 0.02
    std_fraction: float = 0.05
    full_depth_tolerance: float = 0.005
    cost: dict | None = None
    start_guess: tuple = (0.0, -0.6, 0.0, -1.7, 0.0, -0.8, 0.0)


class InsertionConditions:
    """The per-condition scenes, costs and learners of ``setup`` for ``robot`` (e.g. arm7)."""

    def __init__(
        self,
        robot: RobotDescription,
        setup: InsertionSetup,
        config: GPSConfig,
        sim_config: SimConfig = SimConfig(scene="insertion"),
    ):
        holes = np.asarray(setup.hole_positions, dtype=np.float64)
        if holes.ndim != 2 or holes.shape[1] != 3 or len(holes) < 1:
            raise ValueError(f"hole_positions must be (M ≥ 1, 3) m, got shape {holes.shape}")
        self.setup, self.robot, self.sim_config = setup, robot, sim_config
        self.sims = [InsertionSimulator(robot, p, sim_config) for p in holes]
        self.costs = [
            InsertionCost(robot, sim.peg_points, sim.hole, **(setup.cost or {}))
            for sim in self.sims
        ]
        start_sim = (
            self.sims[0]
            if setup.start_hole is None
            else InsertionSimulator(robot, setup.start_hole, sim_config)
        )
        self.start = peg_pose(
            robot,
            start_sim.peg_points,
            start_sim.hole,
            setup.start_guess,
            height=setup.start_height,
        )
        self.depths: list[list[np.ndarray]] = [[] for _ in self.sims]  # per update (S,) m
        self.mean_depths: list[list[float]] = [[] for _ in self.sims]  # per iteration, m
        self.learners = []
        for m, (sim, cost) in enumerate(zip(self.sims, self.costs)):
            (ctrl,) = initial_controllers(
                sim, [self.start], setup.T, setup.kp_fraction, setup.kd_fraction, setup.std_fraction
            )
            self.learners.append(
                GPS(cost, [ctrl], replace(config, seed=config.seed + m), self._metric(m))
            )

    def _metric(self, m: int) -> Callable[[np.ndarray], np.ndarray]:
        def final_depth(X):
            depth = self.costs[m].insertion_depth(X[:, -1])
            self.depths[m].append(depth)
            return depth

        return final_depth

    def full_depth(self, m: int) -> float:
        """The depth (m) that counts as fully inserted in condition m."""
        return self.costs[m].hole.depth - self.setup.full_depth_tolerance

    def run(
        self,
        iterations: int,
        samples: int,
        seed: int = 0,
        noise_smoothing: float = 0.0,
        log: Callable[[IterationRecord], None] | None = None,
    ) -> list[IterationRecord]:
        """``iterations`` × (``samples`` rollouts and one update per condition); the records of
        all conditions, with ``samples_used`` counted over all of them. Before each update the
        controller also runs once without noise (not a training sample): its final depth is
        appended to ``mean_depths``."""
        records = []
        for it in range(iterations):
            for m, (gps, sim) in enumerate(zip(self.learners, self.sims)):
                gps.iteration = it
                ctrl = gps.controller(0)
                X, _ = rollout(sim, ctrl, self.start, np.zeros((ctrl.T, ctrl.du)))
                self.mean_depths[m].append(float(self.costs[m].insertion_depth(X[-1])))
                (rec,) = run_offline(
                    gps, sim, [self.start], 1, samples, noise_smoothing, seed=seed + 1000 * m + it
                )
                rec = replace(
                    rec,
                    iteration=it,
                    condition=m,
                    samples_used=sum(g.samples_used for g in self.learners),
                )
                records.append(rec)
                if log is not None:
                    log(rec)
        return records

    def success(self) -> list[list[float]]:
        """Fraction of samples inserted to full depth, per iteration (rows) and condition."""
        return [
            [float(np.mean(d[it] >= self.full_depth(m))) for m, d in enumerate(self.depths)]
            for it in range(min(map(len, self.depths)))
        ]

    def mean_success(self) -> list[list[bool]]:
        """Whether the noise-free controller inserted to full depth, per iteration and
        condition."""
        return [
            [d[it] >= self.full_depth(m) for m, d in enumerate(self.mean_depths)]
            for it in range(min(map(len, self.depths)))
        ]

    def targets(self) -> np.ndarray:
        """The policy's goal input per condition: the hole's top centre (M, 3) m."""
        return np.stack([sim.hole.top for sim in self.sims])

    def run_mdgps(
        self,
        policy: GoalPolicy,
        iterations: int,
        samples: int,
        s_step: SStepConfig = SStepConfig(),
        seed: int = 0,
        noise_smoothing: float = 0.0,
        log: Callable[[MDGPSIteration], None] | None = None,
    ) -> list[MDGPSIteration]:
        """Mirror-descent GPS: per iteration ``samples`` rollouts of every condition's controller,
        then ``MDGPS.iterate`` (C-step against the policy's linearisation, S-step training
        ``policy`` in place). As ``run``, each controller also runs once without noise per
        iteration (``mean_depths``), and so does the policy alone after the S-step
        (``policy_depths_train``, per iteration and condition, m). The policy's input
        normalisation is set from the first samples and the training holes."""
        mdgps = MDGPS(self.learners, self.targets(), policy, s_step)
        self.policy_depths_train: list[list[float]] = []
        out = []
        for it in range(iterations):
            batch = []
            for m, (gps, sim) in enumerate(zip(self.learners, self.sims)):
                ctrl = gps.controller(0)
                X, _ = rollout(sim, ctrl, self.start, np.zeros((ctrl.T, ctrl.du)))
                self.mean_depths[m].append(float(self.costs[m].insertion_depth(X[-1])))
                rng = np.random.default_rng(seed + 1000 * m + it)
                runs = [
                    rollout(
                        sim,
                        ctrl,
                        self.start,
                        exploration_noise(ctrl.T, ctrl.du, rng, noise_smoothing),
                    )
                    for _ in range(samples)
                ]
                Xs, Us = np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs])
                batch.append((Xs, Us))
            if it == 0:
                policy.set_normalisation(
                    np.concatenate([X[:, :-1].reshape(-1, X.shape[2]) for X, _ in batch]),
                    self.targets(),
                )
            result = mdgps.iterate(batch)
            used = sum(g.samples_used for g in self.learners)
            result.records = [
                replace(r, iteration=it, condition=m, samples_used=used)
                for m, r in enumerate(result.records)
            ]
            self.policy_depths_train.append(
                [float(d) for d in self.policy_depths(policy, self.targets(), self.sims)]
            )
            out.append(result)
            if log is not None:
                log(result)
        return out

    def policy_depths(self, policy: GoalPolicy, holes, sims=None) -> np.ndarray:
        """Final tip depth (len(holes),) m of the network policy alone (noise-free, from the
        start pose, T steps) with the hole at each position (3,) m (``sims``: the scenes, if
        already built)."""
        frozen, n = policy.frozen(), self.robot.n_joints
        depths = []
        for i, hole in enumerate(np.asarray(holes, dtype=np.float64)):
            sim = (
                sims[i]
                if sims is not None
                else InsertionSimulator(self.robot, hole, self.sim_config)
            )
            target = sim.hole.top
            cost = InsertionCost(self.robot, sim.peg_points, sim.hole, **(self.setup.cost or {}))
            episode = run_episode(
                sim,
                lambda x, t: frozen.act(x[:n], x[n : 2 * n], target),
                target,
                self.setup.T,
                self.start,
            )
            depths.append(float(cost.insertion_depth(episode.states[-1])))
        return np.array(depths)
