"""``mbrl-ros versions``: the lecture's MBRL versions (v0.5, v1.0, v1.5, and v1.5 replanning every
few steps with the plan open loop, bounded iLQR feedback or PD tracking between) compared offline
on the simulated arm with the mpc graph's settings (``experiments.versions``): the same seeds, data
budget and held-out targets for each, in lockstep or with the real-time graph's executor rate and
plan latency emulated (``--executor-rate``, ``--plan-latency``); a progress line per training
episode and a markdown table (mean ± standard deviation over the seeds) at the end."""

from __future__ import annotations

import argparse

from mbrl_ros.cli.args import number, number_list


def _versions(text: str) -> list[str]:
    from mbrl_ros.experiments.versions import VERSIONS

    names = [v.strip() for v in text.split(",")]
    unknown = [v for v in names if v not in VERSIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown versions {unknown}; known: {', '.join(VERSIONS)}"
        )
    return names


def _setting(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE (a planner setting)")
    return name, value


def add_arguments(parser: argparse.ArgumentParser, command: str = "versions") -> None:
    from mbrl_ros.common.param_files import MPC_CONTROL_PERIOD
    from mbrl_ros.experiments.versions import VERSIONS

    parser.add_argument("--robot", default="arm2", choices=sorted(MPC_CONTROL_PERIOD))
    parser.add_argument(
        "--budget", type=number(float, gt=0), default=45.0, help="robot data per version (s)"
    )
    parser.add_argument(
        "--seed-data",
        type=number(float, gt=0),
        default=6.0,
        help="π0 data before aggregation (s)",
    )
    parser.add_argument(
        "--episode-length", type=number(float, gt=0), default=3.0, help="seconds per episode"
    )
    parser.add_argument(
        "--eval", type=number(int, ge=1), default=10, help="held-out episodes per version"
    )
    parser.add_argument(
        "--seeds",
        type=number_list(int, ge=0),
        default=[0],
        metavar="S1,S2,...",
        help="seeds: the table gives mean ± standard deviation over them",
    )
    parser.add_argument("--threads", type=number(int, ge=1), default=1, help="torch threads")
    parser.add_argument(
        "--versions", type=_versions, default=list(VERSIONS), metavar="V1,V2,...", help="versions"
    )
    parser.add_argument(
        "--feedback-every",
        type=number(int, ge=1),
        default=5,
        help="v1.5+open, +ilqr, +tracking: control periods between replans (1: as often as v1.5)",
    )
    parser.add_argument(
        "--executor-rate",
        type=number(int, ge=1),
        default=1,
        help="executor commands per control period, each from the state then (the real-time "
        "graph's executor; must divide the period into whole physics steps)",
    )
    parser.add_argument(
        "--plan-latency",
        type=number(int, ge=0),
        default=0,
        help="control periods a plan takes: it starts from the model's prediction that far "
        "ahead and acts from then, the previous plan meanwhile (the planner's compensate_latency)",
    )
    parser.add_argument(
        "--set",
        type=_setting,
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="override planner settings, e.g. effort_fraction=0.2",
    )


def run(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from mbrl_ros.experiments.versions import check, graph_setup, run_version, table
    from mbrl_ros.planning.mpc import PlannerSettings

    torch.set_num_threads(args.threads)
    setup = graph_setup(args.robot, args.episode_length)
    setup.feedback_every = args.feedback_every
    setup.executor_rate = args.executor_rate
    setup.plan_latency = args.plan_latency
    for version in args.versions:  # before the first run, not after an hour of it
        check(setup, version)
    for name, value in args.set:
        setup.planner = PlannerSettings.from_mapping(
            setup.planner.as_dict() | {name: yaml.safe_load(value)}, f"--set {name}={value}"
        )
    results = [
        run_version(
            version,
            setup,
            args.budget,
            args.seed_data,
            args.eval,
            seed,
            progress=lambda line: print(line, flush=True),
        )
        for version in args.versions
        for seed in args.seeds
    ]
    print(
        f"\n{args.robot}, {args.budget:g} s of robot data per version, seeds {args.seeds}, "
        f"{args.eval} held-out targets each; feedback versions replan every "
        f"{args.feedback_every} periods; executor {args.executor_rate}× per period; plan "
        f"latency {args.plan_latency} periods\n"
    )
    print(table(results, setup.episodes.success_tolerance))
    return 0
