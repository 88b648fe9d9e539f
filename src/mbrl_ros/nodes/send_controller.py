"""``mbrl-ros send-controller``: publish a controller artifact on ``/mbrl/controller``, or write a
scripted one (hold, PD tracking) to a file.

    mbrl-ros send-controller FILE [--restamp] [--keep]
    mbrl-ros send-controller --make pd --robot arm7 --goal 0.3 0 0 -1.5 0 1 0 -o move.safetensors
    mbrl-ros send-controller --make hold --restamp          # build and publish at once

Publishing uses transient-local durability (a late executor still gets it while this process
runs: ``--keep`` stays until Ctrl-C). ``--restamp`` waits for one ``/joint_states`` message and
starts the controller at its stamp, so a file made offline runs from "now" (in lockstep, from
the state the sim is waiting on).
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

from mbrl_ros import artifacts
from mbrl_ros.controller import LinearGaussianController, seconds_to_ns
from mbrl_ros.msgconv import stamp_to_ns
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS
from mbrl_ros.robot import load_robot
from mbrl_ros.scripted import scripted_controller


def add_arguments(parser: argparse.ArgumentParser, command: str = "send-controller") -> None:
    parser.add_argument("file", nargs="?", help="controller artifact (.safetensors) to publish")
    parser.add_argument("--topic", default="/mbrl/controller", help="topic (default %(default)s)")
    parser.add_argument("--restamp", action="store_true",
                        help="start the controller at the stamp of the next /joint_states")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="seconds to wait for a subscriber / a joint state (default 10)")
    parser.add_argument("--keep", action="store_true",
                        help="keep publishing (latched) until Ctrl-C")
    make = parser.add_argument_group("scripted controllers")
    make.add_argument("--make", choices=("hold", "pd"),
                      help="build a hold or minimum-jerk PD-tracking controller")
    make.add_argument("--robot", default="arm7", help="robot name or URDF (default arm7)")
    make.add_argument("--position", type=float, nargs="+", metavar="Q",
                      help="hold / start position (rad, robot joint order; default home pose)")
    make.add_argument("--goal", type=float, nargs="+", metavar="Q", help="pd: goal (rad)")
    make.add_argument("--duration", type=float, default=2.0,
                      help="hold time or move time (s, default 2)")
    make.add_argument("--hold-after", type=float, default=1.0,
                      help="pd: hold the goal this long after the move (s, default 1)")
    make.add_argument("--dt", type=float, default=0.01, help="step (s, default 0.01)")
    make.add_argument("--start-time", type=float, default=0.0,
                      help="stamp of step 0 (s of the joint-state clock, default 0)")
    make.add_argument("--kp", type=float, nargs="+", help="stiffness N·m/rad (1 or n values; "
                      "default: stable for --dt and the robot's inertia)")
    make.add_argument("--kd", type=float, nargs="+", help="damping N·m·s/rad (1 or n values)")
    make.add_argument("--no-feedforward", action="store_true",
                      help="no inverse-dynamics feed-forward torque")
    make.add_argument("-o", "--output", help="write the scripted controller here; do not publish")


def _gains(values):
    return None if values is None else (values[0] if len(values) == 1 else values)


def build(args: argparse.Namespace) -> tuple[LinearGaussianController, dict]:
    """The controller of ``args`` (scripted or from FILE) and its artifact ``info``."""
    if args.make:
        if args.file:
            raise ValueError("give either FILE or --make, not both")
        c = scripted_controller(
            args.make, load_robot(args.robot), dt_ns=seconds_to_ns(args.dt),
            start_ns=seconds_to_ns(args.start_time), position=args.position, goal=args.goal,
            duration=args.duration, hold_after=args.hold_after, kp=_gains(args.kp),
            kd=_gains(args.kd), feedforward=not args.no_feedforward)
        return c, {"source": f"scripted {args.make}", "robot": args.robot}
    if not args.file:
        raise ValueError("give a controller FILE or --make hold|pd")
    data = artifacts.read_file(args.file)
    c = LinearGaussianController.from_bytes(data)
    return c, artifacts.read_header(data)[1].get("info") or {}


def describe(c: LinearGaussianController) -> str:
    return (f"T={c.T} steps of {c.dt * 1e3:g} ms from {c.start_ns * 1e-9:.3f} s to "
            f"{c.end_ns * 1e-9:.3f} s, {c.du} joints, "
            f"{'deterministic' if c.deterministic else 'Gaussian'}")


def run(args: argparse.Namespace) -> int:
    c, info = build(args)
    if args.output:
        artifacts.write_file(args.output, c.to_bytes(info))
        print(f"wrote {args.output}: {describe(c)}")
        return 0
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


def _publish(node: Node, executor, c: LinearGaussianController, info: dict,
             args: argparse.Namespace) -> int:
    if args.restamp:
        stamps: list[int] = []
        node.create_subscription(JointState, "/joint_states",
                                 lambda m: stamps.append(stamp_to_ns(m.header.stamp)), STATE_QOS)
        deadline = time.monotonic() + args.wait
        while not stamps and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        if not stamps:
            print(f"send-controller: no /joint_states within {args.wait:g} s; cannot restamp",
                  file=sys.stderr)
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
        print(f"send-controller: nobody subscribed to {args.topic} within {args.wait:g} s",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="send_controller", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"send-controller: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
