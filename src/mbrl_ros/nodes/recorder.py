"""Node ``recorder``: records topics into a rosbag2 bag (MCAP storage, metadata version 9).

* Messages are taken as serialised CDR bytes (raw subscriptions) and written as received; the log
  time is the middleware's receive time (system clock, ns), as ``ros2 bag record`` does.
* The graph's own topics (``data.topics.KNOWN_TYPES``) are subscribed at start-up, so nothing a
  late publisher sends is missed; other topics once they appear in the graph. The subscription QoS
  follows the publishers present (reliable unless one is best effort, transient local when all
  are), and a subscription that turns out incompatible with a publisher is remade to match.
* Every ``flush_period`` the open chunk is closed, flushed and fsync'ed: a SIGKILL or power loss
  loses at most the messages of the last flush period; ``mbrl-ros bag repair`` finishes that bag.
  SIGINT / SIGTERM close the bag completely.
* A write error (disk full) is logged and reported on /diagnostics; the bag is cut back to its last
  flush and finished, and the node stops with exit status 1.
* ``episodes`` > 0 makes the recorder drive episodes: once joint states, commands and /clock arrive,
  it calls ``reset_service`` (std_srvs/Trigger, the simulator's reset), records for
  ``episode_length`` s of sim time, resets again, and exits after the last episode. The simulator
  publishes each reset on /mbrl/episode_events, so datasets split there. Data before the first
  reset is recorded too (a short first segment).
"""
from __future__ import annotations

import importlib
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from std_srvs.srv import Trigger

from mbrl_ros.data.bags import BagWriter, known_type
from mbrl_ros.data.errors import BagError
from mbrl_ros.data.topics import CLOCK, COMMANDS, KNOWN_TYPES, RECORDED_BY_DEFAULT, STATES
from mbrl_ros.nodes.diagnostics import ERROR, OK, Diagnostics
from mbrl_ros.nodes.params import ConfigError, Param, declare_params
from mbrl_ros.nodes.runner import run_node

PARAMS = [
    Param("bag_path", "", "bag folder to create; '' = bags/mbrl_<UTC date and time>"),
    Param("topics", list(RECORDED_BY_DEFAULT), "topics to record"),
    Param("split_size", 0.0, "start a new bag file at this size (MiB); 0 = never", (0.0, 1e6)),
    Param("split_duration", 0.0, "start a new bag file after this long (s); 0 = never",
          (0.0, 1e7)),
    Param("flush_period", 1.0, "wall time between flushes to disk (s): the most a crash loses",
          (0.01, 60.0)),
    Param("queue_depth", 1000, "subscription queue depth (messages)", (1, 1_000_000)),
    Param("discovery_period", 0.5, "wall time between looks for new publishers (s)", (0.05, 60.0)),
    Param("episodes", 0, "episodes to record, resetting the simulator before each; 0 = record "
                         "until stopped", (0, 1_000_000)),
    Param("episode_length", 10.0, "sim time per episode (s)", (0.001, 1e6)),
    Param("reset_service", "/arm_sim/reset", "std_srvs/Trigger service that starts an episode"),
    Param("status_period", 0.0, "wall time between status lines (s); 0 = none", (0.0, 3600.0)),
]

INFINITE_NS = 2**63 - 1


def message_class(msgtype: str):
    """'sensor_msgs/msg/JointState' → the rclpy message class; ValueError if not importable."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise ValueError(f"message type {msgtype} is not installed (Python package "
                         f"'{package}')") from None


def bag_qos(profile: QoSProfile) -> Qos:
    """An rclpy QoS profile as rosbags stores it in the bag (offered_qos_profiles)."""
    def t(duration) -> QosTime:
        ns = duration.nanoseconds
        return QosTime(2147483647, 4294967295) if ns >= INFINITE_NS else QosTime(*divmod(ns, 10**9))
    return Qos(QosHistory(int(profile.history)), profile.depth,
               QosReliability(int(profile.reliability)), QosDurability(int(profile.durability)),
               t(profile.deadline), t(profile.lifespan), QosLiveliness(int(profile.liveliness)),
               t(profile.liveliness_lease_duration), profile.avoid_ros_namespace_conventions)


class RecorderNode(Node):
    """The recorder; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context...)."""

    def __init__(self, **node_kwargs):
        super().__init__("recorder", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        if p.episodes and not self.get_parameter("use_sim_time").value:
            raise ConfigError(f"parameter 'episodes' = {p.episodes} needs use_sim_time:=true "
                              "(episode_length is sim time)")
        self.topics = [self.resolve_topic_name(t) for t in p.topics]
        if not self.topics:
            raise ConfigError("parameter 'topics' is empty: nothing to record")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
        path = Path(p.bag_path or f"bags/mbrl_{stamp}").expanduser()
        self.exit_status = 0
        self.counts: Counter = Counter()
        self.subscriptions_by_topic: dict[str, tuple[str, object]] = {}  # topic → (type, sub)
        self._refused: set[str] = set()
        self._resubscribe: set[str] = set()
        self._failure: str | None = None
        self.diag = Diagnostics(self, "recorder", self._report)
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(p.flush_period, self._flush, clock=wall)
        self.create_timer(p.discovery_period, self._discover, clock=wall)
        if p.status_period > 0:
            self.create_timer(p.status_period, self._status_line, clock=wall)
        if p.episodes:
            self.episode = 0
            self._episode_start = None
            self._reset_future = None
            self._reset_client = self.create_client(Trigger, p.reset_service)
            self.create_timer(0.02, self._drive_episodes, clock=wall)
        self._discover()
        # Last: nothing after this can fail, so a bag is never left behind unfinished at start-up
        # (a signal from here on reaches the runner, which calls close()).
        try:
            self.writer = BagWriter(path, split_bytes=int(p.split_size * 2**20),
                                    split_ns=int(p.split_duration * 1e9))
        except BagError as exc:
            raise ConfigError(f"parameter 'bag_path': {exc}") from None
        self.get_logger().info(f"recording {', '.join(self.topics)} to {path}")

    # -- subscriptions ---------------------------------------------------------------------------
    def _discover(self) -> None:
        graph = dict(self.get_topic_names_and_types())
        for topic in self._resubscribe:
            _, sub = self.subscriptions_by_topic.pop(topic)
            self.destroy_subscription(sub)
        self._resubscribe.clear()
        for topic in self.topics:
            if topic in self.subscriptions_by_topic or topic in self._refused:
                continue
            types = graph.get(topic) or ([KNOWN_TYPES[topic]] if topic in KNOWN_TYPES else [])
            if not types:
                continue
            if len(types) > 1:
                self.diag.warn("several_types", f"{topic} has several types {types}; "
                                                f"recording {types[0]}")
            try:
                if not known_type(types[0]):
                    raise ValueError(f"{types[0]} is not in the ROS 2 Kilted type store")
                cls = message_class(types[0])
            except ValueError as exc:
                self._refused.add(topic)
                self.diag.warn("refused_topic", f"not recording {topic}: {exc}")
                continue
            sub = self.create_subscription(
                cls, topic, partial(self._on_message, topic), self._qos(topic), raw=True,
                event_callbacks=SubscriptionEventCallbacks(
                    incompatible_qos=partial(self._on_incompatible, topic)))
            self.subscriptions_by_topic[topic] = (types[0], sub)

    def _qos(self, topic: str) -> QoSProfile:
        """Reliable unless a publisher is best effort; transient local if all publishers are."""
        offered = [i.qos_profile for i in self.get_publishers_info_by_topic(topic)]
        reliability = (ReliabilityPolicy.BEST_EFFORT if any(
            q.reliability == ReliabilityPolicy.BEST_EFFORT for q in offered)
            else ReliabilityPolicy.RELIABLE)
        durability = (DurabilityPolicy.TRANSIENT_LOCAL if offered and all(
            q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
            else DurabilityPolicy.VOLATILE)
        return QoSProfile(depth=self.p.queue_depth, reliability=reliability,
                          durability=durability)

    def _on_incompatible(self, topic: str, _event) -> None:
        self.diag.warn("incompatible_qos", f"{topic}: a publisher's QoS does not match the "
                                           "subscription; subscribing again to match it")
        if not self.writer.has_topic(topic):
            self._resubscribe.add(topic)

    # -- writing ---------------------------------------------------------------------------------
    def _on_message(self, topic: str, data: bytes, info) -> None:
        if self.writer.closed:
            return
        try:
            if not self.writer.has_topic(topic):
                offered = [bag_qos(i.qos_profile) for i in self.get_publishers_info_by_topic(topic)]
                self.writer.add_topic(topic, self.subscriptions_by_topic[topic][0], offered)
            self.writer.write(topic, info["received_timestamp"] or time.time_ns(), data)
        except BagError as exc:
            self._fail(exc)
            return
        self.counts[topic] += 1

    def _flush(self) -> None:
        if self.writer.closed:
            return
        try:
            self.writer.checkpoint()
        except BagError as exc:
            self._fail(exc)

    def _fail(self, exc: BagError) -> None:
        self._failure = str(exc)
        self.exit_status = 1
        self.get_logger().error(self._failure)
        self.diag.publish()
        self.context.try_shutdown()

    def close(self) -> None:
        """Finish the bag (called on shutdown)."""
        if self.writer.closed:
            return
        try:
            self.writer.close()
        except BagError as exc:
            self._failure = str(exc)
            self.exit_status = 1
            self.get_logger().error(self._failure)
            return
        # printed: the node's context may already be shut down (no /rosout)
        print(f"[recorder] bag {self.writer.path} closed: {self.writer.message_count} messages "
              f"in {len(self.writer.files)} file(s)", file=sys.stderr, flush=True)

    # -- episodes --------------------------------------------------------------------------------
    def _drive_episodes(self) -> None:
        if self.writer.closed:
            return
        now = self.get_clock().now().nanoseconds
        if self._reset_future is not None:
            if not self._reset_future.done():
                return
            result, self._reset_future = self._reset_future.result(), None
            if result is None or not result.success:
                self.get_logger().error(f"reset via {self.p.reset_service} failed: "
                                        f"{getattr(result, 'message', 'no response')}")
                self.exit_status = 1
                self.context.try_shutdown()
                return
            self.episode += 1
            self._episode_start = now
            self.get_logger().info(f"episode {self.episode}/{self.p.episodes}: {result.message}")
            return
        if self._episode_start is None:
            # First reset once the service is up and states, commands and clock are arriving
            # (DDS can take seconds to match a new publisher; episodes must not miss its start).
            flowing = all(self.counts[t] for t in self.topics if t in (STATES, COMMANDS, CLOCK))
            if now > 0 and flowing and self._reset_client.service_is_ready():
                self._reset_future = self._reset_client.call_async(Trigger.Request())
            return
        if now - self._episode_start < self.p.episode_length * 1e9:
            return
        if self.episode < self.p.episodes:
            self._reset_future = self._reset_client.call_async(Trigger.Request())
            return
        self.get_logger().info(f"{self.p.episodes} episodes recorded; stopping")
        self.close()
        self.context.try_shutdown()

    # -- status ----------------------------------------------------------------------------------
    def _report(self) -> tuple[int, str, dict]:
        w = self.writer
        values = {"messages": w.message_count, "durable_messages": w.durable_count,
                  "files": len(w.files), "bag": str(w.path)}
        values.update({f"messages {t}": n for t, n in sorted(self.counts.items())})
        if self._failure:
            return ERROR, self._failure, values
        return OK, f"{w.message_count} messages, {len(w.files)} file(s)", values

    def _status_line(self) -> None:
        w = self.writer
        per_topic = " ".join(f"{t} {n}" for t, n in sorted(self.counts.items()))
        self.get_logger().info(f"{w.message_count} msgs ({w.durable_count} on disk), "
                               f"{w.size_bytes / 2**20:.1f} MiB, {len(w.files)} file(s) | "
                               f"{per_topic}")


def main(args=None) -> int:
    return run_node(lambda: RecorderNode(), "recorder", args)


if __name__ == "__main__":
    sys.exit(main())
