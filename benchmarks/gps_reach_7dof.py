"""GPS reaching on the 7-DOF sim arm (offline, pure core): learning curves with and without the
GMM prior.

From 4 initial conditions the arm must bring its end effector to a fixed target in T = 100 steps
of 10 ms. Each iteration runs 5 stochastic samples of every condition's linear-Gaussian controller
on the MuJoCo arm (``trajopt.gps.rollout``, what the executor computes), fits the local dynamics
(Bayesian regression with a GMM prior, or ridge regression without one) and makes the
KL-constrained update. Goal: final distance ≤ 2 cm within 10 iterations × 5 samples per condition
(guided policy search's MuJoCo example used 10 × 5 × 4 = 200 rollouts). Prints one table row per
iteration and writes a PNG of cost and final distance against samples, and with ``--json`` the
learning curves (``trajopt.gps.learning_curve`` rows per prior; ``benchmarks/gps_insertion.py
--reach-json`` plots them beside insertion).

    python benchmarks/gps_reach_7dof.py [--iterations 10] [--samples 5] [--png gps_reach_7dof.png]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.trajopt.gps import (
    GPS,
    GPSConfig,
    format_curve,
    initial_controllers,
    learning_curve,
    plot_curves,
    run_offline,
)

T = 100
TARGET_POSE = [0.3, 0.2, 0.0, -1.6, 0.0, 1.5, 0.8]  # rad: the target is its end effector
STARTS = [
    [0.0, -0.3, 0.0, -2.0, 0.0, 1.6, 0.8],
    [0.5, -0.2, 0.3, -1.8, 0.0, 1.6, 0.8],
    [-0.4, 0.0, -0.3, -2.2, 0.2, 1.7, 0.5],
    [0.2, 0.4, 0.2, -1.4, -0.2, 1.4, 1.0],
]


def run(prior: str, iterations: int, samples: int, seed: int, args):
    robot = load_robot("arm7")
    sim = ArmSimulator(robot, SimConfig(scene=None))
    target = ForwardKinematics(robot).ee_position(torch.tensor(TARGET_POSE)).numpy()
    cost = ReachCost(
        robot,
        target,
        w_l2=100.0,
        w_log=1.0,
        alpha=1e-5,
        terminal_weight=10.0,
        w_velocity=args.w_velocity,
        w_action=1e-3,
        w_limit=1.0,
    )

    def final_distance(X):
        with torch.no_grad():
            return cost.distance2(torch.as_tensor(X))[..., -1].sqrt().numpy()

    starts = [np.array(q) for q in STARTS]
    config = GPSConfig(
        prior=prior, kl_step=args.kl_step, max_step_mult=args.max_step_mult, seed=seed
    )
    gps = GPS(
        cost,
        initial_controllers(sim, starts, T, std_fraction=args.init_std),
        config,
        final_distance,
    )
    start = time.perf_counter()
    records = run_offline(gps, sim, starts, iterations, samples, seed=seed)
    return records, time.perf_counter() - start, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--samples", type=int, default=5, help="samples per condition")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--png", default="gps_reach_7dof.png")
    parser.add_argument("--json", help="write the learning curves here")
    parser.add_argument("--priors", default="gmm,none", help="variants to run: gmm, none")
    parser.add_argument("--kl-step", type=float, default=0.3, help="nats per step")
    parser.add_argument("--max-step-mult", type=float, default=3.0)
    parser.add_argument("--init-std", type=float, default=0.05, help="fraction of effort limit")
    parser.add_argument(
        "--w-velocity", type=float, default=0.5, help="weight of ‖q̇_T‖² (arrive at rest)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    curves = {}
    for prior in args.priors.split(","):
        records, seconds, target = run(prior, args.iterations, args.samples, args.seed, args)
        rows = curves[f"{prior} prior"] = learning_curve(records)
        print(f"\n## {prior} prior ({seconds:.0f} s), target {np.round(target, 3).tolist()} m")
        print(format_curve(rows), flush=True)
        done = [r for r in rows if r["worst"] <= 0.02]
        print(
            "all conditions within 2 cm first at "
            + (
                f"iteration {done[0]['iteration']} ({done[0]['samples']} samples)"
                if done
                else "no iteration"
            )
        )
    plot_curves(
        curves,
        args.png,
        f"GPS reach, arm7, {len(STARTS)} conditions × {args.samples} samples per iteration",
        goal=2.0,
    )
    print(f"wrote {args.png}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"goal_m": 0.02, "samples_per_condition": args.samples, "curves": curves}, f)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
