"""``mbrl-ros send-controller``: publish a controller artifact on ``/mbrl/controller``, or write a
scripted one (hold, PD tracking) to a file.

    mbrl-ros send-controller FILE [--restamp] [--keep]
    mbrl-ros send-controller --make pd --robot arm7 --goal 0.3 0 0 -1.5 0 1 0 -o move.safetensors
    mbrl-ros send-controller --make hold --restamp          # build and publish at once

Publishing uses transient-local durability (a late executor still gets it while this process
runs: ``--keep`` stays until Ctrl-C). ``--restamp`` waits for one ``/joint_states`` message and
starts the controller at its stamp, so a file made offline runs from "now" (in lockstep, from
the state the sim is waiting on). Like ``mbrl-ros launch``, it keeps DDS on this machine and picks
a ROS_DOMAIN_ID unless they are set (it prints both): export the graph's to reach it.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import UInt8MultiArray

from mbrl_ros.cli.args import (
    check_output,
    confine_dds,
    error_line,
    input_file,
    load_robot_arg,
    number,
    topic_name,
)
from mbrl_ros.common import artifacts
from mbrl_ros.common.msgconv import seconds_to_ns, stamp_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.control.scripted import scripted_controller
from mbrl_ros.data.topics import CONTROLLER, STATES
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS

COMMAND = "send-controller"
PROG = f"mbrl-ros {COMMAND}"
MAX_SECONDS = 1e9  # --wait and --start-time: a time in ns fits in a signed 64-bit integer


def add_arguments(parser: argparse.ArgumentParser, command: str = "send-controller") -> None:
    parser.add_argument(
        "file",
        nargs="?",
        type=input_file,
        metavar="FILE",
        help="controller artifact (.safetensors) to publish",
    )
    publish = parser.add_argument_group("publishing (not with -o)")
    publish.add_argument(
        "--topic", default=CONTROLLER, type=topic_name, help="topic (default %(default)s)"
    )
    publish.add_argument(
        "--restamp",
        action="store_true",
        help="start the controller at the stamp of the next /joint_states",
    )
    publish.add_argument(
        "--wait",
        type=number(float, ge=0, le=MAX_SECONDS),
        default=10.0,
        help="seconds to wait for a subscriber / a joint state (default 10)",
    )
    publish.add_argument(
        "--keep", action="store_true", help="keep publishing (latched) until Ctrl-C"
    )
    make = parser.add_argument_group("scripted controllers (--make only)")
    make.add_argument(
        "--make", choices=("hold", "pd"), help="build a hold or minimum-jerk PD-tracking controller"
    )
    make.add_argument("--robot", help="robot name or URDF (default arm7)")
    q = number(float)
    make.add_argument(
        "--position",
        type=q,
        nargs="+",
        metavar="Q",
        help="hold / start position (rad, robot joint order; default home pose)",
    )
    make.add_argument("--goal", type=q, nargs="+", metavar="Q", help="pd (needed): goal (rad)")
    make.add_argument(
        "--duration", type=number(float, gt=0), help="hold time or move time (s, default 2)"
    )
    make.add_argument(
        "--hold-after",
        type=number(float, ge=0),
        help="pd: hold the goal this long after the move (s, default 1)",
    )
    make.add_argument("--dt", type=number(float, gt=0), help="step (s, default 0.01)")
    make.add_argument(
        "--start-time",
        type=number(float, ge=0, le=MAX_SECONDS),
        help="stamp of step 0 (s of the joint-state clock, default 0)",
    )
    gain = number(float, ge=0)
    make.add_argument(
        "--kp",
        type=gain,
        nargs="+",
        help="stiffness N·m/rad (1 or n values, at "
        "most the stable maximum for --dt and the robot's inertia; default 0.4 of it)",
    )
    make.add_argument(
        "--kd",
        type=gain,
        nargs="+",
        help="damping N·m·s/rad (1 or n values, likewise; default 0.6 of it)",
    )
    make.add_argument(
        "--no-feedforward", action="store_true", help="no inverse-dynamics feed-forward torque"
    )
    make.add_argument("-o", "--output", help="write the scripted controller here; do not publish")
    make.add_argument("--force", action="store_true", help="overwrite the -o file if it exists")


# options (argparse dest → flag) that only some uses of the command take
MAKE_OPTIONS = {
    "robot": "--robot",
    "position": "--position",
    "goal": "--goal",
    "duration": "--duration",
    "hold_after": "--hold-after",
    "dt": "--dt",
    "start_time": "--start-time",
    "kp": "--kp",
    "kd": "--kd",
    "no_feedforward": "--no-feedforward",
}
PD_OPTIONS = {"goal": "--goal", "hold_after": "--hold-after"}
PUBLISH_OPTIONS = {"restamp": "--restamp", "keep": "--keep"}


def _given(args: argparse.Namespace, options: dict[str, str]) -> str:
    """The flags of ``options`` given on the command line, comma-separated ('' if none)."""
    return ", ".join(
        flag for name, flag in options.items() if getattr(args, name) not in (None, False)
    )


def check(args: argparse.Namespace) -> None:
    """ValueError for a missing source or options that would be ignored."""
    if bool(args.make) == bool(args.file):
        raise ValueError(
            "give either a controller FILE or --make hold|pd"
            if not args.make
            else "give either FILE or --make, not both"
        )
    if not args.make and _given(args, MAKE_OPTIONS):
        raise ValueError(f"{_given(args, MAKE_OPTIONS)}: only with --make")
    if args.make == "hold" and _given(args, PD_OPTIONS):
        raise ValueError(f"{_given(args, PD_OPTIONS)}: only with --make pd")
    if args.make == "pd" and args.goal is None:
        raise ValueError("--make pd needs --goal")
    if args.output and _given(args, PUBLISH_OPTIONS):
        raise ValueError(
            f"{_given(args, PUBLISH_OPTIONS)}: not with -o (which writes a file and "
            "publishes nothing)"
        )
    if args.output:
        check_output(args.output, "-o", args.force)


def _gains(values):
    return None if values is None else (values[0] if len(values) == 1 else values)


def build(args: argparse.Namespace) -> tuple[LinearGaussianController, dict]:
    """The controller of ``args`` (scripted or from FILE) and its artifact ``info``."""
    check(args)
    if args.make:
        robot = args.robot or "arm7"
        times = {
            k: getattr(args, k) for k in ("duration", "hold_after") if getattr(args, k) is not None
        }
        c = scripted_controller(
            args.make,
            load_robot_arg(robot, "--robot"),
            dt_ns=seconds_to_ns(args.dt or 0.01),
            start_ns=seconds_to_ns(args.start_time or 0.0),
            position=args.position,
            goal=args.goal,
            kp=_gains(args.kp),
            kd=_gains(args.kd),
            feedforward=not args.no_feedforward,
            **times,
        )
        return c, {"source": f"scripted {args.make}", "robot": robot}
    data = artifacts.read_file(args.file)
    try:
        c = LinearGaussianController.from_bytes(data)
    except ValueError as exc:
        raise ValueError(f"FILE {args.file}: {exc}") from None
    return c, artifacts.read_header(data)[1].get("info") or {}


def describe(c: LinearGaussianController) -> str:
    return (
        f"T={c.T} steps of {c.dt * 1e3:g} ms from {c.start_ns * 1e-9:.3f} s to "
        f"{c.end_ns * 1e-9:.3f} s, {c.du} joints, "
        f"{'deterministic' if c.deterministic else 'Gaussian'}"
    )


def run(args: argparse.Namespace) -> int:
    c, info = build(args)
    if args.output:
        artifacts.write_file(args.output, c.to_bytes(info))
        print(f"wrote {args.output}: {describe(c)}")
        return 0
    confine_dds(COMMAND)
    context = Context()
    rclpy.init(context=context)
    node = Node("send_controller", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        return _publish(node, executor, c, info, args)
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        context.try_shutdown()


def _publish(
    node: Node, executor, c: LinearGaussianController, info: dict, args: argparse.Namespace
) -> int:
    if args.restamp:
        stamps: list[int] = []
        node.create_subscription(
            JointState, STATES, lambda m: stamps.append(stamp_to_ns(m.header.stamp)), STATE_QOS
        )
        deadline = time.monotonic() + args.wait
        while not stamps and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        if not stamps:
            print(
                error_line(PROG, f"no /joint_states within {args.wait:g} s; cannot restamp"),
                file=sys.stderr,
            )
            return 1
        c = c.restamp(stamps[0])
    pub = node.create_publisher(UInt8MultiArray, args.topic, LATCHED_QOS)
    deadline = time.monotonic() + args.wait
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    msg = UInt8MultiArray()
    msg.data = c.to_bytes(info)
    pub.publish(msg)
    subscribers = pub.get_subscription_count()
    pub.wait_for_all_acked(Duration(seconds=args.wait))  # reliable: every matched reader has it
    print(f"published on {args.topic} to {subscribers} subscriber(s): {describe(c)}", flush=True)
    if args.keep:
        print("keeping it latched until Ctrl-C", flush=True)
        try:
            while True:
                executor.spin_once(timeout_sec=0.5)
        except KeyboardInterrupt:
            return 0
    if subscribers == 0:
        print(
            error_line(PROG, f"nobody subscribed to {args.topic} within {args.wait:g} s"),
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mbrl_ros.nodes.send_controller ARGS`` is ``mbrl-ros send-controller ARGS``."""
    from mbrl_ros.cli import main as cli_main

    return cli_main([COMMAND, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
