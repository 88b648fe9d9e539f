"""Node ``replay`` and ``mbrl-ros replay BAG``: publishes a bag's topics with their original timing,
for machines without ``ros2 bag play``.

* Messages go out as the recorded CDR bytes (nothing is deserialised), in log-time order, each at
  its log-time offset from the start of the bag divided by ``rate``.
* /clock: a bag that recorded /clock (a simulation) replays it like any other topic; otherwise the
  node publishes /clock from the bag's log time at ``clock_rate`` Hz, as ``ros2 bag play --clock``.
* Each topic is offered with the reliability recorded in the bag, transient-local with the queue
  depth: a subscriber that asks for transient-local gets the messages published before it matched
  (plain volatile subscribers see no difference). ``wait_for_subscribers`` holds playback until
  every topic has a subscriber, then half a second more for the subscribers' end of the match.
* ``loop`` starts again from the beginning when the bag ends; otherwise the node exits when done,
  printing how late messages went out (median and maximum).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosReliability
from rosgraph_msgs.msg import Clock

from mbrl_ros.cli.args import check_bags, confine_dds, number
from mbrl_ros.data.bags import BagReader
from mbrl_ros.data.errors import BagError
from mbrl_ros.data.topics import CLOCK, resolve
from mbrl_ros.nodes.messages import clock_msg
from mbrl_ros.nodes.params import ConfigError, Param, declare_params
from mbrl_ros.nodes.recorder import message_class
from mbrl_ros.nodes.runner import run_node

MATCH_GRACE_S = 0.5  # after a publisher sees its subscriber, for the subscriber to see it too

PARAMS = [
    Param("bag", "", "bag folder to play"),
    Param("rate", 1.0, "playback speed (2 = twice as fast)", (0.01, 100.0)),
    Param("loop", False, "play again from the start when the bag ends"),
    Param("topics", [], "topics to play; [] = all"),
    Param(
        "clock_rate",
        100.0,
        "/clock rate (Hz) for a bag without /clock; 0 = no /clock",
        (0.0, 10000.0),
    ),
    Param(
        "wait_for_subscribers",
        0.0,
        "wait up to this long (wall s) for every topic to have "
        "a subscriber before playing; 0 = start at once",
        (0.0, 3600.0),
    ),
    Param("queue_depth", 1000, "publisher queue depth (messages)", (1, 1_000_000)),
]


def qos_from_bag(offered: tuple[Qos, ...], depth: int) -> QoSProfile:
    """Publisher QoS for a topic: the reliability of the first recorded publisher, transient
    local, keep last ``depth``."""
    best_effort = bool(offered) and offered[0].reliability == QosReliability.BEST_EFFORT
    return QoSProfile(
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


class ReplayNode(Node):
    """Plays ``bag`` in a thread; ``node_kwargs`` go to rclpy's Node."""

    def __init__(self, **node_kwargs):
        super().__init__("replay", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        if not p.bag:
            raise ConfigError("parameter 'bag' is empty: give the bag folder to play")
        self.bag = BagReader(p.bag)
        self.topics = [resolve(t) for t in p.topics] or sorted(self.bag.topics)  # bag names
        missing = [t for t in self.topics if t not in self.bag.topics]
        if missing:
            self.bag.close()
            raise ConfigError(
                f"parameter 'topics': bag {p.bag} has no topic(s) {missing}; it "
                f"has {sorted(self.bag.topics)}"
            )
        self.pubs = {}
        for topic in self.topics:
            info = self.bag.topics[topic]
            try:
                cls = message_class(info.type)
            except ValueError as exc:
                self.get_logger().warning(f"not replaying {topic}: {exc}")
                continue
            self.pubs[topic] = self.create_publisher(
                cls, topic, qos_from_bag(info.qos, p.queue_depth)
            )
        self.clock_pub = (
            self.create_publisher(Clock, CLOCK, qos_from_bag((), p.queue_depth))
            if CLOCK not in self.bag.topics and p.clock_rate > 0
            else None
        )
        self.exit_status = 0
        self.published = 0
        self.lateness: list[float] = []  # wall s after the scheduled time, per message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="replay", daemon=True)
        self._thread.start()

    def _play(self) -> None:
        try:
            self._wait_for_subscribers()
            while not self._stop.is_set():
                self._play_once()
                if not self.p.loop:
                    break
        except BagError as exc:
            self.get_logger().error(str(exc))
            self.exit_status = 1
        if not self._stop.is_set():
            self._drain()
            self._summary()
            self.context.try_shutdown()

    def _drain(self) -> None:
        """Wait (up to 5 s) until reliable subscribers have acknowledged every message, so that
        exiting does not drop what is still in flight."""
        for pub in list(self.pubs.values()) + ([self.clock_pub] if self.clock_pub else []):
            pub.wait_for_all_acked(Duration(seconds=5.0))

    def _wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + self.p.wait_for_subscribers
        while self.p.wait_for_subscribers > 0 and time.monotonic() < deadline:
            if all(pub.get_subscription_count() > 0 for pub in self.pubs.values()):
                self._stop.wait(MATCH_GRACE_S)
                return
            if self._stop.wait(0.01):
                return

    def _play_once(self) -> None:
        rate, t0_bag = self.p.rate, self.bag.start_ns
        t0_wall = time.monotonic()
        clock_step = int(1e9 / self.p.clock_rate) if self.clock_pub else 0
        next_clock = 0  # ns of bag time since the start
        for topic, log_ns, data in self.bag.messages(self.pubs, raw=True):
            offset = log_ns - t0_bag
            while clock_step and next_clock <= offset:
                if not self._sleep_until(t0_wall + next_clock / rate / 1e9):
                    return
                self.clock_pub.publish(clock_msg(t0_bag + next_clock))
                next_clock += clock_step
            target = t0_wall + offset / rate / 1e9
            if not self._sleep_until(target):
                return
            self.pubs[topic].publish(data)
            self.lateness.append(time.monotonic() - target)
            self.published += 1

    def _sleep_until(self, target: float) -> bool:
        """Sleep until monotonic time ``target``; False if stopped meanwhile."""
        remaining = target - time.monotonic()
        return not (self._stop.wait(remaining) if remaining > 0 else self._stop.is_set())

    def _summary(self) -> None:
        late = np.array(self.lateness or [0.0]) * 1e3
        self.get_logger().info(
            f"replayed {self.published} messages of {len(self.pubs)} topic(s) from "
            f"{self.p.bag} at rate {self.p.rate:g}; lateness median {np.median(late):.2f} ms, "
            f"max {late.max():.2f} ms"
        )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.bag.close()


def _in_range(name: str):
    """The argparse type of parameter ``name``: a finite number within its range."""
    bounds = next(p.range for p in PARAMS if p.name == name)
    assert bounds is not None  # the replay's numeric parameters all have ranges
    lo, hi = bounds
    return number(float, ge=lo, le=hi)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("bag", help="bag folder (rosbag2, MCAP storage)")
    parser.add_argument(
        "--rate", type=_in_range("rate"), default=1.0, help="playback speed factor (0.01 to 100)"
    )
    parser.add_argument("--loop", action="store_true", help="play again when the bag ends")
    parser.add_argument(
        "--topics", nargs="+", default=[], metavar="TOPIC", help="topics to play (default: all)"
    )
    parser.add_argument(
        "--clock-rate",
        type=_in_range("clock_rate"),
        default=100.0,
        metavar="HZ",
        help="/clock rate when the bag has no /clock (0 = none)",
    )
    parser.add_argument(
        "--wait-for-subscribers",
        type=_in_range("wait_for_subscribers"),
        default=0.0,
        metavar="S",
        help="wait up to S wall seconds for subscribers before playing",
    )


def run(args: argparse.Namespace) -> int:
    """Play a bag on this machine's ROS 2 graph; DDS stays on this machine, in a domain of its own
    unless ROS_AUTOMATIC_DISCOVERY_RANGE / ROS_DOMAIN_ID are set (``confine_dds``)."""
    check_bags([args.bag])
    confine_dds("replay")
    overrides = [
        Parameter("bag", value=str(args.bag)),
        Parameter("rate", value=args.rate),
        Parameter("loop", value=args.loop),
        Parameter("clock_rate", value=args.clock_rate),
        Parameter("wait_for_subscribers", value=args.wait_for_subscribers),
    ]
    if args.topics:
        overrides.append(Parameter("topics", value=list(args.topics)))
    return run_node(lambda: ReplayNode(parameter_overrides=overrides), "replay", [])


def main(args=None) -> int:
    return run_node(lambda: ReplayNode(), "replay", args)


if __name__ == "__main__":
    sys.exit(main())
