"""The lecture's MBRL versions (v0.5, v1.0, v1.5, v1.5 with iLQR feedback or with PD tracking of
the plan) compared on the same seeds, data budget and held-out targets, offline on the simulated
arm with the mpc graph's settings (``config/mpc_<robot>.yaml`` over the nodes' defaults). Prints a
progress line per training episode and a markdown table at the end
(``mbrl_ros.experiments.versions``): mean ± standard deviation over the seeds.

    python benchmarks/compare_versions.py [--robot arm2|arm7] [--budget S] [--seed-data S]
                                          [--eval N] [--seeds 0,1,2,3,4] [--versions v0.5,...]
                                          [--set planner_parameter=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from mbrl_ros.common.settings import ConfigError
from mbrl_ros.dynamics.catalog import FitterSettings
from mbrl_ros.experiments.versions import VERSIONS, Setup, run_version, table
from mbrl_ros.graphs.description import MPC_CONTROL_PERIOD
from mbrl_ros.graphs.param_files import node_parameters
from mbrl_ros.planning.mpc import PlannerSettings
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.simulation import SimConfig
from mbrl_ros.tasks.episodes import EpisodeSettings

CONFIG = Path(__file__).resolve().parent.parent / "config"


def setup_for(robot_name: str, episode_length: float) -> Setup:
    config = yaml.safe_load(
        (CONFIG / ("mpc.yaml" if robot_name == "arm7" else f"mpc_{robot_name}.yaml")).read_text()
    )
    period = MPC_CONTROL_PERIOD[robot_name]
    plan = PlannerSettings.select(node_parameters(config, "mpc_planner")).replace(
        control_period=period
    )
    episodes = EpisodeSettings.select(node_parameters(config, "episode_manager")).replace(
        episode_steps=int(round(episode_length / period))
    )
    return Setup(
        robot=load_robot(robot_name),
        sim=SimConfig.select(node_parameters(config, "arm_sim") | {"control_period": period}),
        planner=plan,
        fitter=FitterSettings.select(node_parameters(config, "dynamics_fitter")),
        episodes=episodes,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--robot", default="arm2", choices=sorted(MPC_CONTROL_PERIOD))
    ap.add_argument("--budget", type=float, default=45.0, help="robot data per version (s)")
    ap.add_argument("--seed-data", type=float, default=6.0, help="π0 data before aggregation (s)")
    ap.add_argument("--episode-length", type=float, default=3.0, help="s")
    ap.add_argument("--eval", type=int, default=10, help="held-out episodes per version")
    ap.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds: the table gives mean ± standard deviation over them",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--versions", default=",".join(VERSIONS))
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="override planner node parameters, e.g. effort_fraction=0.2",
    )
    args = ap.parse_args()
    versions = args.versions.split(",")
    unknown = [v for v in versions if v not in VERSIONS]
    if unknown:
        ap.error(f"unknown versions {unknown}; known: {', '.join(VERSIONS)}")
    torch.set_num_threads(args.threads)
    setup = setup_for(args.robot, args.episode_length)
    for item in args.set:
        name, _, value = item.partition("=")
        if not value:
            ap.error(
                f"--set {item!r}: expected NAME=VALUE with a planner setting NAME "
                f"({', '.join(sorted(PlannerSettings.names()))})"
            )
        try:
            setup.planner = PlannerSettings.from_mapping(
                setup.planner.as_dict() | {name: yaml.safe_load(value)}, f"--set {item!r}"
            )
        except ConfigError as exc:
            ap.error(str(exc))
    try:
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    results = [
        run_version(
            v,
            setup,
            args.budget,
            args.seed_data,
            args.eval,
            seed,
            progress=lambda line: print(line, flush=True),
        )
        for v in versions
        for seed in seeds
    ]
    print(
        f"\n{args.robot}, {args.budget:g} s of robot data per version, seeds {seeds}, "
        f"{args.eval} held-out targets each\n"
    )
    print(table(results, setup.episodes.success_tolerance))
    return 0


if __name__ == "__main__":
    sys.exit(main())
