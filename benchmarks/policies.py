"""Network policies on the 2-link sim arm (offline, pure core): the v2.0 loop (BPTT through a
learned ensemble) and a distilled MPC policy (MPC through a learned ensemble, DAgger), scored on
held-out targets.

The task is the 'mpc' graph's on arm2 (config/mpc_arm2.yaml): control period 0.05 s, episodes of
3 s from the home pose ± 0.3 rad, reachable targets in the same box, the same held-out targets
(seed 1000), success within 2 cm (and 5 cm) at the episode's end. Commands go through the
executor's safety layer (default settings, gains capped), as on the robot.

* bptt: π0 episodes → [fit the ensemble on D → BPTT through it → run the policy, append D] × N.
* distill: π0 episodes → [fit → MPC (iLQR through the ensemble) episodes, append] × M (the
  MPC's own learning, as in the 'mpc' graph) → distil the MPC through the final model into a
  policy with DAgger, labels planned from scratch at every state (every DAgger episode is robot
  time too).

Prints, per method, the learning curve (held-out success after each iteration against the seconds
of robot data used so far), then a table: robot data until ≥ 90 % of the held-out targets are
reached within 2 cm, robot data used in all, final success (2 cm / 5 cm), mean final distance,
training compute (s of wall time, torch on 1 thread), and compute per control step (µs: the
policy alone; policy + safety layer as the policy runner calls them; the MPC's step for
comparison).

    python benchmarks/policies.py [--method bptt|distill|both] [--seed 0] [--out runs/policies]

The trained policies are written to --out; run one on the simulated arm over ROS with
``mbrl-ros launch policy policy_file:=runs/policies/bptt_policy.safetensors``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mbrl_ros.common.artifacts import write_file
from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import FitterSettings
from mbrl_ros.dynamics.evaluation import holdout_split
from mbrl_ros.planning import ILQR
from mbrl_ros.planning.mpc import MPC
from mbrl_ros.policy.bptt import BPTTConfig, V2Config, run_v2
from mbrl_ros.policy.distill import DistillConfig, MPCExpert, distill
from mbrl_ros.policy.network import GoalPolicy, PolicySignature
from mbrl_ros.policy.rollout import episodes_dataset, final_distance, run_episode
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.episodes import TargetSampler
from mbrl_ros.tasks.reach import ReachCost

DT = 0.05
STEPS = 60  # 3 s episodes
BOX = (np.array([-0.27, -0.27, 0.0]), np.array([0.27, 0.27, 0.15]))
FITTER = FitterSettings(
    members=3, hidden=64, layers=2, max_epochs=200, patience=15, max_fit_seconds=30.0
)


def setup(seed: int):
    robot = load_robot("arm2")
    sim = ArmSimulator(
        robot, SimConfig(control_period=DT, initial_position_noise=0.3, hold_damping=0.1, seed=seed)
    )
    safety = SafetyLayer.for_robot(robot, robot.joint_names, DT, SafetyConfig())
    sig = PolicySignature.for_joints(robot.name, robot.joint_names, DT)
    model = FITTER.replace(seed=seed).new_model(
        ModelSignature(sig.joint_names, sig.state_names, DT), "cpu"
    )
    return robot, sim, safety, sig, model


def evaluate(robot, safety, act_for, episodes: int) -> np.ndarray:
    """Final distances (m) on the held-out targets (seed 1000), from the same seeded resets for
    every policy evaluated."""
    fk = ForwardKinematics(robot)
    held_out = TargetSampler(robot, BOX, 1000)
    sim = ArmSimulator(
        robot, SimConfig(control_period=DT, initial_position_noise=0.3, hold_damping=0.1, seed=1000)
    )
    out = []
    for _ in range(episodes):
        target = held_out.sample()
        out.append(
            final_distance(fk, run_episode(sim, act_for(target), target, STEPS, safety=safety))
        )
    return np.array(out)


def per_step_us(frozen, safety, x, target, repeats: int = 2000) -> tuple[float, float]:
    """(policy act, act + safety filter) in µs per control step, best of 5 runs."""
    n = len(x) // 2
    q, qd = x[:n], x[n:]

    def policy_only():
        for _ in range(repeats):
            frozen.act(q, qd, target)

    def with_safety():
        for _ in range(repeats):
            safety.filter(q, qd, frozen.act(q, qd, target))

    best = []
    for fn in (policy_only, with_safety):
        times = []
        for _ in range(5):
            tic = time.perf_counter()
            fn()
            times.append(time.perf_counter() - tic)
        best.append(min(times) / repeats * 1e6)
    return best[0], best[1]


def frozen_act(frozen, n):
    return lambda g: lambda x, t: frozen.act(x[:n], x[n:], g)


def curve(robot, safety, name, points, episodes) -> tuple[float, np.ndarray]:
    """Held-out score of each (robot seconds, frozen policy); prints the learning curve; returns
    (robot seconds at the first ≥ 90 % within 2 cm, or nan; the last policy's distances)."""
    print(
        f"\n{name}: held-out success against robot data\n"
        "| robot data (s) | ≤ 2 cm | ≤ 5 cm | mean final (cm) |\n|---:|---:|---:|---:|"
    )
    first = float("nan")
    for seconds, frozen in points:
        d = evaluate(robot, safety, frozen_act(frozen, robot.n_joints), episodes)
        print(
            f"| {seconds:.0f} | {100 * np.mean(d < 0.02):.0f} % | {100 * np.mean(d < 0.05):.0f} "
            f"% | {100 * np.mean(d):.1f} |",
            flush=True,
        )
        if np.isnan(first) and np.mean(d < 0.02) >= 0.9:
            first = seconds
    return first, d


def report(name, first, seconds_data, distances, train_s, us, extra=""):
    print(
        f"| {name} | {first:.0f} | {seconds_data:.0f} | "
        f"{100 * np.mean(distances < 0.02):.0f} % | "
        f"{100 * np.mean(distances < 0.05):.0f} % | {100 * np.mean(distances):.1f} | "
        f"{train_s:.0f} | {us[0]:.1f} / {us[1]:.1f} |{extra}",
        flush=True,
    )


def run_bptt(args):
    robot, sim, safety, sig, model = setup(args.seed)
    policy = GoalPolicy(sig, robot.limits.effort, (64, 64), seed=args.seed)
    cost = ReachCost(robot)
    config = V2Config(
        iterations=args.iterations,
        episodes=4,
        episode_steps=STEPS,
        random_episodes=4,
        bptt=BPTTConfig(
            iterations=args.bptt_iterations,
            batch=64,
            horizon_start=5,
            horizon_end=args.horizon,
            propagation=args.propagation,
            seed=args.seed,
        ),
        seed=args.seed,
    )
    tic = time.perf_counter()
    data, records = run_v2(
        policy, model, cost, sim, TargetSampler(robot, BOX, 1), config, safety, progress=print
    )
    train_s = time.perf_counter() - tic
    first, d = curve(
        robot,
        safety,
        "BPTT v2.0",
        [(r.robot_seconds, r.policy) for r in records],
        args.eval_episodes,
    )
    print("held-out final distances (cm):", np.round(100 * d, 1).tolist())
    policy.info = {"method": "bptt-v2.0", "robot_seconds": len(data) * DT}
    write_file(args.out / "bptt_policy.safetensors", policy.to_bytes())
    us = per_step_us(policy.frozen(), safety, data.states[0], BOX[0] + 0.1)
    return first, len(data) * DT, d, train_s, us


def mpc_for(robot, model, seed):
    effort = robot.limits.effort
    mpc = MPC(
        robot,
        robot.joint_names,
        ILQR(15, -effort, effort, iterations=3, seed=seed),
        ReachCost(robot),
        dt=DT,
        replan_every=1,
        random_steps=0,
        base_policy=RandomTorquePolicy(effort, 0.5, 2, seed),
    )
    mpc.set_model(model)
    return mpc


def run_distill(args):
    robot, sim, safety, sig, model = setup(args.seed)
    n = robot.n_joints
    train_targets = TargetSampler(robot, BOX, 1)
    base = RandomTorquePolicy(robot.limits.effort, 0.5, 2, args.seed)
    episodes = [
        run_episode(sim, lambda x, t: base.act(), train_targets.sample(), STEPS, safety=safety)
        for _ in range(4)
    ]
    data = episodes_dataset(episodes, sig.joint_names, DT, source="pi0")
    tic = time.perf_counter()
    plan_s = []
    for it in range(args.mpc_rounds):  # the MPC's own learning (v1.5)
        train, val = holdout_split(data, 0.2, args.seed + it)
        model.fit(train, val)
        expert = MPCExpert(mpc_for(robot, model, args.seed), warm_start=True)  # as the node runs
        new = []
        for _ in range(4):
            target = train_targets.sample()
            expert.start(target)

            def act(x, t):
                t0 = time.perf_counter()
                u = expert.label(x, t)
                plan_s.append(time.perf_counter() - t0)
                return np.zeros(n) if u is None else u

            new.append(run_episode(sim, act, target, STEPS, safety=safety))
        fk = ForwardKinematics(robot)
        print(
            f"MPC round {it + 1}: final distances (cm) "
            f"{[round(100 * final_distance(fk, e), 1) for e in new]}",
            flush=True,
        )
        data = Dataset.concat(
            [data, episodes_dataset(new, sig.joint_names, DT, data.n_episodes, "mpc")]
        )
    train, val = holdout_split(data, 0.2, args.seed)
    model.fit(train, val)
    mpc = mpc_for(robot, model, args.seed)
    if args.eval_mpc:
        d_mpc = evaluate(
            robot,
            safety,
            lambda g: _mpc_act(MPCExpert(mpc, warm_start=True), g),
            args.eval_episodes,
        )
        print(
            f"the MPC itself on held-out targets: {100 * np.mean(d_mpc < 0.02):.0f} % within "
            f"2 cm, {100 * np.mean(d_mpc < 0.05):.0f} % within 5 cm",
            flush=True,
        )
    policy = GoalPolicy(sig, robot.limits.effort, (args.hidden, args.hidden), seed=args.seed)
    config = DistillConfig(
        dagger_iterations=args.dagger,
        episode_steps=args.distill_steps,
        train_steps=args.train_steps,
        seed=args.seed,
    )
    records = distill(
        policy,
        MPCExpert(mpc),
        sim,
        lambda it: [(None, train_targets.sample()) for _ in range(args.conditions)],
        config,
        safety,
        progress=print,
    )
    train_s = time.perf_counter() - tic
    per_iteration = args.conditions * args.distill_steps * DT
    points = [(len(data) * DT + (r.iteration + 1) * per_iteration, r.policy) for r in records]
    first, d = curve(
        robot, safety, "distilled MPC (iteration 0: behaviour cloning)", points, args.eval_episodes
    )
    print("held-out final distances (cm):", np.round(100 * d, 1).tolist())
    seconds = points[-1][0]
    policy.info = {"method": "distilled-mpc", "robot_seconds": seconds}
    write_file(args.out / "distilled_policy.safetensors", policy.to_bytes())
    us = per_step_us(policy.frozen(), safety, data.states[0], BOX[0] + 0.1)
    return first, seconds, d, train_s, us, 1e6 * float(np.median(plan_s))


def _mpc_act(expert, target):
    expert.start(target)
    return lambda x, t: expert.label(x, t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=("bptt", "distill", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/policies"),
        help="folder for the trained policies (policy artifacts)",
    )
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=8, help="v2.0 loop iterations")
    parser.add_argument("--bptt-iterations", type=int, default=300)
    parser.add_argument("--horizon", type=int, default=30, help="longest BPTT horizon")
    parser.add_argument("--propagation", choices=("mean", "member"), default="member")
    parser.add_argument("--mpc-rounds", type=int, default=3)
    parser.add_argument(
        "--conditions", type=int, default=32, help="new training targets per distillation iteration"
    )
    parser.add_argument(
        "--distill-steps", type=int, default=40, help="control steps of each distillation episode"
    )
    parser.add_argument("--hidden", type=int, default=128, help="distilled policy width")
    parser.add_argument(
        "--train-steps", type=int, default=8000, help="Adam steps per distillation (re)training"
    )
    parser.add_argument("--dagger", type=int, default=7, help="DAgger iterations")
    parser.add_argument("--eval-mpc", action="store_true", help="also score the MPC itself")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.method in ("bptt", "both"):
        rows.append(("BPTT v2.0", *run_bptt(args), ""))
    if args.method in ("distill", "both"):
        *result, plan_us = run_distill(args)
        rows.append(("distilled MPC", *result, f" (the MPC: {plan_us / 1e3:.0f} ms per step) |"))
    print(
        f"\narm2, {args.eval_episodes} held-out targets, episodes of {STEPS * DT:g} s\n"
        "| method | robot data to ≥ 90 % within 2 cm (s) | robot data used (s) | final "
        "success ≤ 2 cm | ≤ 5 cm | mean final (cm) | training compute (s) | per control "
        "step µs (policy / + safety layer) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for row in rows:
        report(*row)


if __name__ == "__main__":
    main()
