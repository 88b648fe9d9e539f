"""Node ``recorder``: records topics into a rosbag2 bag (MCAP storage, metadata version 9).

* Messages are taken as serialised CDR bytes (raw subscriptions) and written as received; the log
  time is the middleware's receive time (system clock, ns), as ``ros2 bag record`` does, made
  monotone by the bag writer (receive times of different subscriptions can run backwards).
* The graph's own topics (``data.topics.KNOWN_TYPES``, under their remapped names: a robot's
  joint states may be ``/arm/joint_states``) are subscribed at start-up, so nothing a
  late publisher sends is missed; other topics once they appear in the graph. The subscription QoS
  follows the publishers present (reliable unless one is best effort, transient local when all
  are), and a subscription that turns out incompatible with a publisher is remade to match.
* The bag folder is created with the first message written: a recorder stopped before it (a
  graph that failed at start-up) leaves nothing behind and says so.
* Every ``flush_period`` the open chunk is closed, flushed and fsync'ed: a SIGKILL or power loss
  loses at most the messages of the last flush period; ``mbrl-ros bag repair`` finishes that bag.
  SIGINT / SIGTERM close the bag completely.
* A write error (disk full) is logged and reported on /diagnostics; the bag is cut back to its last
  flush and finished (removed if that leaves it empty), and the node stops with exit status 1.
* ``episodes`` > 0 records exactly that many whole episodes, then the node exits: the bag starts
  at an episode's first state and ends with an episode's last (``data.recording``: episodes are
  stamp windows between episode events; the first begins once joint states and commands are
  arriving, so no episode lacks its commands). ``episode_source``:

  - ``events`` (the record graph): episodes come from the robot or simulator as "reset"/"start"
    events on /mbrl/episode_events (``arm_sim episode_steps``: the sim resets itself every N
    steps, exactly, in lockstep); the recorder only counts them.
  - ``service``: the recorder calls ``reset_service`` (std_srvs/Trigger) to start each episode
    and the next once the first joint state stamped ``episode_length`` after its start arrives;
    the states the robot sends while that reset is in flight are not recorded.

  ``episode_length`` (in the joint states' time: sim time in a simulation) bounds every episode:
  with it the bag ends exactly at the last episode's end, whatever order the topics arrive in.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.subscription import Subscription
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from std_srvs.srv import Trigger

from mbrl_ros.common.msgconv import command_tag, seconds_to_ns, stamp_to_ns
from mbrl_ros.data.bags import BagWriter, known_type
from mbrl_ros.data.errors import BagError
from mbrl_ros.data.recording import EpisodeRecording
from mbrl_ros.data.topics import (
    CAMERA_INFO,
    CLOCK,
    COMMANDS,
    EVENTS,
    IMAGES,
    KNOWN_TYPES,
    RECORDED_BY_DEFAULT,
    RESET_SERVICE,
    STATES,
    read_episode_event,
)
from mbrl_ros.nodes.diagnostics import ERROR, OK, Diagnostics
from mbrl_ros.nodes.params import ConfigError, Param, declare_params
from mbrl_ros.nodes.runner import run_node

PARAMS = [
    Param("bag_path", "", "bag folder to create; '' = bags/mbrl_<UTC date and time>"),
    Param("topics", list(RECORDED_BY_DEFAULT), "topics to record"),
    Param("split_size", 0.0, "start a new bag file at this size (MiB); 0 = never", (0.0, 1e6)),
    Param("split_duration", 0.0, "start a new bag file after this long (s); 0 = never", (0.0, 1e7)),
    Param(
        "flush_period",
        1.0,
        "wall time between flushes to disk (s): the most a crash loses",
        (0.01, 60.0),
        runtime=True,
    ),
    Param("queue_depth", 1000, "subscription queue depth (messages)", (1, 1_000_000)),
    Param(
        "discovery_period",
        0.5,
        "wall time between looks for new publishers (s)",
        (0.05, 60.0),
        runtime=True,
    ),
    Param(
        "episodes",
        0,
        "whole episodes to record, then exit; 0 = record everything until stopped",
        (0, 1_000_000),
    ),
    Param(
        "episode_source",
        "events",
        "events: episodes begin at reset/start events on "
        "/mbrl/episode_events; service: the recorder calls reset_service",
        choices=("events", "service"),
    ),
    Param(
        "episode_length",
        0.0,
        "time per episode (s, in the joint states' stamps); 0 = until "
        "the next episode event (events only)",
        (0.0, 1e6),
    ),
    Param("reset_service", RESET_SERVICE, "service: std_srvs/Trigger that starts an episode"),
    Param(
        "drain_timeout",
        5.0,
        "wall time to wait for messages in flight (s): those of the last "
        "episode, and (service) a reset's episode event",
        (0.1, 600.0),
    ),
    Param("status_period", 0.0, "wall time between status lines (s); 0 = none", (0.0, 3600.0)),
]

INFINITE_NS = 2**63 - 1

# the graph's topics whose messages carry a stamp
STAMPED = (STATES, COMMANDS, CLOCK, EVENTS, IMAGES, CAMERA_INFO)


def message_class(msgtype: str):
    """'sensor_msgs/msg/JointState' → the rclpy message class; ValueError if not importable."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise ValueError(
            f"message type {msgtype} is not installed (Python package '{package}')"
        ) from None


def message_stamp(topic: str, msg) -> tuple[int | None, str | None]:
    """(stamp in ns, episode-event kind or None) of a message of one of the STAMPED topics: the
    joint-state stamp, the command's tag (None if untagged), the /clock time, the event's stamp.
    Raises what the topic's reader raises for a malformed message."""
    if topic == EVENTS:
        event = read_episode_event(msg)
        return event.stamp_ns, event.kind
    if topic == COMMANDS:
        return command_tag(msg), None
    return stamp_to_ns(msg.clock if topic == CLOCK else msg.header.stamp), None


def bag_qos(profile: QoSProfile) -> Qos:
    """An rclpy QoS profile as rosbags stores it in the bag (offered_qos_profiles)."""

    def t(duration) -> QosTime:
        ns = duration.nanoseconds
        return QosTime(2147483647, 4294967295) if ns >= INFINITE_NS else QosTime(*divmod(ns, 10**9))

    return Qos(
        QosHistory(int(profile.history)),
        profile.depth,
        QosReliability(int(profile.reliability)),
        QosDurability(int(profile.durability)),
        t(profile.deadline),
        t(profile.lifespan),
        QosLiveliness(int(profile.liveliness)),
        t(profile.liveliness_lease_duration),
        profile.avoid_ros_namespace_conventions,
    )


class RecorderNode(Node):
    """The recorder; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context...)."""

    def __init__(self, **node_kwargs):
        super().__init__("recorder", **node_kwargs)
        p = self.p = declare_params(self, PARAMS, self._set_params)
        self.topics = [self.resolve_topic_name(t) for t in p.topics]
        if not self.topics:
            raise ConfigError("parameter 'topics' is empty: nothing to record")
        # the graph's own topics under the names remapped for this robot (e.g. a robot's
        # /arm/joint_states): resolved name → the graph's name
        self.role = {self.resolve_topic_name(t): t for t in KNOWN_TYPES}
        states, commands, clock, events, images, camera_info = (
            self.resolve_topic_name(t)
            for t in (STATES, COMMANDS, CLOCK, EVENTS, IMAGES, CAMERA_INFO)
        )
        missing = [t for t in (states, events) if t not in self.topics]
        if p.episodes and missing:
            raise ConfigError(
                f"parameter 'episodes' = {p.episodes} needs {missing} among the "
                f"'topics' (episodes are joint-state stamps between episode events)"
            )
        if p.episodes and p.episode_source == "service" and p.episode_length == 0:
            raise ConfigError(
                "parameter 'episode_length' = 0.0 must be positive with "
                "episode_source 'service' (the recorder ends each episode)"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        path = Path(p.bag_path or f"bags/mbrl_{stamp}").expanduser()
        self.exit_status = 0
        self.counts: Counter = Counter()
        # topic → (type, subscription)
        self.subscriptions_by_topic: dict[str, tuple[str, Subscription[Any]]] = {}
        self._refused: set[str] = set()
        self._resubscribe: set[str] = set()
        self._failure: str | None = None
        self.diag = Diagnostics(self, "recorder", self._report)
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.timers_by_param = {
            "flush_period": self.create_timer(p.flush_period, self._flush, clock=wall),
            "discovery_period": self.create_timer(p.discovery_period, self._discover, clock=wall),
        }
        if p.status_period > 0:
            self.create_timer(p.status_period, self._status_line, clock=wall)
        self.episodes: EpisodeRecording | None = None
        if p.episodes:
            self.episodes = EpisodeRecording(
                p.episodes,
                states=states,
                required=[t for t in (states, commands) if t in self.topics],
                streams=[
                    t for t in (states, commands, clock, images, camera_info) if t in self.topics
                ],
                length_ns=seconds_to_ns(p.episode_length) or None,
                preroll=p.queue_depth,
            )
            self._ended_at: float | None = None
            self._reset_future = None
            self._resets, self._reset_at = 0, 0.0  # resets requested; when the last one answered
            if p.episode_source == "service":
                self._reset_client = self.create_client(Trigger, p.reset_service)
            self.create_timer(0.05, self._episode_tick, clock=wall)
        self._discover()
        # Last: a bag_path that cannot be used stops the node here; the folder itself is created
        # with the first message (a signal from here on reaches the runner, which calls close()).
        try:
            self.writer = BagWriter(
                path,
                split_bytes=int(p.split_size * 2**20),
                split_ns=seconds_to_ns(p.split_duration),
            )
        except BagError as exc:
            raise ConfigError(f"parameter 'bag_path': {exc}") from None
        self.get_logger().info(
            f"recording {', '.join(self.topics)} to {path}"
            + (f" ({p.episodes} episodes from {p.episode_source})" if p.episodes else "")
        )

    def _set_params(self, changes) -> None:
        """Runtime parameters: the flush and discovery timers' periods (wall s)."""
        for name, value in changes.items():
            self.timers_by_param[name].timer_period_ns = seconds_to_ns(value)

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
            known = self.role.get(topic)
            types = graph.get(topic) or ([KNOWN_TYPES[known]] if known else [])
            if not types:
                continue
            if len(types) > 1:
                self.diag.warn(
                    "several_types", f"{topic} has several types {types}; recording {types[0]}"
                )
            try:
                if not known_type(types[0]):
                    raise ValueError(f"{types[0]} is not in the ROS 2 Kilted type store")
                cls = message_class(types[0])
            except ValueError as exc:
                self._refused.add(topic)
                self.diag.warn("refused_topic", f"not recording {topic}: {exc}")
                continue
            sub = self.create_subscription(
                cls,
                topic,
                partial(self._on_message, topic),
                self._qos(topic),
                raw=True,
                event_callbacks=SubscriptionEventCallbacks(
                    incompatible_qos=partial(self._on_incompatible, topic)
                ),
            )
            self.subscriptions_by_topic[topic] = (types[0], sub)

    def _qos(self, topic: str) -> QoSProfile:
        """Reliable unless a publisher is best effort; transient local if all publishers are."""
        offered = [i.qos_profile for i in self.get_publishers_info_by_topic(topic)]
        reliability = (
            ReliabilityPolicy.BEST_EFFORT
            if any(q.reliability == ReliabilityPolicy.BEST_EFFORT for q in offered)
            else ReliabilityPolicy.RELIABLE
        )
        durability = (
            DurabilityPolicy.TRANSIENT_LOCAL
            if offered and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
            else DurabilityPolicy.VOLATILE
        )
        return QoSProfile(depth=self.p.queue_depth, reliability=reliability, durability=durability)

    def _on_incompatible(self, topic: str, _event) -> None:
        self.diag.warn(
            "incompatible_qos",
            f"{topic}: a publisher's QoS does not match the "
            "subscription; subscribing again to match it",
        )
        if not self.writer.has_topic(topic):
            self._resubscribe.add(topic)

    # -- writing ---------------------------------------------------------------------------------
    def _on_message(self, topic: str, data: bytes, info) -> None:
        if self.writer.closed:
            return
        self.counts[topic] += 1
        log_ns = info["received_timestamp"] or time.time_ns()
        publish_ns = info["source_timestamp"] or None  # the sender's clock (rosbag2's publish_time)
        if self.episodes is None:
            self._write(topic, log_ns, data, publish_ns)
            return
        started = self.episodes.started
        for msg in self.episodes.offer(
            topic, log_ns, data, *self._stamp(topic, data), publish_ns=publish_ns
        ):
            if not self._write(*msg):
                return
        if self.episodes.started > started:
            self.get_logger().info(f"episode {self.episodes.started}/{self.p.episodes}")
        self._advance_episodes(self.episodes)

    def _stamp(self, topic: str, data: bytes) -> tuple[int | None, str | None]:
        """(stamp in ns, episode-event kind) of a message; (None, None) for a topic without
        stamps or a message that cannot be read (recorded all the same)."""
        role = self.role.get(topic)
        if role not in STAMPED:
            return None, None
        try:
            cls = message_class(self.subscriptions_by_topic[topic][0])
            return message_stamp(role, deserialize_message(data, cls))
        except Exception:  # any parser failure: the message carries no usable stamp
            return None, None

    def _write(self, topic: str, log_ns: int, data: bytes, publish_ns: int | None = None) -> bool:
        try:
            if not self.writer.has_topic(topic):
                offered = [bag_qos(i.qos_profile) for i in self.get_publishers_info_by_topic(topic)]
                self.writer.add_topic(topic, self.subscriptions_by_topic[topic][0], offered)
            self.writer.write(topic, log_ns, data, publish_ns)
        except BagError as exc:
            self._fail(exc)
            return False
        return True

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
        if not self.writer.exists:
            print(
                f"[recorder] no messages recorded: no bag written at {self.writer.path}",
                file=sys.stderr,
                flush=True,
            )
            return
        rec = self.episodes
        note = (
            f" (stopped during episode {rec.started} of {rec.episodes})"
            if rec is not None and not rec.complete
            else ""
        )
        print(
            f"[recorder] bag {self.writer.path} closed: {self.writer.message_count} messages "
            f"in {len(self.writer.files)} file(s){note}",
            file=sys.stderr,
            flush=True,
        )

    # -- episodes --------------------------------------------------------------------------------
    def _advance_episodes(self, rec: EpisodeRecording) -> None:
        """Stop once every episode is complete (or its messages stopped coming); in service mode
        start the next episode when it is due."""
        if rec.complete:
            self._finish(f"{rec.episodes} episodes recorded")
        elif rec.ended:
            if self._ended_at is None:
                self._ended_at = time.monotonic()
            elif time.monotonic() - self._ended_at > self.p.drain_timeout:
                self.get_logger().warning(
                    f"{', '.join(rec.waiting_for)}: nothing stamped after the last episode "
                    f"within {self.p.drain_timeout:g} s; its last messages there may be missing"
                )
                self._finish(f"{rec.episodes} episodes recorded")
        elif self.p.episode_source == "service" and self._reset_future is None:
            self._reset_if_due(rec)

    def _reset_if_due(self, rec: EpisodeRecording) -> None:
        """Call the reset service for the next episode, once the one requested before has
        begun (its event arrived) or did not within drain_timeout."""
        if self._resets > rec.started:
            if time.monotonic() - self._reset_at < self.p.drain_timeout:
                return
            self.get_logger().warning(
                f"no episode began within {self.p.drain_timeout:g} s of "
                f"reset {self._resets}; resetting again"
            )
        if rec.between_episodes or (
            rec.started == 0 and rec.can_start() and self._reset_client.service_is_ready()
        ):
            self._resets = rec.started + 1
            self._reset_future = self._reset_client.call_async(Trigger.Request())

    def _episode_tick(self) -> None:
        rec = self.episodes  # (this timer runs only when recording episodes)
        if self.writer.closed or rec is None:
            return
        future = self._reset_future
        if future is not None and future.done():
            self._reset_future, result = None, future.result()
            self._reset_at = time.monotonic()
            if result is None or not result.success:
                self.get_logger().error(
                    f"reset via {self.p.reset_service} failed: "
                    f"{getattr(result, 'message', 'no response')}"
                )
                self.exit_status = 1
                self.close()
                self.context.try_shutdown()
                return
        self._advance_episodes(rec)

    def _finish(self, why: str) -> None:
        self.get_logger().info(f"{why}; stopping")
        self.close()
        self.context.try_shutdown()

    # -- status ----------------------------------------------------------------------------------
    def _report(self) -> tuple[int, str, dict]:
        w = self.writer
        values = {
            "messages": w.message_count,
            "durable_messages": w.durable_count,
            "files": len(w.files),
            "bag": str(w.path),
            "clamped_log_times": w.clamped_log_times,
        }
        if self.episodes is not None:
            values["episodes_begun"] = self.episodes.started
        values.update({f"messages {t}": n for t, n in sorted(self.counts.items())})
        if self._failure:
            return ERROR, self._failure, values
        return OK, f"{w.message_count} messages, {len(w.files)} file(s)", values

    def _status_line(self) -> None:
        w = self.writer
        per_topic = " ".join(f"{t} {n}" for t, n in sorted(self.counts.items()))
        rec = self.episodes
        episode = (
            ""
            if rec is None
            else (
                f"episode {rec.started}/{rec.episodes} | "
                if rec.started
                else "waiting for the first episode | "
            )
        )
        self.get_logger().info(
            f"{episode}{w.message_count} msgs ({w.durable_count} on disk), "
            f"{w.size_bytes / 2**20:.1f} MiB, {len(w.files)} file(s) | "
            f"{per_topic}"
        )


def main(args=None) -> int:
    return run_node(lambda: RecorderNode(), "recorder", args)


if __name__ == "__main__":
    sys.exit(main())
