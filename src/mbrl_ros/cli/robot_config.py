"""``mbrl-ros robot-config URDF -o FILE.yaml``: write a robot's per-robot settings
(``mbrl_ros.robot.config``), derived from its URDF, for review and editing."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mbrl_ros.cli.args import boolean, check_output, load_robot_arg, number_list

PREVIEW_TARGETS = 200


def add_arguments(parser: argparse.ArgumentParser, command: str = "robot-config") -> None:
    parser.add_argument("urdf", metavar="URDF", help="URDF file, or a robot name of the package")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE.yaml", help="the robot config to write"
    )
    parser.add_argument(
        "--home",
        type=number_list(float),
        metavar="Q1,Q2,...",
        help="home pose (rad, URDF joint order); default: the pose at start-up",
    )
    parser.add_argument(
        "--compensates-gravity",
        type=boolean,
        default=True,
        metavar="true|false",
        help="whether the robot's effort interface cancels the arm's weight (default true)",
    )
    parser.add_argument(
        "--ee-link",
        metavar="LINK",
        help="end-effector link (default: ee_link, or the chain's single leaf)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite FILE.yaml")


def run(args: argparse.Namespace) -> int:
    from mbrl_ros.robot.config import RobotConfigError, derive_robot_config, robot_name
    from mbrl_ros.robot.description import home_position
    from mbrl_ros.robot.gravity import joints_without_inertia
    from mbrl_ros.tasks.episodes import TargetSampler

    out = check_output(args.output, "-o", args.force, suffix=".yaml")
    robot = load_robot_arg(args.urdf, "URDF", args.ee_link)
    try:
        config = derive_robot_config(
            robot, args.home, args.compensates_gravity, name=robot_name(args.urdf)
        )
        config.check(robot)
    except RobotConfigError as exc:  # only the home pose comes from the user
        raise ValueError(f"--home: {exc}") from None
    prog = f"mbrl-ros {args.command}"
    massless = joints_without_inertia(robot)
    if massless:
        print(
            f"{prog}: warning: joints {massless} move no link with an <inertial>: their "
            f"effort_fraction comes from MuJoCo's estimate from the collision geometry; "
            f"review it",
            file=sys.stderr,
        )
    config.write(out)
    n = robot.n_joints
    print(
        f"wrote {out}: {robot.name}, {n} joints, gravity "
        f"{'compensated by the robot' if config.compensates_gravity else 'added by the stack'}"
    )
    print(f"  torque range (N·m): {np.round(config.torque_limit(robot), 3).tolist()}")
    around = (
        "home"
        if config.home is not None
        else "the URDF's default pose (home: the pose at start-up)"
    )
    with np.errstate(invalid="ignore"):  # continuous joints: inf − inf, unused
        default = home_position(robot)
    preview = config if config.home is not None else config.with_home(default)
    try:
        sampler = TargetSampler.around_home(robot, preview, seed=0)
        targets = np.array([sampler.sample() for _ in range(PREVIEW_TARGETS)])
    except ValueError as exc:
        print(f"{prog}: warning: no target region around {around}: {exc}", file=sys.stderr)
        return 0
    low, high = targets.min(0), targets.max(0)
    print(
        f"  targets around {around} ({PREVIEW_TARGETS} samples), m: "
        + ", ".join(f"{axis} {lo:.3f}..{hi:.3f}" for axis, lo, hi in zip("xyz", low, high))
    )
    return 0
