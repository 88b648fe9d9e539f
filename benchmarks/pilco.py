"""PILCO results: pendulum swing-up (sim/pendulum.xml) and 2-link arm reach (arm2), one torch
thread.

For each seed: the trial at which PILCO first solved the task and the seconds of system data used up
to it, the wall time of the whole loop, the final policy's success from fresh start states, and the
compute of one control step of the policy (``act`` on one state, numpy in and out, best of 5 ×
1000). Swing-up solved: a trial ends with its last second within 0.2 rad of upright and 1 rad/s of
rest; reach solved: the last state's end effector within 2 cm of the target.

    python benchmarks/pilco.py [--seeds 0 1 2] [--trials 8] [--skip-arm]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from timing import best_seconds

from mbrl_ros.policy.pilco.arm_reach import ArmSystem, ee_distance, reach
from mbrl_ros.policy.pilco.loop import PilcoConfig, rollout
from mbrl_ros.policy.pilco.pendulum import PendulumSystem, holds_upright, swing_up
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.simulation import SimConfig

ARM_TARGETS = ((0.0772, 0.2245, 0.07), (0.172, 0.1636, 0.07), (0.2, -0.12, 0.07))


def step_us(policy, dx: int) -> float:
    x = np.zeros(dx)
    return best_seconds(lambda: [policy.act(x) for _ in range(1000)]) * 1e3


def line(name, seed, result, success, us) -> str:
    solved = result.solved_at
    data = result.trials[solved - 1].data_seconds if solved else float("nan")
    return (
        f"{name:<9} seed {seed}: solved at trial {solved} ({data:.1f} s of data), "
        f"{len(result.trials)} trials, loop {result.seconds:.0f} s wall, final policy "
        f"{success}, {us:.0f} µs per control step"
    )


def arm_row(result, target) -> str:
    """The reach result line; the final policy from 10 fresh starts q_0 ~ N(0, 0.05²I), at rest."""
    robot = load_robot("arm2")
    system = ArmSystem(robot, SimConfig(control_period=0.05, seed=1000))
    rng = np.random.default_rng(2000)
    horizon = result.trials[-1].actions.shape[0]
    final = [
        ee_distance(
            robot,
            rollout(
                system,
                result.policy.act,
                np.concatenate([rng.normal(0, 0.05, 2), np.zeros(2)]),
                horizon,
            )[0][-1:],
            target,
        )[0]
        for _ in range(10)
    ]
    return line(
        f"arm2 {tuple(round(v, 3) for v in target)}",
        0,
        result,
        f"final distance median {1e3 * np.median(final):.1f} mm, max "
        f"{1e3 * np.max(final):.1f} mm over 10 fresh starts",
        step_us(result.policy, 4),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=8, help="policy trials at most")
    parser.add_argument("--skip-arm", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        result = swing_up(
            PilcoConfig(trials=args.trials, opt_iterations=30, seed=seed), horizon_s=4.0, basis=30
        )
        system = PendulumSystem(seed=1000 + seed)
        rng = np.random.default_rng(2000 + seed)
        held = sum(
            holds_upright(
                rollout(system, result.policy.act, rng.normal(0, 0.1, 2), 40)[0], system.dt
            )
            for _ in range(20)
        )
        rows.append(
            line(
                "pendulum",
                seed,
                result,
                f"holds upright from {held}/20 fresh starts",
                step_us(result.policy, 2),
            )
        )
        print(rows[-1], f"(total {time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.skip_arm:
        for target in ARM_TARGETS:
            result = reach(
                target, config=PilcoConfig(trials=args.trials, opt_iterations=30, seed=0)
            )
            rows.append(arm_row(result, target))
            print(rows[-1], flush=True)
    print("\n".join(["", "summary:"] + rows))


if __name__ == "__main__":
    main()
